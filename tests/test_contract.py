"""The contract every head and verifier keeps, checked by one battery (scikit-learn's ``parametrize_with_checks``).

For each estimator: ``fit`` returns ``self`` and scores have their shapes; before ``fit`` it raises
``NotFittedError``; ``save_pretrained``/``from_pretrained`` and ``to_bytes``/``from_bytes`` give back the
same arrays, the same bytes and the same scores; its threshold hits the rate it states on fresh
held-out data, within a binomial tolerance (3 sigma of the calibration and test samples plus 0.01);
verifiers give one row per input from ``verify``. Tiny models only: the whole battery runs in under two
minutes on two CPU cores.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

from attribution.constants import REAL
from attribution.heads import NotFittedError, OpenSetHead
from attribution.verification import BlackBoxVerifier, Verifier
from conftest import make_image, stub_attributor, tiny_clip, tiny_vae
from test_heads import make_classes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Case:
    """One estimator under contract.

    ``make`` builds it unfitted; ``fit(estimator)`` fits it (returning what ``fit`` returns); ``X`` is fresh
    held-out data to score; ``rate(estimator)`` gives ``(observed rate on fresh data, stated rate, n
    calibration samples, n test samples)``; ``load`` are the keyword arguments loading needs (a model
    that is not saved with the state); ``for_images`` a fitted verifier that reads images, or ``None``.
    """

    make: Callable[[], Any]
    fit: Callable[[Any], Any]
    X: np.ndarray
    rate: Callable[[Any], tuple[float, float, int, int]]
    load: dict[str, Any] = field(default_factory=dict)
    for_images: Callable[[], Verifier] | None = None


# ------------------------------------------------------------------------------ the cases
def _head_case(probe: bool) -> Case:
    """The unknown threshold accepts ``accept_rate`` of known (with a probe: generators') images."""
    X, y = make_classes([300] * 5, seed=4, n_classes=5)
    Xt, yt = make_classes([2000] * 5, seed=4, n_classes=5, draw=1)
    if probe:
        y, yt = np.where(y == "g0", REAL, y), np.where(yt == "g0", REAL, yt)
    known = yt != REAL if probe else np.ones(len(yt), bool)

    def rate(head: OpenSetHead) -> tuple[float, float, int, int]:
        accepted = float((head.score_samples(Xt[known]) - head.offset_ >= 0).mean())
        return accepted, head.accept_rate, int((y != REAL).sum() if probe else len(y)), int(known.sum())

    return Case(lambda: OpenSetHead(n_components=40, accept_rate=0.9, synthetic_probe=probe),
                lambda head: head.fit(X, y), Xt[:50], rate)


def _blackbox_case() -> Case:
    """Class ``g1``'s threshold lets ``false_match_rate`` of the other classes' fresh images match."""
    X, y = make_classes([300] * 5, seed=7, n_classes=5)
    Xt, yt = make_classes([2000] * 5, seed=7, n_classes=5, draw=1)

    def rate(verifier: BlackBoxVerifier) -> tuple[float, float, int, int]:
        matched = float((verifier.predict(Xt[yt != "g1"]) == 1).mean())
        return matched, verifier.false_match_rate, int((y != "g1").sum()), int((yt != "g1").sum())

    def for_images() -> Verifier:
        stub = stub_attributor(size=64, n_crops=1)
        return BlackBoxVerifier(stub.head, "gen", extractor=stub.extractor)

    return Case(lambda: BlackBoxVerifier(OpenSetHead(n_components=40, false_match_rate=0.05), "g1"),
                lambda verifier: verifier.fit(X, y), Xt[:50], rate, for_images=for_images)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _occ_clip_case(clip_id: str) -> Case:
    """``offset_`` lets ``false_match_rate`` of fresh negatives match (synthetic CLIP-sized embeddings)."""
    from attribution.verification import OCCCLIPVerifier

    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    target = _unit(centre + rng.normal(size=(8, 32)))
    negatives, fresh = _unit(rng.normal(size=(400, 32))), _unit(rng.normal(size=(1000, 32)))

    def make() -> OCCCLIPVerifier:
        return OCCCLIPVerifier.from_clip(clip_id, target="g", steps=20, false_match_rate=0.1,
                                         calibration_fraction=0.5, device="cpu")

    def rate(verifier: OCCCLIPVerifier) -> tuple[float, float, int, int]:
        return float((verifier.predict(fresh) == 1).mean()), verifier.false_match_rate, 200, len(fresh)

    def for_images() -> Verifier:
        return make().fit(target, negatives)

    return Case(make, lambda verifier: verifier.fit(target, negatives), fresh[:50], rate, for_images=for_images)


def _whitebox_case(vae: Any) -> Case:
    """``offset_`` accepts ``accept_rate`` of the model's own fresh images (features encoded once)."""
    from attribution.verification import WhiteBoxVerifier

    def make() -> WhiteBoxVerifier:
        return WhiteBoxVerifier(vae, steps=2, accept_rate=0.8, batch_size=64, device="cpu")

    encoder = make()
    X = encoder.features(encoder.sample(96, generator=0)).features  # [loss, complexity] of own images
    fresh = encoder.features(encoder.sample(288, generator=1)).features

    def rate(verifier: WhiteBoxVerifier) -> tuple[float, float, int, int]:
        return float((verifier.predict(fresh) == 1).mean()), verifier.accept_rate, len(X), len(fresh)

    return Case(make, lambda verifier: verifier.fit(X), fresh[:50], rate, {"vae": vae},
                for_images=lambda: make().fit(X))


CASES = ["OpenSetHead", "OpenSetHead-probe", "BlackBoxVerifier", "OCCCLIPVerifier", "WhiteBoxVerifier"]


@pytest.fixture(scope="module", params=CASES)
def case(request, tmp_path_factory) -> Case:
    name = request.param
    if name.startswith("OpenSetHead"):
        return _head_case(probe=name.endswith("probe"))
    if name == "BlackBoxVerifier":
        return _blackbox_case()
    if name == "OCCCLIPVerifier":
        return _occ_clip_case(tiny_clip(tmp_path_factory.mktemp("clip") / "tiny"))
    return _whitebox_case(tiny_vae())


@pytest.fixture(scope="module")
def fitted(case: Case) -> Any:
    return case.fit(case.make())


# ------------------------------------------------------------------------------ the checks
def test_fit_returns_self_and_scores_have_their_shapes(case, fitted):
    estimator = case.make()
    assert case.fit(estimator) is estimator
    n = len(case.X)
    scores = fitted.score_samples(case.X)
    assert scores.shape == (n,) and np.isfinite(scores).all()
    predicted = fitted.predict(case.X)
    assert predicted.shape == (n,)
    if isinstance(fitted, Verifier):
        np.testing.assert_allclose(fitted.decision_function(case.X), scores - fitted.offset_)
        assert set(np.unique(predicted)) <= {-1, 1}
        np.testing.assert_array_equal(predicted, np.where(scores - fitted.offset_ >= 0, 1, -1))
    else:
        assert fitted.predict_proba(case.X).shape == (n, len(fitted.classes_))
        np.testing.assert_allclose(fitted.predict_proba(case.X).sum(axis=1), 1.0)
        assert set(predicted) <= {*fitted.classes_, "unknown", "uncertain"}


def test_not_fitted_error(case):
    estimator = case.make()
    for call in (estimator.predict, estimator.decision_function):
        with pytest.raises(NotFittedError):
            call(case.X)
    for call in (estimator.to_bytes, estimator.state_dict, estimator.meta_dict):
        with pytest.raises(NotFittedError):
            call()
    if isinstance(estimator, Verifier):
        with pytest.raises(NotFittedError):
            estimator.verify([np.zeros((64, 64, 3), np.uint8)])


def _same_state(a: Any, b: Any) -> None:
    assert a.get_params() == b.get_params() and a.meta_dict() == b.meta_dict()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and sa[name].shape == sb[name].shape, name
        assert sa[name].tobytes() == sb[name].tobytes(), name


def test_save_load_and_bytes_are_bit_exact(case, fitted, tmp_path):
    cls = type(fitted)
    folder = fitted.save_pretrained(tmp_path / "saved", {"name": "saved"})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    data = fitted.to_bytes()
    for loaded in (cls.from_pretrained(str(folder), **case.load), cls.from_bytes(data, **case.load)):
        assert type(loaded) is cls
        _same_state(fitted, loaded)
        np.testing.assert_array_equal(loaded.score_samples(case.X), fitted.score_samples(case.X))
        np.testing.assert_array_equal(loaded.predict(case.X), fitted.predict(case.X))
        assert loaded.to_bytes() == data  # the same config and arrays, byte for byte


def test_threshold_hits_its_stated_rate_on_fresh_data(case, fitted):
    observed, stated, n_calibration, n_test = case.rate(fitted)
    tolerance = 3 * np.sqrt(stated * (1 - stated) * (1 / n_calibration + 1 / n_test)) + 0.01
    print(f"\n{type(fitted).__name__}: stated {stated:.3f}, observed {observed:.3f} on {n_test} fresh samples "
          f"(tolerance {tolerance:.3f})")
    assert abs(observed - stated) <= tolerance


def test_verify_gives_one_row_per_input(case, tmp_path):
    if case.for_images is None:
        pytest.skip("a head, not a verifier")
    verifier = case.for_images()
    good = [make_image(tmp_path / f"{i}.png", seed=i, size=64) for i in range(3)]
    (tmp_path / "notes.png").write_text("not an image")
    calls = []
    inputs = [good[0], tmp_path / "notes.png", tmp_path / "missing.png", *good[1:]]
    rows = verifier.verify(inputs, progress=lambda done, total: calls.append((done, total)))
    assert [r.file for r in rows] == [str(p.resolve()) for p in inputs] and calls[-1] == (5, 5)
    assert [r.error_code for r in rows] == [None, "not_an_image", "not_found", None, None]
    decision = verifier.decision_function(verifier.features(good).features)
    np.testing.assert_allclose([rows[i].score for i in (0, 3, 4)], decision, atol=1e-5)
    for row in (rows[0], rows[3], rows[4]):
        line = row.to_json()
        assert line["match"] == (line["score"] >= 0) and line["threshold"] == 0.0
        assert line["method"] == verifier.method and line["model"] == verifier.name
        assert line["false_match_rate"] == verifier.false_match_rate
        assert ("false_match_rate_at_score" in line) == (verifier.calibration_negatives() is not None)
    assert set(rows[1].to_json()) == {"file", "model", "error", "error_code"}
