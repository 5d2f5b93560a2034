"""Evidence that decides: an enrolled generator is attributed even where the probe never saw it, real photos
are pulled in by class matches at most at the stated rate, an exact known image is named, and Attribute and
black-box Verify agree (NumPy heads and a stub backbone: no network)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binom

from attribution import Attributor, OpenSetHead
from attribution.constants import REAL, UNCERTAIN
from attribution.duplicates import ExemplarHashes, perceptual_hash
from attribution.heads.decision import REASON_EXACT, REASON_MATCH
from attribution.transform import decode_image
from attribution.verification import BlackBoxVerifier
from conftest import REPO, make_image, stub_attributor

D = 12


def world(seed: int = 0):
    """Real photos from four sources; three generators that share a trace (dimensions 0-3) the probe learns;
    a mixing matrix so that no dimension is clean."""
    rng = np.random.default_rng(seed)
    mix = np.eye(D) + rng.normal(0, 0.15, (D, D))
    sources = rng.normal(0, 0.4, (4, D))
    generators = {}
    for k in range(3):
        mean = np.zeros(D)
        mean[:4] = 3.0
        mean[4 + k % 2] = 2.0 if k < 2 else -2.0
        generators[f"g{k}"] = mean
    return mix, sources, generators


def draw(rng, mean, n, mix):
    return (rng.normal(size=(n, D)) + mean) @ mix


def fitted(**params):
    """A head with a probe fitted on three real sources (100 photos each) and the three generators."""
    mix, sources, generators = world()
    rng = np.random.default_rng(1)
    X = np.concatenate([draw(rng, sources[s], 100, mix) for s in range(3)] +
                       [draw(rng, m, 100, mix) for m in generators.values()])
    y = ["real"] * 300 + [g for g in generators for _ in range(100)]
    groups = [f"r{s}" for s in range(3) for _ in range(100)] + [""] * 300
    head = OpenSetHead(n_components=D, synthetic_probe=True, **params).fit(X, y, groups=groups)
    return head, mix, sources


def new_generator(shift: float):
    """A generator without the trace the probe knows (its images look real to it), apart in dimensions 6-8."""
    mean = np.zeros(D)
    mean[6:9] = shift
    return mean


def test_a_generator_the_probe_calls_real_is_attributed_once_enrolled():
    head, mix, sources = fitted()
    rng = np.random.default_rng(5)
    shots, new = draw(rng, new_generator(4.0), 10, mix), draw(rng, new_generator(4.0), 400, mix)
    assert np.isin(head.predict(new), [REAL, UNCERTAIN]).mean() > 0.8  # the probe alone finds nothing
    enrolled = head.clone().enroll(shots, "mine")
    decision = enrolled.decide(new)
    assert (decision.labels == "mine").mean() >= 0.9, np.unique(decision.labels, return_counts=True)
    assert (decision.reasons == REASON_MATCH).mean() >= 0.85  # the match decided (the probe alone finds nothing)
    real = np.concatenate([draw(rng, sources[s], 500, mix) for s in range(4)])
    assert (enrolled.predict(real) == "mine").mean() <= 0.01


def test_real_photos_near_an_enrolled_class_are_pulled_in_at_most_at_the_stated_rate():
    """The enrolled class overlaps the real photos; its threshold keeps the real photos all classes match, on
    sources of the head and on one it never saw, within ``match_real_rate`` (binomial tolerance). Without
    the real-photo budget (a rate of 1) the same enrollment pulls in several times more: the check can fail."""
    n = 2000
    limit = binom.ppf(0.999, n, 0.01) / n
    pulled = {}
    for rate in (0.01, 1.0):
        head, mix, sources = fitted(match_real_rate=rate)
        rng = np.random.default_rng(7)
        enrolled = head.clone().enroll(draw(rng, new_generator(2.0), 10, mix), "near")
        real = np.concatenate([draw(rng, sources[s], n // 4, mix) for s in range(4)])
        labels = enrolled.predict(real)
        pulled[rate] = (labels == "near").mean()
        if rate == 0.01:
            matched = enrolled.decide(real).match_margin >= 0
            assert matched.mean() <= limit, matched.mean()
    assert pulled[0.01] <= limit < pulled[1.0], (pulled, limit)


def test_without_class_matches_an_enrolled_generator_the_probe_calls_real_is_missed():
    """The decision before class matches (``class_match=False``): the same enrollment is not attributed."""
    head, mix, _ = fitted(class_match=False)
    rng = np.random.default_rng(5)
    shots, new = draw(rng, new_generator(4.0), 10, mix), draw(rng, new_generator(4.0), 400, mix)
    assert (head.clone().enroll(shots, "mine").predict(new) == "mine").mean() < 0.2


def test_stored_enrollments_get_the_same_thresholds_as_a_live_enrollment():
    head, mix, _ = fitted()
    rng = np.random.default_rng(9)
    live = head.clone().enroll(draw(rng, new_generator(2.0), 10, mix), "near")
    delta = live.class_delta("near")
    old = type(delta)(delta.label, delta.mean, delta.count, delta.bias, -50.0, delta.bank)  # an offset from before
    for stored in (delta, old):
        rebuilt = head.with_deltas([stored])
        assert rebuilt.verify_offsets_[-1] == pytest.approx(live.verify_offsets_[-1])


# ----------------------------------------------------------------------------- through the pipeline
@pytest.fixture(scope="module")
def attributor_with_index(tmp_path_factory):
    """The stub attributor with a duplicate index naming one of its images as a training image of a class the
    head does not give it."""
    att = stub_attributor(batch_size=4, n_crops=1)
    path = make_image(tmp_path_factory.mktemp("exact") / "img.png", seed=3, size=256)
    given = att([path])[0].label
    indexed = "gen" if given != "gen" else "real"
    decoded = decode_image(path)
    hashes = ExemplarHashes([ExemplarHashes.entry(f"{indexed}/img.png", indexed, decoded.facts,
                                                  perceptual_hash(decoded.frames[0]))])
    return Attributor(att.backbone, att.head, {}, batch_size=4, hashes=hashes), path, indexed


def test_an_exact_known_image_is_named_by_its_class(attributor_with_index, tmp_path):
    att, path, indexed = attributor_with_index
    out = att([path])[0]
    assert out.label == indexed and out.reason == REASON_EXACT and out.known
    assert out.duplicate_of["match"] == "exact" and out.duplicate_of["class"] == indexed
    assert max(out.scores, key=out.scores.get) != indexed  # the scores are still reported as the head gives them
    resaved = tmp_path / "copy.jpg"  # a near duplicate is shown but decides nothing
    Image.open(path).convert("RGB").save(resaved, quality=90)
    near = att([resaved])[0]
    assert near.duplicate_of and near.duplicate_of["match"] == "near" and near.reason != REASON_EXACT


@pytest.fixture(scope="module")
def spectra_head(tmp_path_factory):
    """A head on the weight-free residual spectra trained by the CLI on made-up classes (``gen_b`` upscaled from
    128 px, so its spectrum differs), and new images of each class and of a made-up generator ``mine``."""
    root = tmp_path_factory.mktemp("spectra")
    data = root / "data"
    for label, seeds in (("real", range(0, 12)), ("gen_a", range(100, 112)), ("gen_b", range(200, 212))):
        (data / label).mkdir(parents=True)
        for s in seeds:
            make_image(data / label / f"{s}.png", seed=s, size=256 if label != "gen_b" else 128)
    head_dir = root / "head"
    subprocess.run([sys.executable, "-m", "attribution", "train", "--backbone", "residual_spectra", "--data",
                    str(data), "--out", str(head_dir), "--crops", "1", "--n-components", "8", "--augment", "0",
                    "--quiet", "--no-cache"], cwd=REPO, check=True, capture_output=True, timeout=600)
    new = [make_image(root / f"new{i}.png", seed=s, size=256 if i % 2 else 128)
           for i, s in enumerate((300, 301, 302, 303, 112, 113, 212, 213, 12, 13))]
    mine = [make_image(root / f"mine{i}.png", seed=900 + i, size=96) for i in range(14)]
    return head_dir, new, mine


def test_attribute_and_blackbox_verify_agree_in_the_python_api(spectra_head):
    head_dir, new, mine = spectra_head
    att = Attributor.from_pretrained(head_dir)
    att.enroll("mine", mine[:8])
    images = new + mine[8:]
    rows = att(images)
    for model in ("mine", "gen_a", "gen_b"):
        verdicts = BlackBoxVerifier(att.head, model, extractor=att.extractor).verify(images)
        for row, v in zip(rows, verdicts):
            if v.match:
                assert row.label != REAL and row.class_match is not None, (model, row.to_json(), v.to_json())
            if row.class_match and row.class_match["class"] == model:
                assert v.match
    assert any(r.class_match for r in rows) and any(not r.class_match for r in rows)


def test_attribute_and_blackbox_verify_agree_in_the_cli(spectra_head):
    """``predict`` and ``verify --model`` on the same images: a match is never answered ``real``, and the row
    names it."""
    head_dir, new, _ = spectra_head
    files = [str(p) for p in new]

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "attribution", *args, "--quiet", "--json", *files], cwd=REPO,
                             capture_output=True, text=True, timeout=600)
        return [json.loads(line) for line in out.stdout.splitlines()]

    predicted = cli("predict", "--zoo", str(head_dir), "--no-provenance")
    assert len(predicted) == len(files)
    matches = 0
    for model in ("gen_a", "gen_b"):
        for row, v in zip(predicted, cli("verify", "--zoo", str(head_dir), "--model", model)):
            assert row["file"] == v["file"]
            if v["match"]:
                matches += 1
                assert row["label"] != REAL and "class_match" in row, (row, v)
    assert matches


def test_a_match_outside_the_class_images_decides_nothing():
    """An image far beyond an enrolled class (its log-odds for the class even higher) is outside the class's
    own images: the match is reported but does not make it synthetic (uncertain, ``class_match_disagrees``)."""
    from attribution.heads.decision import REASON_DISPUTED

    head, mix, _ = fitted()
    rng = np.random.default_rng(5)
    enrolled = head.clone().enroll(draw(rng, new_generator(4.0), 10, mix), "mine")
    beyond = draw(rng, new_generator(12.0), 50, mix)
    decision = enrolled.decide(beyond)
    assert (decision.match_margin >= 0).all() and not decision.match_inside.any()
    assert set(decision.labels) <= {UNCERTAIN, "unknown"} and REASON_DISPUTED in set(decision.reasons)


def test_grayscale_and_tiny_inputs_are_never_called_generated(spectra_head, tmp_path, monkeypatch):
    """Whatever the scores say, a grayscale image, a posterised one or one whose short side is below half the
    judged window is ``uncertain`` (reasons ``grayscale_input``, ``few_colours_input``, ``small_input``); a
    colour image of full size keeps its label."""
    from attribution.heads.decision import REASON_FEW_COLOURS, REASON_GRAYSCALE, REASON_SMALL, input_limit

    assert input_limit(True, 512, 256) == REASON_GRAYSCALE and input_limit(False, 100, 256) == REASON_SMALL
    assert input_limit(False, 128, 256) is None and input_limit(False, 512, 256, 300) == REASON_FEW_COLOURS
    head_dir, new, _ = spectra_head
    att = Attributor.from_pretrained(head_dir)
    colour = Image.open(new[1]).convert("RGB")
    grey = tmp_path / "grey.png"
    colour.convert("L").convert("RGB").save(grey)
    small = tmp_path / "small.png"
    colour.resize((100, 100)).save(small)
    poster = tmp_path / "poster.png"
    colour.quantize(64).convert("RGB").save(poster)
    generated = att.head.decide
    monkeypatch.setattr(att.head, "decide", lambda X, nearest=0: _all_generated(generated(X, nearest)))
    rows = att([new[1], grey, small, poster])
    assert rows[0].label == "gen_a" and rows[0].to_json().get("distinct_colours") is None
    assert (rows[1].label, rows[1].reason) == (UNCERTAIN, REASON_GRAYSCALE) and rows[1].disagreement
    assert (rows[2].label, rows[2].reason) == (UNCERTAIN, REASON_SMALL)
    assert (rows[3].label, rows[3].reason) == (UNCERTAIN, REASON_FEW_COLOURS) and rows[3].distinct_colours <= 64


def _all_generated(decision):
    """A decision that calls every image ``gen_a`` (to see what the input rules make of it)."""
    decision.labels[:] = "gen_a"
    decision.reasons[:] = "synthetic_known_generator"
    return decision
