import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from attribution.constants import UNKNOWN
from attribution.heads import HEADS, NotFittedError, OpenSetHead
from attribution.verification import BlackBoxVerifier

DIM = 40


def make_classes(n_per_class, seed=0, n_classes=6, draw=0):
    """Gaussian classes sharing a random (non-spherical) covariance, like backbone features.

    ``seed`` fixes the classes (centres, covariance); ``draw`` picks an independent sample of them.
    """
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    centres = rng.normal(scale=1.6, size=(n_classes, DIM))
    sampler = np.random.default_rng([seed, draw])
    X = np.concatenate([sampler.normal(size=(n, DIM)) + centres[c] for c, n in enumerate(n_per_class)]) @ mix
    y = np.repeat([f"g{c}" for c in range(len(n_per_class))], n_per_class)
    return X, y


@pytest.fixture(scope="module")
def data():
    return make_classes([240, 185, 185, 122, 50, 60], seed=1)


def test_fit_predict_closed_set(data):
    X, y = data
    known = y != "g5"
    head = OpenSetHead(n_components=DIM).fit(X[known], y[known])
    Xt, yt = make_classes([200] * 6, seed=1, draw=1)
    keep = yt != "g5"
    pred = head.predict(Xt[keep])
    accepted = pred != UNKNOWN
    assert (pred[accepted] == yt[keep][accepted]).mean() > 0.9
    assert np.allclose(head.predict_proba(Xt[:5]).sum(axis=1), 1.0)


def test_unknown_rejection_on_held_out_class():
    X, y = make_classes([200] * 6, seed=3)
    known = y != "g5"
    head = OpenSetHead(n_components=DIM).fit(X[known], y[known])
    Xt, yt = make_classes([300] * 6, seed=3, draw=1)
    score = head.unknown_score(Xt)
    auroc = roc_auc_score(yt == "g5", score)
    assert auroc > 0.9, auroc
    rejected_unknown = (head.predict(Xt[yt == "g5"]) == UNKNOWN).mean()
    rejected_known = (head.predict(Xt[yt != "g5"]) == UNKNOWN).mean()
    assert rejected_unknown > 0.5 and rejected_known < 0.12, (rejected_unknown, rejected_known)


def test_threshold_hits_target_acceptance():
    X, y = make_classes([300] * 5, seed=4, n_classes=5)
    for rate in (0.9, 0.95):
        head = OpenSetHead(n_components=DIM, accept_rate=rate).fit(X, y)
        Xt, _ = make_classes([2000] * 5, seed=4, n_classes=5, draw=1)
        accepted = (head.score_samples(Xt) - head.offset_ >= 0).mean()  # scikit-learn: negative = outlier
        assert abs(accepted - rate) < 0.03, (rate, accepted)


def test_five_shot_enrollment_is_recalled_and_old_classes_keep_accuracy():
    X, y = make_classes([240, 185, 185, 122, 44, 300], seed=5)
    new = y == "g5"
    head = OpenSetHead(n_components=DIM).fit(X[~new], y[~new])
    Xt, yt = make_classes([300] * 6, seed=5, draw=1)
    old = yt != "g5"
    before = (head.predict(Xt[old]) == yt[old]).mean()
    head.enroll(X[new][:5], "g5")
    assert head.classes_[-1] == "g5" and head.class_counts_[-1] == 5
    recall = (head.predict(Xt[~old]) == "g5").mean()
    after = (head.predict(Xt[old]) == yt[old]).mean()
    assert recall > 0.7, recall
    # the new class's bias lets it take 1 % of the bank's other-class exemplars
    assert before - after <= 0.03, (before, after)
    assert head.class_bias_[:-1].tolist() == [0.0] * 5
    # verification of the enrolled class separates its images from the others
    auc = roc_auc_score(yt == "g5", BlackBoxVerifier(head, "g5").decision_function(Xt))
    assert auc > 0.95, auc


def near_duplicate_generator(seed):
    """Six classes where the sixth (to be enrolled) sits close to the first, so enrolling it has a cost."""
    X, y = make_classes([200, 150, 150, 120, 80, 400], seed=seed)
    Xt, yt = make_classes([1000] * 6, seed=seed, draw=1)
    g0, g5 = X[y == "g0"].mean(axis=0), X[y == "g5"].mean(axis=0)
    for data, labels in ((X, y), (Xt, yt)):
        data[labels == "g5"] += 0.75 * (g0 - g5)
    return X, y, Xt, yt


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.05])
def test_enroll_false_rate_holds_on_fresh_images(rate):
    X, y, Xt, yt = near_duplicate_generator(seed=11)
    new = y == "g5"
    head = OpenSetHead(n_components=DIM, enroll_false_rate=rate).fit(X[~new], y[~new])
    head.enroll(X[new][:10], "g5")
    taken = (head.decision_function(Xt[yt != "g5"]).argmax(axis=1) == head.classes_.index("g5")).mean()
    recall = (head.predict(Xt[yt == "g5"]) == "g5").mean()
    assert taken <= 2 * rate + 0.005, (rate, taken)
    assert recall > 0.3, recall
    # verification offsets are set on left-out bank scores, so fresh negatives match at about the target rate
    false_match = (BlackBoxVerifier(head, "g5").predict(Xt[yt != "g5"]) == 1).mean()
    assert false_match <= 2 * head.false_match_rate, false_match


def test_enrollment_never_makes_old_images_unknown_and_recall_grows_with_the_rate():
    X, y, Xt, yt = near_duplicate_generator(seed=12)
    new, old = y == "g5", yt != "g5"
    recalls = []
    for rate in (0.0, 0.05):
        head = OpenSetHead(n_components=DIM, enroll_false_rate=rate).fit(X[~new], y[~new])
        before = head.unknown_score(Xt)
        head.enroll(X[new][:10], "g5")
        assert np.all(head.unknown_score(Xt[old]) <= before[old] + 1e-12)
        recalls.append((head.predict(Xt[~old]) == "g5").mean())
    assert recalls[1] > recalls[0], recalls


def test_enroll_rejects_duplicates_and_remove_restores():
    X, y = make_classes([60] * 4, seed=6, n_classes=4)
    head = OpenSetHead(n_components=10).fit(X[y != "g3"], y[y != "g3"])
    means = head.class_means_.copy()
    head.enroll(X[y == "g3"][:5], "g3", ids=[f"e{i}" for i in range(5)])
    with pytest.raises(ValueError, match="already known"):
        head.enroll(X[:5], "g3")
    head.remove("g3")
    assert head.classes_ == ["g0", "g1", "g2"] and np.array_equal(head.class_means_, means)
    assert len(head.bank_ids_) == len(head.bank_) == len(head.bank_labels_)
    assert head.bank_labels_.max() == 2


def test_state_round_trip_is_exact():
    X, y = make_classes([50] * 3, seed=8, n_classes=3)
    head = OpenSetHead(n_components=12, accept_rate=0.9).fit(X, y)
    clone = HEADS["OpenSetHead"].from_state(head.get_params(), head.meta_dict(), head.state_dict())
    assert clone.get_params() == head.get_params()
    assert np.array_equal(clone.predict_proba(X), head.predict_proba(X))
    assert np.array_equal(clone.predict(X), head.predict(X))


def test_not_fitted_and_bad_input():
    with pytest.raises(NotFittedError):
        OpenSetHead().predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="two classes"):
        OpenSetHead().fit(np.zeros((4, 3)), ["a"] * 4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        OpenSetHead().fit(np.random.rand(5, 3), ["a", "a", "a", "a", "b"])
