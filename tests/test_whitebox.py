"""White-box verification on two tiny, briefly trained AutoencoderKL "generators" (offline, CPU).

Shapes, the not-fitted error, exact save/load and the accept rate on held-out own images are the shared
contract (``test_contract.py``); here: the signal, the complexity calibration, loading pipelines and
calibrations (folders, earlier JSON files), batching, and the CLI.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from sklearn.metrics import roc_auc_score

from attribution.heads.base import NotFittedError
from attribution.transform import ImageDecodeError
from attribution.verification import WhiteBoxVerifier, load_verifier
from attribution.verification.whitebox import CALIBRATION_DIR, LEGACY_CALIBRATION, png_bits_per_pixel
from conftest import REPO, tiny_vae

SIDE = 32
STEPS = 30  # Adam steps per inversion in these tests (default 50)
N_HELD_OUT = 16


def _textures(n: int, seed: int) -> torch.Tensor:
    """Smooth random colour textures: a few sinusoids plus discs, squashed to [-1, 1]; (n, 3, SIDE, SIDE)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    out = np.zeros((n, 3, SIDE, SIDE), np.float32)
    for i in range(n):
        img = np.zeros((3, SIDE, SIDE))
        for _ in range(4):
            fx, fy = rng.uniform(-6, 6, 2)
            img += rng.uniform(-0.5, 0.5, (3, 1, 1)) * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
        for _ in range(3):
            cx, cy = rng.uniform(0, 1, 2)
            img += rng.uniform(-0.8, 0.8, (3, 1, 1)) * (((xx - cx) ** 2 + (yy - cy) ** 2) < rng.uniform(0.05, 0.3) ** 2)
        out[i] = np.tanh(img)
    return torch.from_numpy(out)


def _tiny_vae(seed: int, train_steps: int = 40) -> AutoencoderKL:
    """A tiny VAE trained briefly as an autoencoder on its own texture set."""
    vae = tiny_vae(seed, sample_size=SIDE).train()
    data = _textures(64, seed=100 + seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(train_steps):
        x = data[torch.randint(0, len(data), (12,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        loss = (vae.decode(posterior.sample(generator=generator)).sample - x).pow(2).mean()
        loss = loss + 1e-3 * posterior.kl().mean() / x[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return vae.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae_a() -> AutoencoderKL:
    return _tiny_vae(1)


@pytest.fixture(scope="module")
def vae_b() -> AutoencoderKL:
    return _tiny_vae(2)


@pytest.fixture(scope="module")
def verifier_a(vae_a) -> WhiteBoxVerifier:
    return WhiteBoxVerifier(vae_a, steps=STEPS, batch_size=32, device="cpu").calibrate(n_samples=16, generator=0)


def _to_images(x: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(a) for a in ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()]


def held_out_image() -> Image.Image:
    return _to_images(_textures(1, seed=5))[0]


@pytest.fixture(scope="module")
def held_out(verifier_a, vae_b) -> dict[str, list[Image.Image]]:
    """Images model A must accept ("own", not used in calibration) and reject ("model B", "real")."""
    return {"own": verifier_a.sample(N_HELD_OUT, generator=1),  # calibration used generator=0
            "model B": WhiteBoxVerifier(vae_b, device="cpu").sample(N_HELD_OUT, generator=1),
            "real": _to_images(_textures(N_HELD_OUT, seed=999))}  # the kind of image both were trained on


def _aucs(scores: np.ndarray) -> dict[str, float]:
    """AUC of own (first block) against each negative block, for scores in ``held_out`` order."""
    n = N_HELD_OUT
    y = [1] * n + [0] * n
    return {name: roc_auc_score(y, np.r_[scores[:n], scores[k * n:(k + 1) * n]])
            for k, name in ((1, "model B"), (2, "real"))}


def test_own_samples_score_above_other_model_and_real(verifier_a, held_out):
    images = [im for group in held_out.values() for im in group]
    calls = []
    rows = verifier_a.verify(images, progress=lambda done, total: calls.append((done, total)))
    assert len(rows) == len(images) and calls[-1] == (len(images), len(images))
    X = verifier_a.features(images).features  # [loss, complexity]: the inversion is deterministic
    np.testing.assert_allclose([r.score for r in rows], verifier_a.decision_function(X), atol=1e-6)

    scores = verifier_a.score_samples(X)
    aucs = _aucs(scores)
    raw = _aucs(-np.log(X[:, 0]))  # the same, without the complexity calibration
    for name, auc in aucs.items():
        print(f"\nwhite-box AUC own(A) vs {name}, {STEPS} steps: {auc:.3f} (raw loss: {raw[name]:.3f})")
        assert auc >= 0.8, f"AUC own vs {name} = {auc:.3f} (raw loss {raw[name]:.3f})"
        assert auc >= raw[name] - 0.02, f"complexity calibration hurt vs {name}: AUC {auc:.3f}, raw {raw[name]:.3f}"

    n = N_HELD_OUT
    match = np.array([r.match for r in rows])
    assert match[:n].mean() >= 0.75 and match[n:].mean() <= 0.25, match
    assert all(r.match == (r.score >= 0) and r.threshold == 0.0 and r.method == "whitebox" for r in rows)
    assert all(r.note.startswith(f"reconstruction loss {x[0]:.6f} after {STEPS} steps") for r, x in zip(rows, X))
    np.testing.assert_array_equal(verifier_a.predict(X), np.where(match, 1, -1))


def test_complexity_calibration_helps_encoder_only(vae_a, held_out):
    """With ``steps=0`` (encoder mean only) the raw loss is weaker and the calibration matters.

    A gradient-energy normaliser fails here (own vs real AUC ~0.15): it cancels the residual of
    detailed images the decoder cannot represent.
    """
    images = [im for group in held_out.values() for im in group]

    def scores(**kw):
        verifier = WhiteBoxVerifier(vae_a, steps=0, batch_size=64, device="cpu", **kw)
        return verifier.score_samples(verifier.features(images).features)

    png, raw = _aucs(scores()), _aucs(scores(complexity=None))
    for name, auc in png.items():
        print(f"\nwhite-box AUC own(A) vs {name}, encoder only: {auc:.3f} (raw loss: {raw[name]:.3f})")
        assert auc >= 0.8 and auc >= raw[name] - 0.02, f"vs {name}: AUC {auc:.3f}, raw {raw[name]:.3f}"


def test_batches_invert_like_single_images(vae_a, held_out):
    """verify honours batch_size (crops of equal size invert together) and gives the same rows as one at a time."""
    images = [*held_out["own"][:3], Image.new("RGB", (SIDE + 8, SIDE)), *held_out["real"][:2]]
    single = WhiteBoxVerifier(vae_a, steps=3, batch_size=1, device="cpu").fit(np.array([[0.01, 1.0]] * 2))
    batched = WhiteBoxVerifier(vae_a, steps=3, batch_size=4, device="cpu").fit(np.array([[0.01, 1.0]] * 2))
    seen = []
    encode = batched.encode
    batched.encode = lambda prepared: seen.append(len(prepared)) or encode(prepared)
    rows = batched.verify(images)
    assert seen == [4, 2]
    np.testing.assert_allclose([r.score for r in rows], [r.score for r in single.verify(images)], atol=1e-5)


def test_png_complexity_orders_images():
    flat = Image.new("RGB", (SIDE, SIDE), (120, 30, 200))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    assert png_bits_per_pixel(flat) < 2 < 20 < png_bits_per_pixel(noise)


def _same_weights(a: AutoencoderKL, b: AutoencoderKL) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def _pipeline(vae: AutoencoderKL, folder: Path) -> Path:
    vae.save_pretrained(folder / "vae")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "_diffusers_version": "0.42.1",
                                                         "vae": ["diffusers", "AutoencoderKL"]}))
    return folder


def test_calibration_folder_and_earlier_json(verifier_a, vae_a, vae_b, tmp_path):
    folder = verifier_a.save_pretrained(tmp_path / CALIBRATION_DIR)
    config = json.loads((folder / "config.json").read_text())
    head = config["head"]
    assert head["type"] == "WhiteBoxVerifier" and head["state"]["offset_"] == verifier_a.offset_
    assert head["params"]["complexity"] == "png" and head["state"]["calibration_"]["source"] == "vae_decoder"
    assert head["state"]["vae_fingerprint_"] == verifier_a.fingerprint()

    restored = WhiteBoxVerifier(vae_a, steps=1, lr=1.0, complexity=None, device="cpu").with_calibration(folder)
    assert (restored.offset_, restored.steps, restored.lr, restored.complexity) == (
        verifier_a.offset_, STEPS, verifier_a.lr, "png")  # a calibration fixes the settings it holds for
    assert restored.calibration_ == verifier_a.calibration_
    np.testing.assert_array_equal(restored.calibration_scores_, verifier_a.calibration_scores_)
    with pytest.warns(UserWarning, match="another VAE"):
        WhiteBoxVerifier(vae_b, device="cpu").with_calibration(folder)

    # the single JSON file written before calibrations were folders
    legacy = tmp_path / LEGACY_CALIBRATION
    legacy.write_text(json.dumps({
        "format_version": 1, "model_id": "old/pipe:vae", "fingerprint": verifier_a.fingerprint(),
        "offset_": verifier_a.offset_, "steps": STEPS, "lr": 0.05, "size": None, "complexity": "png",
        "calibration": verifier_a.calibration_}, indent=2, sort_keys=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same weights: no fingerprint warning
        old = WhiteBoxVerifier(vae_a, steps=1, device="cpu").with_calibration(legacy)
    assert (old.offset_, old.steps, old.accept_rate) == (verifier_a.offset_, STEPS, 0.95)
    assert not hasattr(old, "calibration_scores_")
    image = held_out_image()
    assert old.verify([image])[0].score == verifier_a.verify([image])[0].score
    pipeline = _pipeline(vae_a, tmp_path / "old-pipe")  # where the earlier CLI wrote it: found there
    (pipeline / LEGACY_CALIBRATION).write_bytes(legacy.read_bytes())
    assert WhiteBoxVerifier.from_pretrained(pipeline, device="cpu").offset_ == verifier_a.offset_
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(Exception, match="not a white-box calibration"):
        old.with_calibration(tmp_path / "bad.json")


def test_calibrate_from_pipeline(verifier_a, vae_a):
    seen = {}

    def pipeline(*, generator, output_type, **kwargs):
        seen.update(kwargs, output_type=output_type)
        return SimpleNamespace(images=verifier_a.sample(2, generator=generator))

    verifier = WhiteBoxVerifier(vae_a, steps=2, batch_size=8, accept_rate=0.5, device="cpu")
    verifier.calibrate(pipeline=pipeline, pipeline_kwargs={"prompt": ""}, n_samples=3, generator=3)
    assert seen == {"prompt": "", "output_type": "pil"}
    assert verifier.calibration_["source"] == "pipeline" and verifier.calibration_["n_samples"] == 3
    assert verifier.offset_ == pytest.approx(verifier.calibration_["median"])


def test_from_pretrained_pipeline_folder(verifier_a, vae_a, tmp_path):
    folder = _pipeline(vae_a, tmp_path / "pipe")
    uncalibrated = WhiteBoxVerifier.from_pretrained(folder, device="cpu")
    assert _same_weights(uncalibrated.vae, vae_a) and uncalibrated.model_id == f"{folder}:vae"
    with pytest.raises(NotFittedError):
        uncalibrated.verify([held_out_image()])
    calibrated = uncalibrated.with_calibration(verifier_a.save_pretrained(tmp_path / "calibration"))
    calibrated.save_pretrained(folder / CALIBRATION_DIR)  # found automatically inside the pipeline folder

    for loaded in (WhiteBoxVerifier.from_pretrained(folder, device="cpu"), load_verifier(f"whitebox:{folder}"),
                   load_verifier(f"whitebox:{folder / CALIBRATION_DIR}"), load_verifier(str(folder / CALIBRATION_DIR))):
        assert loaded.offset_ == verifier_a.offset_ and loaded.steps == STEPS and _same_weights(loaded.vae, vae_a)
        assert loaded.model_id == f"{folder}:vae"  # a saved calibration records where its VAE came from


def test_from_pretrained_bare_vae_folder(verifier_a, vae_a, tmp_path):
    vae_a.save_pretrained(tmp_path / "bare")
    calibration = verifier_a.save_pretrained(tmp_path / "calib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same weights: no fingerprint warning
        loaded = WhiteBoxVerifier.from_pretrained(tmp_path / "bare", calibration=calibration, device="cpu")
    assert _same_weights(loaded.vae, vae_a) and loaded.model_id == str(tmp_path / "bare")
    assert loaded.offset_ == verifier_a.offset_
    assert not hasattr(WhiteBoxVerifier.from_pretrained(tmp_path / "bare", device="cpu"), "offset_")
    zipped = tmp_path / "calib.zip"
    zipped.write_bytes(verifier_a.to_bytes())
    assert WhiteBoxVerifier.from_pretrained(tmp_path / "bare", calibration=zipped).offset_ == verifier_a.offset_


def test_from_pretrained_refuses_pickle_weights(vae_a, tmp_path):
    vae_a.save_pretrained(tmp_path, safe_serialization=False)
    assert not list(tmp_path.glob("*.safetensors"))
    with pytest.raises(OSError):
        WhiteBoxVerifier.from_pretrained(tmp_path, device="cpu")


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # raised inside diffusers
def test_from_pretrained_hub_id_offline():
    with pytest.raises(OSError):
        WhiteBoxVerifier.from_pretrained("attribution-tests/no-such-repo", device="cpu")


def test_unreadable_and_too_small_inputs(verifier_a, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    rows = verifier_a.verify([bad, Image.new("RGB", (3, 40)), held_out_image()])
    assert [r.error_code for r in rows] == ["truncated", "too_small", None] and rows[2].score is not None
    with pytest.raises(ImageDecodeError):
        verifier_a.calibrate([bad])


def test_crop_policy(vae_a):
    image = Image.fromarray(np.zeros((37, 45, 3), np.uint8))  # H=37, W=45
    assert WhiteBoxVerifier(vae_a, device="cpu").prepare(image)[0].shape == (3, 36, 44)  # multiples of 4
    assert WhiteBoxVerifier(vae_a, size=16, device="cpu").prepare(image)[0].shape == (3, 16, 16)
    assert WhiteBoxVerifier(vae_a, size=64, device="cpu").prepare(image)[0].shape == (3, 36, 44)
    with pytest.raises(ImageDecodeError, match="too small"):
        WhiteBoxVerifier(vae_a, device="cpu").prepare(Image.new("RGB", (3, 40)))


def test_import_does_not_import_diffusers():
    code = ("import sys, attribution.verification.whitebox, attribution.verification as v; v.load_verifier; "
            "assert 'diffusers' not in sys.modules, 'diffusers imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_cli_calibrate_and_verify_json_contract(vae_a, tmp_path):
    """``calibrate`` stores the threshold with the model; ``verify --whitebox --json`` keeps the verify contract."""
    folder = _pipeline(vae_a, tmp_path / "pipe")
    verifier = WhiteBoxVerifier(vae_a, steps=2)
    own = [tmp_path / f"own{i}.png" for i in range(4)]
    for path, image in zip(own, verifier.sample(4, generator=0)):
        image.save(path)
    (tmp_path / "bad.png").write_text("not an image")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "attribution", *args], capture_output=True, text=True,
                              cwd=REPO, env=env, timeout=300)

    calib = cli("calibrate", str(folder), "--steps", "2", "--quiet", "--images", *map(str, own[:3]))
    assert calib.returncode == 0, calib.stderr
    assert (folder / CALIBRATION_DIR / "config.json").is_file() and json.loads(calib.stdout)["n_samples"] == 3
    run = cli("verify", "--whitebox", str(folder), "--json", "--quiet", str(own[3]), str(tmp_path / "bad.png"))
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 1 and len(lines) == 2, run.stderr
    assert {"file", "model", "score", "match"} <= set(lines[0]) and lines[0]["method"] == "whitebox"
    assert lines[0]["match"] == (lines[0]["score"] >= 0) and "after 2 steps" in lines[0]["note"]
    assert set(lines[1]) == {"file", "model", "error", "error_code"} and "not a recognised image" in lines[1]["error"]
    assert lines[1]["error_code"] == "not_an_image"  # named on the command line: fails the run
    again = cli("verify", "--verifier", f"whitebox:{folder}", "--json", "--quiet", str(own[3]))
    assert again.returncode == 0 and json.loads(again.stdout) == lines[0] | {"note": json.loads(again.stdout)["note"]}
