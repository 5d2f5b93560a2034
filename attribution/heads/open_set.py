"""Open-set attribution head: Gaussian classes with a shared, shrunk covariance (LDA family).

Why this model: the shared within-class covariance is learnt once from the training classes; a class
is then just a mean in the whitened space. Few-shot enrollment adds a mean (seconds, no refit, old
classes untouched), class imbalance is neutralised by equal priors and by the posterior-predictive
correction for classes estimated from few samples, and the same distances give the open-set
(``unknown``) score and a one-class verification score per generator.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import ledoit_wolf
from sklearn.model_selection import StratifiedKFold

from ..constants import REAL, UNKNOWN
from .base import BaseHead, NotFittedError

DISTANCE_ACCEPT_RATE = 0.995  # known-class images the far-from-everything guard lets through (out-of-fold)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _predictive_log_likelihood(sq_distance: np.ndarray, counts: np.ndarray, dim: int) -> np.ndarray:
    """Gaussian log-likelihood (up to a constant) of a squared whitened distance to a class mean estimated
    from ``counts`` samples: the posterior predictive inflates the unit covariance by ``1 + 1/count``."""
    inflation = 1.0 + 1.0 / counts
    return -0.5 * sq_distance / inflation - 0.5 * dim * np.log(inflation)


def _fit_temperature(decisions: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``softmax(decisions / T)`` (golden search on log T)."""
    def nll(log_t: float) -> float:
        p = _softmax(decisions / np.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

    lo, hi = -3.0, 8.0
    g = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))


class OpenSetHead(BaseHead):
    """Attribute features to known classes or reject them as ``unknown``.

    Parameters
    ----------
    n_components : int
        PCA dimensions kept before whitening (capped by the data).
    shrinkage : float or None
        Weight of the identity (scaled to the mean variance) mixed into the within-class covariance;
        ``None`` picks it by Ledoit-Wolf.
    unknown_temperature : float
        Temperature of the softmax whose ``1 - max`` is the unknown score (flatter than the calibrated
        one, so that distance to all classes still counts).
    accept_rate : float
        Share of held-out known-class images the ``unknown`` threshold must accept (out-of-fold).
    false_match_rate : float
        Per-class verification threshold: share of other-class images allowed to match.
    enroll_false_rate : float
        An enrolled class gets the bias (log prior) under which this share of the exemplar bank's
        other-class images (each scored with itself left out of its class mean) would be attributed
        to it: the accuracy the old classes give up for the new class's recall.
    bank_size : int
        Exemplars kept per class (whitened) as the negative bank and for nearest-example look-ups.
    n_folds : int
        Folds of the out-of-fold calibration.
    random_state : int
        Seed for folds and bank sampling.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(m, 1, (40, 8)) for m in (0, 4)])
    >>> head = OpenSetHead(n_components=8).fit(X, ["real"] * 40 + ["gan"] * 40)
    >>> head.predict(X[:1] + 50)[0]
    'unknown'
    """

    _array_attrs = ("mean_", "projection_", "class_means_", "class_counts_", "class_bias_", "verify_offsets_",
                    "bank_", "bank_labels_")
    _meta_attrs = ("classes_", "enrolled_", "offset_", "distance_offset_", "temperature_", "bank_ids_")

    def __init__(self, n_components: int = 384, *, shrinkage: float | None = 0.2, unknown_temperature: float = 10.0,
                 accept_rate: float = 0.95, false_match_rate: float = 0.01, enroll_false_rate: float = 0.01,
                 bank_size: int = 64, n_folds: int = 5, random_state: int = 0) -> None:
        self.n_components = n_components
        self.shrinkage = shrinkage
        self.unknown_temperature = unknown_temperature
        self.accept_rate = accept_rate
        self.false_match_rate = false_match_rate
        self.enroll_false_rate = enroll_false_rate
        self.bank_size = bank_size
        self.n_folds = n_folds
        self.random_state = random_state

    # ----------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, y: Sequence[str], ids: Sequence[str] | None = None) -> "OpenSetHead":
        """Learn the whitening, the class means and the calibrated thresholds.

        ``X`` is ``(n_samples, n_features)``; ``y`` the class names; ``ids`` optional names of the
        samples (file names) kept with the exemplar bank.
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=str)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n_samples, n_features) matching y; got {X.shape} and {len(y)} labels")
        classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(classes) < 2:
            raise ValueError("at least two classes are needed to fit")
        if counts.min() < 2:
            raise ValueError(f"every class needs at least 2 samples; {classes[counts.argmin()]!r} has {counts.min()}")
        self.classes_ = [str(c) for c in classes]
        self.enrolled_: list[str] = []
        self._fit_geometry(X, codes)
        self._calibrate(X, codes)
        ids = np.asarray(ids if ids is not None else [""] * len(y), dtype=str)
        keep = self._sample_bank(codes)
        self.bank_, self.bank_labels_ = self.transform(X[keep]), codes[keep].astype(np.int64)
        self.bank_ids_ = [str(i) for i in ids[keep]]
        return self

    def _fit_geometry(self, X: np.ndarray, codes: np.ndarray) -> None:
        self.mean_ = X.mean(axis=0)
        centred = X - self.mean_
        k = int(min(self.n_components, X.shape[1], len(X) - len(np.unique(codes))))
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pcs = vt[:k].T
        P = centred @ pcs
        n_classes = int(codes.max()) + 1
        means = np.stack([P[codes == c].mean(axis=0) for c in range(n_classes)])
        within = P - means[codes]
        if self.shrinkage is None:
            cov, _ = ledoit_wolf(within, assume_centered=True)
        else:
            sample = within.T @ within / max(len(within) - n_classes, 1)
            cov = (1 - self.shrinkage) * sample + self.shrinkage * np.trace(sample) / k * np.eye(k)
        whiten = np.linalg.inv(np.linalg.cholesky(cov)).T  # z = p @ whiten has identity within-class covariance
        self.projection_ = pcs @ whiten
        self.class_means_ = means @ whiten
        self.class_counts_ = np.bincount(codes, minlength=n_classes).astype(np.float64)
        self.class_bias_ = np.zeros(n_classes)

    def _calibrate(self, X: np.ndarray, codes: np.ndarray) -> None:
        """Out-of-fold scores of the training data set the temperature and both thresholds."""
        n_folds = int(min(self.n_folds, np.bincount(codes).min()))
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=self.random_state)
        decisions = np.zeros((len(X), len(self.classes_)))
        for train, held_out in folds.split(X, codes):
            fold = OpenSetHead(self.n_components, shrinkage=self.shrinkage)
            fold.classes_, fold.enrolled_ = self.classes_, []
            fold._fit_geometry(X[train], codes[train])
            decisions[held_out] = fold.decision_function(X[held_out])
        self.temperature_ = _fit_temperature(decisions, codes)
        self.offset_ = float(np.quantile(self._unknown_from_decisions(decisions, self.classes_), self.accept_rate))
        self.distance_offset_ = float(np.quantile(self._distance_from_likelihoods(decisions), DISTANCE_ACCEPT_RATE))
        log_odds = self._log_odds(decisions)
        self.verify_offsets_ = np.array([self._verify_offset(log_odds[codes != c, c])
                                         for c in range(len(self.classes_))])

    def _verify_offset(self, negative_scores: np.ndarray) -> float:
        return float(np.quantile(negative_scores, 1.0 - self.false_match_rate))

    def _sample_bank(self, codes: np.ndarray) -> np.ndarray:
        """Rows kept as exemplars: up to ``bank_size`` per class, at random."""
        rng = np.random.default_rng(self.random_state)
        keep = np.concatenate([rng.permutation(np.flatnonzero(codes == c))[: self.bank_size]
                               for c in np.unique(codes)])
        return np.sort(keep)

    # -------------------------------------------------------------- enrollment
    def enroll(self, X: np.ndarray, label: str, ids: Sequence[str] | None = None) -> "OpenSetHead":
        """Add class ``label`` from a few samples ``X`` without touching the other classes."""
        self.check_is_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError("enrollment needs at least 2 samples as an (n_samples, n_features) array")
        if label in self.classes_:
            raise ValueError(f"class {label!r} is already known; remove it first")
        Z = self.transform(X)
        code = len(self.classes_)
        self.classes_ = [*self.classes_, label]
        self.enrolled_ = [*self.enrolled_, label]
        self.class_means_ = np.vstack([self.class_means_, Z.mean(axis=0)])
        self.class_counts_ = np.append(self.class_counts_, float(len(X)))
        self.class_bias_ = np.append(self.class_bias_, 0.0)
        bank = self._bank_decisions()
        margin = bank[:, code] - np.delete(bank, code, axis=1).max(axis=1)
        self.class_bias_[code] = -float(np.quantile(margin, 1.0 - self.enroll_false_rate))
        bank[:, code] += self.class_bias_[code]
        negatives = self._log_odds(bank)[:, code]
        self.verify_offsets_ = np.append(self.verify_offsets_, self._verify_offset(negatives))
        keep = np.arange(min(len(Z), self.bank_size))
        self.bank_ = np.vstack([self.bank_, Z[keep]])
        self.bank_labels_ = np.append(self.bank_labels_, np.full(len(keep), code))
        new_ids = list(ids) if ids is not None else [""] * len(X)
        self.bank_ids_ = [*self.bank_ids_, *(str(new_ids[i]) for i in keep)]
        return self

    def remove(self, label: str) -> "OpenSetHead":
        """Drop class ``label`` (and its exemplars)."""
        self.check_is_fitted()
        if label not in self.classes_:
            raise ValueError(f"no class {label!r}; known: {self.classes_}")
        if len(self.classes_) <= 2:
            raise ValueError("a head needs at least two classes")
        code = self.classes_.index(label)
        keep = np.arange(len(self.classes_)) != code
        self.classes_ = [c for c in self.classes_ if c != label]
        self.enrolled_ = [c for c in self.enrolled_ if c != label]
        self.class_means_, self.class_counts_ = self.class_means_[keep], self.class_counts_[keep]
        self.class_bias_ = self.class_bias_[keep]
        self.verify_offsets_ = self.verify_offsets_[keep]
        rows = self.bank_labels_ != code
        self.bank_, self.bank_ids_ = self.bank_[rows], [i for i, r in zip(self.bank_ids_, rows) if r]
        labels = self.bank_labels_[rows]
        self.bank_labels_ = labels - (labels > code)
        return self

    @classmethod
    def from_state(cls, params: dict, meta: dict, arrays: dict[str, np.ndarray]) -> "OpenSetHead":
        # heads saved before enrolled classes were tracked treat every class as a training class
        return super().from_state(params, {"enrolled_": [], **meta}, arrays)

    # ---------------------------------------------------------------- scoring
    def transform(self, X: np.ndarray) -> np.ndarray:
        """Whitened features ``(n_samples, n_components)``."""
        if not hasattr(self, "projection_"):
            raise NotFittedError("OpenSetHead is not fitted yet; call fit first")
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.projection_

    def _likelihoods(self, Z: np.ndarray) -> np.ndarray:
        """Posterior-predictive log-likelihood of each class (covariance inflated by ``1 + 1/n_c`` for a class
        estimated from ``n_c`` samples), without the enrolled-class biases."""
        d = ((Z[:, None, :] - self.class_means_[None]) ** 2).sum(axis=2)
        return _predictive_log_likelihood(d, self.class_counts_, Z.shape[1])

    def _decisions(self, Z: np.ndarray) -> np.ndarray:
        return self._likelihoods(Z) + self.class_bias_

    def _bank_decisions(self) -> np.ndarray:
        """Decisions for the exemplar bank with each exemplar left out of its own class mean, so that
        thresholds set on the bank hold for images the head has never seen."""
        decisions = self._decisions(self.bank_)
        rows = np.flatnonzero(self.class_counts_[self.bank_labels_] > 1)
        own = self.bank_labels_[rows]
        n = self.class_counts_[own][:, None]
        loo_means = (n * self.class_means_[own] - self.bank_[rows]) / (n - 1)
        d = ((self.bank_[rows] - loo_means) ** 2).sum(axis=1)
        decisions[rows, own] = _predictive_log_likelihood(d, n[:, 0] - 1, self.bank_.shape[1]) + self.class_bias_[own]
        return decisions

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-likelihood of each class (posterior predictive, equal priors but for enrolled-class biases),
        ``(n_samples, n_classes)``."""
        return self._decisions(self.transform(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Temperature-calibrated class probabilities over the known classes."""
        self.check_is_fitted()
        return _softmax(self.decision_function(X) / self.temperature_)

    def _unknown_from_decisions(self, decisions: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """``1 - max`` of the flattened softmax, times ``1 - P(real)`` when ``real`` is a class: "unknown"
        means synthetic from an unknown generator, so a photo unlike every known one but more real than
        synthetic is not called unknown."""
        unknown = 1.0 - _softmax(decisions / self.unknown_temperature).max(axis=1)
        if REAL in classes:
            unknown *= 1.0 - _softmax(decisions / self.temperature_)[:, list(classes).index(REAL)]
        return unknown

    def _unknown_from_likelihoods(self, likelihoods: np.ndarray) -> np.ndarray:
        base = np.array([c not in self.enrolled_ for c in self.classes_])
        unknown = self._unknown_from_decisions(likelihoods[:, base], np.asarray(self.classes_)[base].tolist())
        if base.all():
            return unknown
        return np.minimum(unknown, self._unknown_from_decisions(likelihoods + self.class_bias_, self.classes_))

    def _distance_from_likelihoods(self, likelihoods: np.ndarray) -> np.ndarray:
        return -likelihoods.max(axis=1) / self.projection_.shape[1]

    def unknown_score(self, X: np.ndarray) -> np.ndarray:
        """``1 - max`` of a flattened softmax of the likelihoods, times ``1 - P(real)`` (higher = more
        likely synthetic from an unknown generator).

        The score over the training classes (the one ``offset_`` was calibrated on) is lowered, never
        raised, by enrolled classes: an image is as known as its best explanation, either by the
        training classes alone or by all classes with the enrolled-class biases. So enrolling never
        makes old-class images look unknown, and an image the new class claims is not rejected.
        """
        self.check_is_fitted()
        return self._unknown_from_likelihoods(self._likelihoods(self.transform(X)))

    def reject(self, X: np.ndarray) -> np.ndarray:
        """``True`` where a sample is ``unknown``: its :meth:`unknown_score` exceeds ``offset_``, or it lies
        farther from every class than ``distance_offset_`` and its best class is not ``real`` (a guard
        for synthetic inputs far outside the known world, which a softmax can still call confidently;
        a photo unlike every training photo is not called synthetic for that alone)."""
        likelihoods = self._likelihoods(self.transform(X))
        far = self._distance_from_likelihoods(likelihoods) > self.distance_offset_
        if REAL in self.classes_:
            far &= (likelihoods + self.class_bias_).argmax(axis=1) != self.classes_.index(REAL)
        return (self._unknown_from_likelihoods(likelihoods) > self.offset_) | far

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class names, or ``"unknown"`` where :meth:`reject` says so."""
        best = self.decision_function(X).argmax(axis=1)
        labels = np.asarray(self.classes_, dtype=object)[best]
        labels[self.reject(X)] = UNKNOWN
        return labels

    def _log_odds(self, decisions: np.ndarray) -> np.ndarray:
        """``log p_c - log(1 - p_c)`` for every class under the calibrated temperature."""
        z = decisions / self.temperature_
        out = np.empty_like(z)
        for c in range(z.shape[1]):
            out[:, c] = z[:, c] - logsumexp(np.delete(z, c, axis=1), axis=1)
        return out

    def score_samples(self, X: np.ndarray, label: str) -> np.ndarray:
        """Verification score for "made by ``label``": the log-odds of that class; higher = more likely."""
        self.check_is_fitted()
        return self._log_odds(self.decision_function(X))[:, self._code(label)]

    def verification_score(self, X: np.ndarray, label: str) -> np.ndarray:
        """``score_samples`` minus the class's offset: > 0 is a match at ``false_match_rate``."""
        return self.score_samples(X, label) - self.verify_offsets_[self._code(label)]

    def verification_negatives(self, label: str) -> np.ndarray:
        """Verification scores for ``label`` of the exemplar bank's other-class images (each left out of
        its own class mean): the negatives that false-match rates are read from."""
        self.check_is_fitted()
        code = self._code(label)
        scores = self._log_odds(self._bank_decisions())[:, code] - self.verify_offsets_[code]
        return scores[self.bank_labels_ != code]

    def nearest_exemplars(self, X: np.ndarray, k: int = 4) -> list[list[tuple[str, str, float]]]:
        """For each sample, the ``k`` closest bank exemplars as ``(class, id, distance)``."""
        self.check_is_fitted()
        Z = self.transform(X)
        d = np.sqrt(((Z[:, None, :] - self.bank_[None]) ** 2).sum(axis=2) / Z.shape[1])
        order = np.argsort(d, axis=1)[:, :k]
        return [[(self.classes_[self.bank_labels_[j]], self.bank_ids_[j], float(d[i, j])) for j in row]
                for i, row in enumerate(order)]

    def _code(self, label: str) -> int:
        if label not in self.classes_:
            raise ValueError(f"unknown class {label!r}; known: {self.classes_}")
        return self.classes_.index(label)
