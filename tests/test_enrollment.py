"""Enrollment metrics, enrollment deltas and the false-match rate at a score (NumPy heads, no backbone)."""
import numpy as np
import pytest

from attribution.enrollment import (WARN_PROBA, WARN_SHARE, enrollment_report,
                                    head_fingerprint)
from attribution.heads import OpenSetHead
from attribution.verification import BlackBoxVerifier, false_match_rate_at
from test_heads import DIM, make_classes

BACKBONE = {"backbone": "efficientnet_lite0:imagenet", "layers": ["blocks.6"]}


@pytest.fixture(scope="module")
def split():
    X, y = make_classes([200, 150, 150, 120, 40, 40], seed=21)
    Xt, yt = make_classes([300] * 6, seed=21, draw=1)
    base = OpenSetHead(n_components=DIM).fit(X[y < "g4"], y[y < "g4"])
    return base, X, y, Xt, yt


def test_deltas_rebuild_the_enrolled_head(split):
    base, X, y, Xt, _ = split
    enrolled = base.clone().enroll(X[y == "g4"][:6], "g4").enroll(X[y == "g5"][:5], "g5")
    deltas = [enrolled.class_delta("g4"), enrolled.class_delta("g5")]
    rebuilt = base.with_deltas(deltas)
    assert rebuilt.classes_ == enrolled.classes_ and rebuilt.enrolled_ == ["g4", "g5"]
    for name, value in enrolled.state_dict().items():
        assert np.array_equal(rebuilt.state_dict()[name], value), name
    assert np.array_equal(rebuilt.predict(Xt), enrolled.predict(Xt))
    assert np.array_equal(BlackBoxVerifier(rebuilt, "g5").decision_function(Xt),
                          BlackBoxVerifier(enrolled, "g5").decision_function(Xt))
    assert base.classes_ == ["g0", "g1", "g2", "g3"]  # the base head is never changed
    # dropping the first delta is the same head as removing its class
    assert np.array_equal(base.with_deltas(deltas[1:]).predict_proba(Xt),
                          enrolled.clone().remove("g4").predict_proba(Xt))


def test_deltas_that_do_not_fit_are_refused(split):
    base, X, y, _, _ = split
    delta = base.clone().enroll(X[y == "g4"][:6], "g4").class_delta("g4")
    with pytest.raises(ValueError, match="already known"):
        base.with_deltas([delta, delta])
    bad_dim = type(delta)(delta.label, delta.mean[:-1], delta.count, delta.bias, delta.verify_offset, delta.bank)
    with pytest.raises(ValueError, match="does not fit"):
        base.with_deltas([bad_dim])
    nan = type(delta)(delta.label, delta.mean, delta.count, float("nan"), delta.verify_offset, delta.bank)
    with pytest.raises(ValueError, match="invalid values"):
        base.with_deltas([nan])


def test_fingerprint_changes_with_the_head(split):
    base, X, y, _, _ = split
    assert head_fingerprint(base, BACKBONE) == head_fingerprint(base.clone(), BACKBONE)
    assert head_fingerprint(base, BACKBONE) != head_fingerprint(base.clone().enroll(X[y == "g4"][:5], "g4"), BACKBONE)
    assert head_fingerprint(base, BACKBONE) != head_fingerprint(base, {**BACKBONE, "layers": ["conv_head"]})


def test_report_tells_a_new_generator_from_a_copy_of_a_known_one(split):
    base, X, y, Xt, yt = split
    novel = enrollment_report(base, X[y == "g4"][:8], "new_gen")
    assert novel.warning is None and novel.expected_recall >= 0.75
    copy = enrollment_report(base, X[y == "g1"][:8], "my_gen")
    assert copy.closest_class == "g1" and copy.closest_class_share >= WARN_SHARE
    assert copy.warning and "'g1'" in copy.warning and f"{WARN_PROBA:.0%}" in copy.warning
    assert copy.expected_recall < novel.expected_recall
    # the report is an honest estimate: close to the recall on fresh images of the same class
    fresh = (base.clone().enroll(X[y == "g4"][:8], "new_gen").predict(Xt[yt == "g4"]) == "new_gen").mean()
    assert abs(novel.expected_recall - fresh) < 0.25, (novel.expected_recall, fresh)


def test_false_match_rate_at_score_is_conformal_and_falls_with_the_score(split):
    base, X, y, Xt, yt = split
    verifier = BlackBoxVerifier(base.clone().enroll(X[y == "g4"][:10], "g4"), "g4")
    head = verifier.head
    negatives = verifier.calibration_negatives() - verifier.offset_
    assert len(negatives) == int((head.bank_labels_ != head.classes_.index("g4")).sum())
    rates = false_match_rate_at(negatives, np.array([-1e9, 0.0, 1e9]))
    assert rates[0] == 1.0 and rates[2] == 1 / (len(negatives) + 1)
    # at the match threshold it reads about the operating false-match rate the threshold was set at
    assert rates[1] <= 3 * head.false_match_rate
    scores = np.sort(verifier.decision_function(Xt))
    assert np.all(np.diff(false_match_rate_at(negatives, scores)) <= 0)
    # and it holds on fresh images of the other known classes
    fresh = verifier.decision_function(Xt[yt < "g4"])
    for s in (-2.0, 0.0, 2.0):
        assert abs((fresh >= s).mean() - false_match_rate_at(negatives, [s])[0]) < 0.05
