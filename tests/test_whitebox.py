"""White-box verification on two tiny, briefly trained AutoencoderKL "generators" (offline, CPU)."""
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

from attribution.transform import ImageDecodeError
from attribution.whitebox import CALIBRATION_NAME, WhiteBoxResult, WhiteBoxVerifier, png_bits_per_pixel

REPO = Path(__file__).resolve().parents[1]
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
    """A 3-level (4x downsampling) VAE trained briefly as an autoencoder on its own texture set."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=1,
                        norm_num_groups=16, sample_size=SIDE, scaling_factor=1.0)
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
    outputs = verifier_a.verify(images, progress=lambda done, total: calls.append((done, total)))
    assert all(isinstance(o, WhiteBoxResult) for o in outputs) and len(outputs) == len(images)
    assert calls[-1] == (len(images), len(images))

    scores = np.array([o.score for o in outputs])
    aucs = _aucs(scores)
    raw = _aucs(-np.log([o.loss for o in outputs]))  # the same, without the complexity calibration
    for name, auc in aucs.items():
        print(f"\nwhite-box AUC own(A) vs {name}, {STEPS} steps: {auc:.3f} (raw loss: {raw[name]:.3f})")
        assert auc >= 0.8, f"AUC own vs {name} = {auc:.3f} (raw loss {raw[name]:.3f})"
        assert auc >= raw[name] - 0.02, f"complexity calibration hurt vs {name}: AUC {auc:.3f}, raw {raw[name]:.3f}"

    n = N_HELD_OUT
    match = np.array([o.match for o in outputs])
    assert match[:n].mean() >= 0.75 and match[n:].mean() <= 0.25, match
    assert all(o.threshold == verifier_a.offset_ and o.seconds > 0 and o.loss > 0 for o in outputs)
    assert all(o.match == (o.score >= o.threshold) for o in outputs)

    pair = [images[0], images[n]]  # the inversion is deterministic: the one-class API agrees with verify
    np.testing.assert_allclose(verifier_a.decision_function(pair), scores[[0, n]] - verifier_a.offset_,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(verifier_a.predict(pair), np.where(match[[0, n]], 1, -1))


def test_complexity_calibration_helps_encoder_only(vae_a, held_out):
    """With ``steps=0`` (encoder mean only) the raw loss is weaker and the calibration matters.

    A gradient-energy normaliser fails here (own vs real AUC ~0.15): it cancels the residual of
    detailed images the decoder cannot represent.
    """
    images = [im for group in held_out.values() for im in group]
    png = _aucs(WhiteBoxVerifier(vae_a, steps=0, batch_size=64, device="cpu").score_samples(images))
    raw = _aucs(WhiteBoxVerifier(vae_a, steps=0, batch_size=64, complexity=None, device="cpu").score_samples(images))
    for name, auc in png.items():
        print(f"\nwhite-box AUC own(A) vs {name}, encoder only: {auc:.3f} (raw loss: {raw[name]:.3f})")
        assert auc >= 0.8 and auc >= raw[name] - 0.02, f"vs {name}: AUC {auc:.3f}, raw {raw[name]:.3f}"


def test_png_complexity_orders_images():
    flat = Image.new("RGB", (SIDE, SIDE), (120, 30, 200))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    assert png_bits_per_pixel(flat) < 2 < 20 < png_bits_per_pixel(noise)


def test_calibration_round_trip(verifier_a, vae_a, vae_b, tmp_path):
    path = verifier_a.save_calibration(tmp_path)
    assert path == tmp_path / CALIBRATION_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [CALIBRATION_NAME]  # no temp file left behind
    record = json.loads(path.read_text())
    assert record["offset_"] == verifier_a.offset_ and record["complexity"] == "png"
    assert record["calibration"]["n_samples"] == 16 and record["calibration"]["source"] == "vae_decoder"

    restored = WhiteBoxVerifier(vae_a, steps=1, lr=1.0, complexity=None, device="cpu").load_calibration(path)
    assert (restored.offset_, restored.steps, restored.lr, restored.complexity) == (
        verifier_a.offset_, STEPS, verifier_a.lr, "png")
    assert restored.calibration_ == verifier_a.calibration_

    named = verifier_a.save_calibration(tmp_path / "sub" / "a.json")
    assert named.is_file() and json.loads(named.read_text()) == record
    with pytest.warns(UserWarning, match="another VAE"):
        WhiteBoxVerifier(vae_b, device="cpu").load_calibration(named)


def test_calibrate_from_pipeline(verifier_a, vae_a):
    seen = {}

    def pipeline(*, generator, output_type, **kwargs):
        seen.update(kwargs, output_type=output_type)
        return SimpleNamespace(images=verifier_a.sample(2, generator=generator))

    verifier = WhiteBoxVerifier(vae_a, steps=2, batch_size=8, device="cpu")
    verifier.calibrate(pipeline=pipeline, pipeline_kwargs={"prompt": ""}, n_samples=3, accept_rate=0.5, generator=3)
    assert seen == {"prompt": "", "output_type": "pil"}
    assert verifier.calibration_["source"] == "pipeline" and verifier.calibration_["n_samples"] == 3
    assert verifier.offset_ == pytest.approx(verifier.calibration_["median"])


def _same_weights(a: AutoencoderKL, b: AutoencoderKL) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def test_from_pretrained_pipeline_folder(verifier_a, vae_a, tmp_path):
    vae_a.save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1", "vae": ["diffusers", "AutoencoderKL"]}))
    verifier_a.save_calibration(tmp_path)  # found automatically next to model_index.json

    loaded = WhiteBoxVerifier.from_pretrained(tmp_path, device="cpu")
    assert _same_weights(loaded.vae, vae_a)
    assert loaded.model_id == f"{tmp_path}:vae"
    assert loaded.offset_ == verifier_a.offset_ and loaded.steps == STEPS


def test_from_pretrained_bare_vae_folder(verifier_a, vae_a, tmp_path):
    vae_a.save_pretrained(tmp_path / "bare")
    calibration = verifier_a.save_calibration(tmp_path / "calib.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same weights: no fingerprint warning
        loaded = WhiteBoxVerifier.from_pretrained(tmp_path / "bare", calibration=calibration, device="cpu")
    assert _same_weights(loaded.vae, vae_a) and loaded.model_id == str(tmp_path / "bare")
    assert loaded.offset_ == verifier_a.offset_
    assert not hasattr(WhiteBoxVerifier.from_pretrained(tmp_path / "bare", device="cpu"), "offset_")


def test_from_pretrained_refuses_pickle_weights(vae_a, tmp_path):
    vae_a.save_pretrained(tmp_path, safe_serialization=False)
    assert not list(tmp_path.glob("*.safetensors"))
    with pytest.raises(OSError):
        WhiteBoxVerifier.from_pretrained(tmp_path, device="cpu")


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # raised inside diffusers
def test_from_pretrained_hub_id_offline():
    with pytest.raises(OSError):
        WhiteBoxVerifier.from_pretrained("attribution-tests/no-such-repo", device="cpu")


def test_uncalibrated_raises(vae_a):
    verifier = WhiteBoxVerifier(vae_a, steps=1, device="cpu")
    image = Image.new("RGB", (SIDE, SIDE))
    for call in (verifier.predict, verifier.decision_function, verifier.verify):
        with pytest.raises(RuntimeError, match="not calibrated"):
            call([image])
    with pytest.raises(RuntimeError, match="not calibrated"):
        verifier.save_calibration("unused")
    assert verifier.score_samples(image).shape == (1,)  # scoring itself needs no threshold


def test_corrupt_image_raises(verifier_a, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    with pytest.raises(ImageDecodeError):
        verifier_a.verify([bad])
    with pytest.raises(ImageDecodeError):
        verifier_a.score_samples(str(bad))


def test_crop_policy(vae_a):
    image = Image.fromarray(np.zeros((37, 45, 3), np.uint8))  # H=37, W=45
    assert WhiteBoxVerifier(vae_a, device="cpu")._prepare(image)[0].shape == (3, 36, 44)  # multiples of 4
    assert WhiteBoxVerifier(vae_a, size=16, device="cpu")._prepare(image)[0].shape == (3, 16, 16)
    assert WhiteBoxVerifier(vae_a, size=64, device="cpu")._prepare(image)[0].shape == (3, 36, 44)
    with pytest.raises(ValueError, match="too small"):
        WhiteBoxVerifier(vae_a, device="cpu")._prepare(Image.new("RGB", (3, 40)))


def test_import_does_not_import_diffusers():
    code = "import sys, attribution.whitebox; assert 'diffusers' not in sys.modules, 'diffusers imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_cli_calibrate_and_verify_json_contract(vae_a, tmp_path):
    """``calibrate`` stores the threshold with the model; ``verify --whitebox --json`` keeps the verify contract."""
    import json
    import subprocess
    import sys

    folder = tmp_path / "pipe"
    vae_a.save_pretrained(folder / "vae", safe_serialization=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    verifier = WhiteBoxVerifier(vae_a, steps=2)
    own = [tmp_path / f"own{i}.png" for i in range(4)]
    for path, image in zip(own, verifier.sample(4, generator=0)):
        image.save(path)
    (tmp_path / "bad.png").write_text("not an image")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cwd = Path(__file__).resolve().parent.parent

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "attribution", *args], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=300)

    calib = cli("calibrate", str(folder), "--steps", "2", "--quiet", "--images", *map(str, own[:3]))
    assert calib.returncode == 0, calib.stderr
    assert (folder / CALIBRATION_NAME).is_file() and json.loads(calib.stdout)["n_samples"] == 3
    run = cli("verify", "--whitebox", str(folder), "--steps", "2", "--json", "--quiet", str(own[3]),
              str(tmp_path / "bad.png"))
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 1 and len(lines) == 2, run.stderr
    assert {"file", "model", "score", "match"} <= set(lines[0]) and lines[0]["method"] == "whitebox"
    assert lines[0]["match"] == (lines[0]["score"] >= 0)
    assert set(lines[1]) == {"file", "model", "error", "error_code"} and "not a recognised image" in lines[1]["error"]
    assert lines[1]["error_code"] == "not_an_image"  # named on the command line: fails the run
