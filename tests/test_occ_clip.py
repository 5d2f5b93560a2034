"""OCCCLIPVerifier on a tiny random open_clip model saved to disk, with synthetic "generators".

A random CLIP says nothing about real attribution quality; these tests check the mechanics: the
prompt forward is open_clip's ``encode_text``, only the context vectors learn, the adversarial hard
negatives act, ``offset_`` holds its false-match rate, folders saved before the verification package
still load, and two synthetic generator fingerprints are told apart from a few samples. Shapes,
not-fitted errors and exact save/load are the shared contract (``test_contract.py``).
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import save_file
from sklearn.metrics import roc_auc_score

from attribution.backbones.clip import CLIPBackbone
from attribution.heads.base import NotFittedError
from attribution.verification import OCCCLIPVerifier, load_verifier
from attribution.verification.occ_clip import CLASS_NAMES
from conftest import TINY_CLIP_CFG as TINY_CFG, make_image, tiny_clip

SIZE = 32
AMPLITUDE = 0.04  # strength of the generator fingerprints on top of random smooth content


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The backbone id of a tiny random CLIP (``local-dir:``)."""
    return tiny_clip(tmp_path_factory.mktemp("occ-clip") / "tiny")


def _verifier(ckpt, **kw):
    return OCCCLIPVerifier.from_clip(ckpt, device="cpu", **kw)


def _images(kind: str, n: int, seed: int) -> torch.Tensor:
    """``n`` CLIP-normalised images: random smooth content plus the fingerprint of generator ``kind``.

    ``target``: a one-pixel checkerboard, mostly green; ``other``: two-pixel vertical stripes,
    mostly red; ``real``: no fingerprint. Content and sensor noise are shared by all three.
    """
    rng = np.random.default_rng(seed)
    low = (rng.random((n, 4, 4, 3)) * 255).astype(np.uint8)
    x = np.stack([np.asarray(Image.fromarray(b).resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float32)
                  for b in low]) / 255.0
    x += rng.normal(0.0, 0.02, x.shape)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if kind == "target":
        x += AMPLITUDE * ((xx + yy) % 2 * 2 - 1)[None, :, :, None] * np.array([0.3, 1.0, 0.3])
    elif kind == "other":
        x += AMPLITUDE * ((xx // 2) % 2 * 2 - 1)[None, :, :, None] * np.array([1.0, 0.3, 0.3])
    x = torch.from_numpy(np.clip(x, 0.0, 1.0)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def data(ckpt):
    """Features of 8 target images, a bank of 400 negatives, and held-out sets of each kind."""
    encoder = _verifier(ckpt)
    enc = lambda kind, n, seed: encoder.encode_images(_images(kind, n, seed))  # noqa: E731
    negatives = np.concatenate([enc("real", 200, 2), enc("other", 200, 3)])
    return {"target": enc("target", 8, 1), "negatives": negatives,
            "held_target": enc("target", 100, 4), "held_other": enc("other", 150, 5), "held_real": enc("real", 150, 6)}


@pytest.fixture(scope="module")
def fitted(ckpt, data):
    return _verifier(ckpt).fit(data["target"], data["negatives"])


def _auc(verifier, positives, negatives):
    scores = np.concatenate([verifier.score_samples(positives), verifier.score_samples(negatives)])
    return roc_auc_score(np.r_[np.ones(len(positives)), np.zeros(len(negatives))], scores)


def test_prompt_forward_is_encode_text(ckpt):
    verifier = _verifier(ckpt)
    ctx = verifier._placeholder_ctx()  # the prompts' own "X" embeddings: must give plain encode_text
    with torch.no_grad():
        ours = verifier._encode_prompts(ctx)
        theirs = verifier.model.encode_text(verifier._tokens)
        torch.testing.assert_close(ours, theirs)
        moved = verifier._encode_prompts(ctx + 0.1 * torch.randn_like(ctx))  # the context does steer it
    assert not torch.allclose(moved, theirs, atol=1e-3)
    assert ours.shape == (len(CLASS_NAMES), TINY_CFG["embed_dim"])


def test_encode_images_is_normalised_encode_image(ckpt):
    verifier = _verifier(ckpt)
    x = _images("real", 6, 0)
    with torch.no_grad():
        expected = F.normalize(verifier.model.encode_image(x), dim=1).numpy()
    np.testing.assert_allclose(verifier.encode_images(x, batch_size=4), expected, rtol=1e-5, atol=1e-6)
    backbone = CLIPBackbone(ckpt, layers=["embed"], device="cpu")  # the features it caches
    np.testing.assert_allclose(backbone.encode(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    views = verifier.encode_images(x, n_views=2)
    np.testing.assert_allclose(views[0], F.normalize(torch.from_numpy(expected[:2].mean(0)), dim=0).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_separates_generators_from_few_samples(ckpt, data, fitted):
    untrained = _verifier(ckpt, steps=0).fit(data["target"], data["negatives"])
    auc_other = _auc(fitted, data["held_target"], data["held_other"])
    auc_real = _auc(fitted, data["held_target"], data["held_real"])
    print(f"\nOCC-CLIP tiny random CLIP, 8 targets: AUC target vs other generator {auc_other:.3f}, "
          f"vs real {auc_real:.3f}; untrained prompts {_auc(untrained, data['held_target'], data['held_other']):.3f}")
    assert auc_other > 0.90  # measured 0.98
    assert auc_real > 0.75  # measured 0.88
    assert fitted.loss_curve_[-1] < fitted.loss_curve_[0]


def test_only_the_context_vectors_learn(ckpt, data):
    verifier = _verifier(ckpt)
    before = {k: v.clone() for k, v in verifier.model.state_dict().items()}
    verifier.fit(data["target"], data["negatives"])
    after = verifier.model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
    assert not any(p.requires_grad for p in verifier.model.parameters())
    init = _verifier(ckpt, steps=0).fit(data["target"], data["negatives"]).ctx_
    assert verifier.ctx_.shape == (2, 8, TINY_CFG["text_cfg"]["width"])
    assert (verifier.ctx_ - init).abs().max() > 1e-2


def test_adversarial_hard_negatives_are_used(ckpt, data, fitted):
    without = _verifier(ckpt, adv_weight=0.0).fit(data["target"], data["negatives"])
    zero_eps = _verifier(ckpt, adv_eps=0.0).fit(data["target"], data["negatives"])
    assert torch.equal(without.ctx_, zero_eps.ctx_)  # both switches turn the same thing off
    assert (fitted.ctx_ - without.ctx_).abs().max() > 1e-3
    # the hard negatives are the targets moved adv_eps towards non-target
    target = torch.from_numpy(data["target"])
    hard = fitted._hard_negatives(target, fitted._text_features())
    np.testing.assert_allclose((hard - target).norm(dim=1).numpy(), fitted.adv_eps, rtol=0.05)
    assert (fitted.score_samples(hard.numpy()) < fitted.score_samples(data["target"])).all()


def test_offset_holds_the_false_match_rate(ckpt, data, fitted):
    verifier = _verifier(ckpt, false_match_rate=0.1, calibration_fraction=0.5).fit(data["target"], data["negatives"])
    held_negatives = np.concatenate([data["held_other"], data["held_real"]])
    rate = float((verifier.predict(held_negatives) == 1).mean())
    print(f"\nfalse-match rate on held-out negatives at target 0.10: {rate:.3f}; "
          f"true-match rate {float((verifier.predict(data['held_target']) == 1).mean()):.3f}")
    assert 0.04 <= rate <= 0.18
    strict = float((fitted.predict(held_negatives) == 1).mean())  # default false_match_rate=0.01
    assert strict <= 0.05 and verifier.offset_ < fitted.offset_


def test_sklearn_one_class_convention(data, fitted):
    X = np.concatenate([data["held_target"][:10], data["held_other"][:10]])
    scores = fitted.score_samples(X)
    np.testing.assert_allclose(fitted.decision_function(X), scores - fitted.offset_)
    np.testing.assert_array_equal(fitted.predict(X), np.where(scores >= fitted.offset_, 1, -1))
    proba = fitted.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (np.argsort(proba[:, 1]) == np.argsort(scores)).all()
    assert fitted.n_features_in_ == TINY_CFG["embed_dim"]
    assert len(fitted.negative_scores_) == 100  # calibration_fraction 0.25 of the 400 negatives are kept


def test_verify_images_and_saved_folder(ckpt, data, fitted, tmp_path):
    """verify() encodes images as encode_images does; the saved folder loads by the factory's reference."""
    good = [make_image(tmp_path / f"{i}.png", seed=i, size=48) for i in range(3)]
    (tmp_path / "bad.png").write_text("not an image")
    rows = fitted.verify([*good, tmp_path / "bad.png"])
    features = fitted.features(good).features
    np.testing.assert_allclose([r.score for r in rows[:3]], fitted.decision_function(features), atol=1e-5)
    assert all(r.method == "occ-clip" and r.model == "target" and r.false_match_rate == 0.01 for r in rows[:3])
    assert all(0 < r.false_match_rate_at_score <= 1 for r in rows[:3])  # from the kept calibration negatives
    assert rows[3].error_code == "not_an_image" and rows[3].score is None
    folder = fitted.save_pretrained(tmp_path / "occ-clip-target", {"name": "occ-clip-target"})
    config = json.loads((folder / "config.json").read_text())
    assert config["head"]["type"] == "OCCCLIPVerifier" and config["backbone"]["id"] == ckpt
    card = (folder / "README.md").read_text()
    assert card.startswith("---") and "occ-clip-target" in card and "OCC-CLIP" in card
    loaded = load_verifier(f"occ-clip:{folder}", device="cpu")
    assert [r.to_json() for r in loaded.verify(good)] == [r.to_json() for r in rows[:3]]


def test_folders_saved_before_the_verification_package_still_load(ckpt, data, fitted, tmp_path):
    """The earlier layout: a flat config.json (``head`` a type name, ``head_params``, ``backbone`` an id) and
    ``ctx`` / ``offset`` arrays; it was written under format_version 1 and, later, 2."""
    X = np.concatenate([data["held_target"], data["held_other"]])
    for version in (1, 2):
        folder = tmp_path / f"old-{version}"
        folder.mkdir()
        params = {k: v for k, v in fitted.get_params().items() if k not in ("target", "batch_size")}
        (folder / "config.json").write_text(json.dumps({
            "head": "OCCCLIPVerifier", "head_params": params, "backbone": ckpt,
            "class_names": list(CLASS_NAMES), "format_version": version}))
        save_file({"ctx": fitted.ctx_.numpy(), "offset": np.array([fitted.offset_])}, str(folder / "model.safetensors"))
        old = OCCCLIPVerifier.from_pretrained(str(folder), device="cpu")
        np.testing.assert_array_equal(old.score_samples(X), fitted.score_samples(X))
        assert old.offset_ == fitted.offset_ and old.calibration_negatives() is None
        probe = make_image(tmp_path / "probe.png", seed=9, size=40)
        assert old.verify([probe])[0].false_match_rate_at_score is None  # no negatives were kept then


def test_errors(ckpt, data, tmp_path):
    verifier = _verifier(ckpt)
    with pytest.raises(NotFittedError):
        verifier.score_samples(data["target"])
    with pytest.raises(ValueError, match="embedding size 32"):
        verifier.fit(data["target"][:, :16], data["negatives"][:, :16])
    with pytest.raises(ValueError, match="cannot be split"):
        verifier.fit(data["target"], data["negatives"][:1])
    with pytest.raises(ValueError, match="no room"):
        _verifier(ckpt, n_ctx=12).fit(data["target"], data["negatives"])
    fitted = _verifier(ckpt, steps=2).fit(data["target"], data["negatives"])
    with pytest.raises(ValueError, match=r"\(n_samples, 32\)"):
        fitted.score_samples(data["target"][:, :16])
    with pytest.raises(ValueError, match="needs"):
        _verifier(ckpt, n_ctx=4)._set_ctx(fitted.ctx_)
    with pytest.raises(ValueError, match="pretrained tag or checkpoint"):
        OCCCLIPVerifier.from_clip("ViT-B-32")
    with pytest.raises(RuntimeError, match="cannot load CLIP backbone"):
        OCCCLIPVerifier.from_clip(f"ViT-B-32:{tmp_path / 'missing.pt'}")
