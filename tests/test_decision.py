"""The two-question decision of the shipped head, its forensic network and its JSON."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from attribution import Attributor
from attribution.backbones import create_backbone
from attribution.backbones.residual_cnn import load_network
from attribution.constants import REAL, UNCERTAIN, UNKNOWN
from attribution.heads import OpenSetHead
from attribution.heads.decision import (REASON_DISPUTED, REASON_EXACT, REASON_FAR, REASON_FEW_COLOURS,
                                        REASON_GRAYSCALE, REASON_KNOWN, REASON_MATCH, REASON_REAL, REASON_SMALL,
                                        REASON_UNCERTAIN, REASON_UNKNOWN)
from attribution.recipes.residual_cnn import save_network
from conftest import REPO

NETWORK = "residual-cnn"


@pytest.fixture(scope="module")
def attributor():
    return Attributor.from_pretrained()


def test_network_forward_is_deterministic_and_round_trips_bit_exactly(tmp_path):
    model, config = load_network(NETWORK)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 96, 96))).float()
    with torch.inference_mode():
        first, second = model(x), model(x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    save_network(tmp_path / "copy", model, config)
    again, again_config = load_network(str(tmp_path / "copy"))
    assert again_config["recipe"] == config["recipe"]
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.inference_mode():
        assert all(torch.equal(a, b) for a, b in zip(first, again(x)))


def _upsampled(seed: int, mode: Image.Resampling) -> Image.Image:
    """Same content distribution for both "generators": random smooth 128 px content, upscaled 2x by ``mode``."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((128, 128), Image.Resampling.BICUBIC)
    noisy = np.clip(np.asarray(low, np.int16) + rng.integers(-20, 21, (128, 128, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy).resize((256, 256), mode)


def _held_out_accuracy(backbone_id: str, images: list, labels: np.ndarray) -> float:
    backbone = create_backbone(backbone_id)
    backbone.set_preprocess(n_crops=1)
    X = np.concatenate([backbone.encode(backbone.transform(im)).numpy() for im in images])
    train = np.arange(len(labels)) % 2 == 0
    head = OpenSetHead(n_components=16).fit(X[train], labels[train])
    return float((np.asarray(head.classes_)[head.predict_proba(X[~train]).argmax(1)] == labels[~train]).mean())


def test_an_upsampling_trace_alone_is_told_apart_by_the_residual_features(one_torch_thread):
    images = [_upsampled(i, Image.Resampling.BICUBIC) for i in range(24)] + \
             [_upsampled(100 + i, Image.Resampling.BILINEAR) for i in range(24)]
    labels = np.repeat(["bicubic", "bilinear"], 24)
    residual = _held_out_accuracy(f"residual_spectra+residual_cnn:{NETWORK}", images, labels)
    imagenet = _held_out_accuracy("efficientnet_lite2:imagenet", images, labels)
    print(f"held-out accuracy, bicubic vs bilinear upsampling: residual features {residual:.2f}, "
          f"ImageNet features {imagenet:.2f}")
    assert residual >= 0.9


def test_harmless_changes_of_photos_never_seen_keep_real_or_uncertain(attributor):
    """Photos from scikit-image, none in the dev set: rotated, flipped or cropped they are still no
    generator's (``real``, or at worst ``uncertain``)."""
    skimage_data = pytest.importorskip("skimage.data")
    left, right, _ = skimage_data.stereo_motorcycle()
    photos = [Image.fromarray(a).convert("RGB") for a in (skimage_data.rocket(), skimage_data.camera(), left, right)]
    changed = []
    for p in photos:
        w, h = p.size
        changed += [p.transpose(Image.Transpose.ROTATE_90), p.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                    p.crop((w // 10, h // 10, w - w // 10, h - h // 10)), p.crop((0, 0, min(w, 400), min(h, 400)))]
    labels = [o.label for o in attributor(changed)]
    assert all(label in (REAL, UNCERTAIN) for label in labels), labels


def _check_row(row: dict, classes: list[str]) -> None:
    label, s, scores, reason = row["label"], row["synthetic_score"], row["scores"], row["reason"]
    match = row.get("class_match")
    assert abs(sum(scores.values()) - 1) < 1e-4 and abs(scores[REAL] - (1 - s)) < 1e-5
    assert row["known"] == (label in classes)
    if match is not None:
        assert match["score"] >= match["threshold"] and match["class"] in classes and match["class"] != REAL
        assert 0 < match["false_match_rate_at_score"] <= 1
    if reason == REASON_EXACT:
        assert row["duplicate_of"]["match"] == "exact" and label == row["duplicate_of"]["class"]
    elif label == REAL:
        assert s < row["real_threshold"] and reason == REASON_REAL and match is None
    elif label == UNCERTAIN and reason in (REASON_GRAYSCALE, REASON_SMALL, REASON_FEW_COLOURS):
        assert row["disagreement"]["evidence"][0] == "input"
        assert {REASON_GRAYSCALE: row["grayscale"], REASON_FEW_COLOURS: row.get("distinct_colours", 2000) <= 1024,
                REASON_SMALL: 2 * min(row["width"], row["height"]) < 256}[reason]
    elif label == UNCERTAIN and reason == REASON_DISPUTED:
        assert match is not None and s < row["synthetic_threshold"] and row["disagreement"]["evidence"][0] == "class_match"
    elif label == UNCERTAIN:
        assert row["real_threshold"] <= s < row["synthetic_threshold"] and reason == REASON_UNCERTAIN
        assert match is None
    else:
        assert s >= row["synthetic_threshold"] or match is not None
        if label == UNKNOWN:
            assert (reason == REASON_UNKNOWN and row["unknown_score"] > row["threshold"]) or reason == REASON_FAR
        elif reason == REASON_MATCH:
            assert label == match["class"] and row["unknown_score"] <= row["threshold"]
        else:
            generators = {c: p for c, p in scores.items() if c != REAL}
            assert label == max(generators, key=generators.get) and match is None
            assert row["unknown_score"] <= row["threshold"] and reason == REASON_KNOWN


def test_label_scores_thresholds_and_reason_agree_in_every_cli_row(attributor, dev_data, tmp_path):
    files = [sorted((dev_data / c).iterdir())[i] for c in attributor.classes for i in (0, 7)]
    screenshot = Image.new("RGB", (640, 400), "white")
    screenshot.paste(Image.new("RGB", (600, 30), (40, 90, 200)), (20, 20))
    screenshot.save(tmp_path / "screenshot.png")
    files.append(tmp_path / "screenshot.png")
    out = subprocess.run([sys.executable, "-m", "attribution", "predict", "--json", "--quiet", *map(str, files)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == len(files), out.stderr
    for row in rows:
        _check_row(row, attributor.classes)
    assert rows[-1]["label"] in (REAL, UNCERTAIN, UNKNOWN), "a screenshot gets no confident generator label"


def test_old_heads_without_a_probe_decide_as_before():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(m, 1, (40, 8)) for m in (0, 4, 8)])
    y = np.repeat(["real", "a", "b"], 40)
    head = OpenSetHead(n_components=8).fit(X, y)
    decision = head.decide(X)
    assert decision.synthetic_score is None and not head.has_probe
    assert set(decision.labels) <= {"real", "a", "b", UNKNOWN}
    # a head saved by an earlier release: format_version 1 (flat config), no probe, thresholds where
    # higher is worse (the reverse of scikit-learn's offset_)
    state = {k: v for k, v in head.state_dict().items() if not k.startswith("probe_")}
    meta = {k: v for k, v in head.meta_dict().items() if k not in ("probe_intercept_", "real_offset_", "synthetic_offset_")}
    meta.update(offset_=-head.offset_, distance_offset_=-head.distance_offset_)
    v1 = {"format_version": 1, "head": "OpenSetHead", "head_params": head.get_params(), "head_state": meta,
          "backbone": "efficientnet_lite0:imagenet", "layers": ["blocks.6"], "preprocess_cfg": {}, "classes": head.classes_}
    old = OpenSetHead.from_config(v1, state)
    assert old.offset_ == head.offset_ and old.distance_offset_ == head.distance_offset_
    assert (old.decide(X).labels == decision.labels).all()
    assert old.decide(X).unknown_threshold == decision.unknown_threshold == -head.offset_


def test_probe_thresholds_hold_on_held_out_units():
    """Real groups and generators never seen by the probe are called synthetic / real at about the
    calibrated rates, and the uncertain band sits between the thresholds."""
    rng = np.random.default_rng(1)
    real = [rng.normal(0, 1, (60, 6)) + rng.normal(0, 0.3, 6) for _ in range(6)]
    fake = [rng.normal(0, 1, (60, 6)) + np.r_[2.0, rng.normal(0, 0.3, 5)] for _ in range(6)]
    X = np.concatenate(real[:4] + fake[:4])
    y = np.repeat(["real", "real", "real", "real", "g0", "g1", "g2", "g3"], 60)
    groups = np.repeat(["r0", "r1", "r2", "r3", "", "", "", ""], 60)
    head = OpenSetHead(n_components=6, synthetic_probe=True, real_false_rate=0.05, synthetic_miss_rate=0.05).fit(
        X, y, groups=groups)
    assert head.real_offset_ <= head.synthetic_offset_
    new_real, new_fake = head.synthetic_score(np.concatenate(real[4:])), head.synthetic_score(np.concatenate(fake[4:]))
    assert (new_real >= head.synthetic_offset_).mean() <= 0.15
    assert (new_fake < head.real_offset_).mean() <= 0.15
