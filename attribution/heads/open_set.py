"""Open-set attribution head: Gaussian classes with a shared, shrunk covariance (LDA family).

Why this model: the shared within-class covariance is learnt once from the training classes; a class
is then just a mean in the whitened space (:mod:`.geometry`). Few-shot enrollment adds a mean
(seconds, no refit, old classes untouched), class imbalance is neutralised by equal priors and by the
posterior-predictive correction for classes estimated from few samples, and the same distances give
the open-set (``unknown``) score and a one-class verification score per generator.

With a synthetic probe (:mod:`.synthetic`) the decision asks two questions: is the image synthetic,
and if so, which generator. A generator class whose verification score passes its threshold answers
the first question by itself (a *class match*), so an enrolled generator is attributed even where the
probe, which never saw it, is unsure; the thresholds are set so that all classes together pull in at
most ``match_real_rate`` of real photos from sources the head never saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ..constants import REAL, UNCERTAIN, UNKNOWN
from .base import BaseHead, NotFittedError
from .card import model_card
from .decision import (REASON_CLOSED_FAR, REASON_CLOSED_KNOWN, REASON_CLOSED_UNKNOWN, REASON_DISPUTED, REASON_FAR,
                       REASON_KNOWN, REASON_MATCH, REASON_REAL, REASON_UNCERTAIN, REASON_UNKNOWN, Decision)
from .geometry import (class_likelihoods, fit_geometry, fit_temperature, log_odds, predictive_log_likelihood,
                       softmax)
from .synthetic import held_out_probe_scores, held_out_units, probe_fitter, probe_scores, thresholds_from_scores

DISTANCE_ACCEPT_RATE = 0.995  # known-class images the far-from-everything guard lets through (out-of-fold)
SUPPORT_RATE = 0.99  # a class's own images (out of fold) within its radius: a match outside it decides nothing


def _rms(diff: np.ndarray) -> np.ndarray:
    """Root-mean-square over the last axis (a distance per whitened dimension)."""
    return np.sqrt((diff ** 2).mean(axis=-1))


@dataclass(frozen=True)
class ClassDelta:
    """One enrolled class as the rows it adds to a head (whitened space of that head): what a visitor's
    enrollment is stored as, apart from the head it extends (:meth:`OpenSetHead.class_delta`,
    :meth:`OpenSetHead.with_deltas`)."""

    label: str
    mean: np.ndarray  # (n_components,)
    count: float
    bias: float
    verify_offset: float
    bank: np.ndarray  # (n_exemplars, n_components)
    ids: tuple[str, ...] = ()  # the exemplars' ids (none: they have no id)


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
        Per-class verification threshold: at most this share of other-class images may match.
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
    synthetic_probe : bool
        Fit the synthetic probe and decide in two questions (needs ``real`` and at least two
        generators); ``False``: the single-question decision of earlier heads.
    synthetic_columns : (int, int) or None
        Feature columns ``[start, stop)`` the probe reads; ``None``: all of them.
    geometry_columns : (int, int) or None
        Feature columns ``[start, stop)`` the class geometry reads; ``None``: all of them (a feature
        source whose training images differ from new ones, such as out-of-fold network outputs, is
        left to the probe).
    probe_c : float
        Inverse regularisation of the probe's logistic regression.
    probe_loss : str
        ``logistic`` (class-balanced logistic regression, as UnivFD's probe) or ``robust`` (CVaR + AUC loss with
        sharpness-aware minimisation, Santosh et al. 2024: :func:`~.synthetic.fit_robust_probe`).
    real_false_rate : float
        Share of held-out kinds of real photo called synthetic, by the probe and class matches together.
    synthetic_miss_rate : float
        Share of held-out generators' images the real threshold lets pass as real.
    match_real_rate : float
        Share of held-out real photos that class matches may call synthetic: half of it for the training
        classes together, the rest for enrolled classes (each takes what the earlier ones left).
    class_match : bool
        Whether a class match answers "is it synthetic?" (and, for heads without a calibrated real-photo
        budget, keeps a match from being called ``real``); ``False``: the probe alone, as heads before.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(m, 1, (40, 8)) for m in (0, 4)])
    >>> head = OpenSetHead(n_components=8).fit(X, ["real"] * 40 + ["gan"] * 40)
    >>> head.predict(X[:1] + 50)[0]
    'unknown'
    """

    _array_attrs = ("mean_", "projection_", "class_means_", "class_counts_", "class_bias_", "verify_offsets_",
                    "bank_", "bank_labels_", "probe_mean_", "probe_scale_", "probe_coef_", "real_bank_", "class_radius_")
    _meta_attrs = ("classes_", "enrolled_", "offset_", "distance_offset_", "temperature_", "bank_ids_",
                   "probe_intercept_", "real_offset_", "synthetic_offset_", "real_sources_", "radius_ratio_")

    def __init__(self, n_components: int = 384, *, shrinkage: float | None = 0.2, unknown_temperature: float = 10.0,
                 accept_rate: float = 0.95, false_match_rate: float = 0.01, enroll_false_rate: float = 0.01,
                 bank_size: int = 64, n_folds: int = 5, random_state: int = 0,
                 synthetic_probe: bool = False, synthetic_columns: Sequence[int] | None = None,
                 geometry_columns: Sequence[int] | None = None, probe_c: float = 0.1,
                 real_false_rate: float = 0.02, synthetic_miss_rate: float = 0.10,
                 match_real_rate: float = 0.01, class_match: bool = True, probe_loss: str = "logistic") -> None:
        self.n_components = n_components
        self.shrinkage = shrinkage
        self.unknown_temperature = unknown_temperature
        self.accept_rate = accept_rate
        self.false_match_rate = false_match_rate
        self.enroll_false_rate = enroll_false_rate
        self.bank_size = bank_size
        self.n_folds = n_folds
        self.random_state = random_state
        self.synthetic_probe = synthetic_probe
        self.synthetic_columns = list(synthetic_columns) if synthetic_columns is not None else None
        self.geometry_columns = list(geometry_columns) if geometry_columns is not None else None
        self.probe_c = probe_c
        self.real_false_rate = real_false_rate
        self.synthetic_miss_rate = synthetic_miss_rate
        self.match_real_rate = match_real_rate
        self.class_match = class_match
        self.probe_loss = probe_loss

    # ----------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, y: Sequence[str], ids: Sequence[str] | None = None,
            groups: Sequence[str] | None = None, exemplars: Sequence[bool] | None = None,
            units: Sequence[str] | None = None) -> "OpenSetHead":
        """Learn the whitening, the class means, the synthetic probe and the calibrated thresholds.

        ``X`` is ``(n_samples, n_features)``; ``y`` the class names; ``ids`` optional names of the
        samples (file names) kept with the exemplar bank; ``groups`` the source of each real photo
        (e.g. the collection it comes from), for the leave-one-source-out calibration of the probe and
        of the class matches (default: five random groups, which is optimistic); ``exemplars`` marks the
        rows the exemplar bank may keep (default: all; changed copies of an image are fitted but are no
        exemplar to show); ``units`` the unit each row is held out with when the probe's thresholds are
        calibrated (default: its generator, or its group for a real photo; a cross-fitted recipe passes its
        folds). Raises ``ValueError`` for malformed input.
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
        groups = np.asarray(groups if groups is not None else [""] * len(y), dtype=str)
        if len(np.unique(groups[y == REAL])) < 2:  # no sources known: random groups, an optimistic calibration
            groups = np.random.default_rng(self.random_state).integers(0, 5, len(y)).astype(str)
        geometry = fit_geometry(X[:, self._geometry_columns], codes, self.n_components, self.shrinkage)
        self.mean_, self.projection_ = geometry.mean, geometry.projection
        self.class_means_, self.class_counts_ = geometry.class_means, geometry.class_counts
        self.class_bias_ = np.zeros(len(self.classes_))
        self._calibrate(X, codes)
        ids = np.asarray(ids if ids is not None else [""] * len(y), dtype=str)
        allowed = np.ones(len(y), bool) if exemplars is None else np.asarray(exemplars, bool)
        keep = self._sample_bank(np.where(allowed, codes, -1))
        self.bank_, self.bank_labels_ = self.transform(X[keep]), codes[keep].astype(np.int64)
        self.bank_ids_ = [str(i) for i in ids[keep]]
        is_real = y == REAL
        self.real_bank_ = self.transform(X[is_real]) if self.synthetic_probe else np.zeros((0, self.projection_.shape[1]))
        self.real_sources_ = [str(g) for g in groups[is_real]] if self.synthetic_probe else []
        self._fit_probe(X, y, held_out_units(y, groups) if units is None else np.asarray(units, dtype=str))
        return self

    def _fit_probe(self, X: np.ndarray, y: np.ndarray, units: np.ndarray) -> None:
        """The synthetic probe, the class-match thresholds of the generators (their union over held-out
        real sources within half of ``match_real_rate``), and the probe's thresholds from the scores of each
        row by a probe fitted without its unit (``units``), class matches counted in the real-photo budget
        (see :meth:`calibrate_synthetic` for thresholds from scores measured elsewhere)."""
        self.probe_mean_ = self.probe_scale_ = self.probe_coef_ = np.zeros(0)
        self.probe_intercept_ = self.real_offset_ = self.synthetic_offset_ = None
        if not self.synthetic_probe:
            return
        if REAL not in self.classes_ or len(self.classes_) < 3:
            raise ValueError("a synthetic probe needs real photos and at least two generators")
        Xs = X[:, self._probe_columns]
        fit = probe_fitter(self.probe_loss)
        held_out = held_out_probe_scores(Xs, y, units, self.probe_c, fit)
        self.probe_mean_, self.probe_scale_, self.probe_coef_, self.probe_intercept_ = fit(Xs, y, self.probe_c)
        generators = np.flatnonzero(self._generator_columns())
        is_real = y == REAL
        if not self.class_match:
            self.calibrate_synthetic(held_out[is_real], held_out[~is_real])
            return
        self.verify_offsets_ = self.verify_offsets_.copy()
        self.verify_offsets_[generators] = self._match_thresholds(generators, self.match_real_rate / 2)
        self.calibrate_synthetic(held_out[is_real], held_out[~is_real], self._real_matched())

    def calibrate_synthetic(self, real_scores: np.ndarray, synthetic_scores: np.ndarray,
                            real_matched: np.ndarray | None = None) -> "OpenSetHead":
        """Set ``real_offset_`` and ``synthetic_offset_`` from synthetic scores (0-1) of real photos and of
        generators' images that the probe (and everything under it) never saw, at ``real_false_rate``
        (real photos that ``real_matched`` marks as class matches count in it) and ``synthetic_miss_rate``."""
        t = thresholds_from_scores(np.asarray(real_scores), np.asarray(synthetic_scores), self.real_false_rate,
                                   self.synthetic_miss_rate, real_matched)
        self.real_offset_, self.synthetic_offset_ = t.real_offset, t.synthetic_offset
        return self

    @property
    def _probe_columns(self) -> slice:
        return slice(*self.synthetic_columns) if self.synthetic_columns is not None else slice(None)

    @property
    def _geometry_columns(self) -> slice:
        return slice(*self.geometry_columns) if self.geometry_columns is not None else slice(None)

    @property
    def has_probe(self) -> bool:
        """Whether the two-question decision (synthetic probe) is in use."""
        return getattr(self, "probe_intercept_", None) is not None

    @property
    def matches_decide(self) -> bool:
        """Whether class matches answer "is it synthetic?": heads with a probe whose match thresholds were
        calibrated on held-out real photos (heads saved before decide as they did)."""
        return self.class_match and self.has_probe and len(self.real_bank_) > 0

    def synthetic_score(self, X: np.ndarray) -> np.ndarray:
        """Probability that each image is synthetic, ``(n_samples,)`` in 0-1 (the probe; needs one)."""
        if not self.has_probe:
            raise NotFittedError("this head has no synthetic probe (fit it with synthetic_columns)")
        X = np.asarray(X, dtype=np.float64)
        return probe_scores(X[:, self._probe_columns], self.probe_mean_, self.probe_scale_,
                            self.probe_coef_, self.probe_intercept_)

    def _calibrate(self, X: np.ndarray, codes: np.ndarray) -> None:
        """Out-of-fold scores of the training data set the temperature and the thresholds (with a probe,
        the unknown threshold and the distance guard are set on generator images only: they answer the
        second question, which generator, for images already found synthetic)."""
        n_folds = int(min(self.n_folds, np.bincount(codes).min()))
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=self.random_state)
        decisions = np.zeros((len(X), len(self.classes_)))
        own = np.zeros(len(X))  # each row's distance to its own class (RMS per whitened dimension), out of fold
        Xg = X[:, self._geometry_columns]
        for train, held_out in folds.split(X, codes):
            fold = fit_geometry(Xg[train], codes[train], self.n_components, self.shrinkage)
            Z = fold.transform(Xg[held_out])
            decisions[held_out] = fold.likelihoods(Z)
            own[held_out] = _rms(Z - fold.class_means[codes[held_out]])
        self.temperature_ = fit_temperature(decisions, codes)
        median = np.array([np.median(own[codes == c]) for c in range(len(self.classes_))])
        self.class_radius_ = np.array([np.quantile(own[codes == c], SUPPORT_RATE) for c in range(len(self.classes_))])
        self.radius_ratio_ = float(np.median(self.class_radius_ / median))
        rows = self._generator_columns()[codes] if self.synthetic_probe else np.ones(len(codes), bool)
        self.offset_ = -float(np.quantile(self._unknown_from_decisions(decisions[rows], self.classes_),
                                          self.accept_rate))
        self.distance_offset_ = -float(np.quantile(self._distance_from_likelihoods(decisions[rows]),
                                                   DISTANCE_ACCEPT_RATE))
        scores = self._log_odds(decisions)
        self.verify_offsets_ = np.array([self._verify_offset(scores[codes != c, c])
                                         for c in range(len(self.classes_))])

    def _generator_columns(self, classes: Sequence[str] | None = None) -> np.ndarray:
        """Boolean mask of the classes that are generators (not ``real``)."""
        return np.asarray([c != REAL for c in (self.classes_ if classes is None else classes)])

    def _verify_offset(self, negative_scores: np.ndarray) -> float:
        return float(np.quantile(negative_scores, 1.0 - self.false_match_rate))

    def _sample_bank(self, codes: np.ndarray) -> np.ndarray:
        """Rows kept as exemplars: up to ``bank_size`` per class (code ``-1``: never), at random."""
        rng = np.random.default_rng(self.random_state)
        keep = np.concatenate([rng.permutation(np.flatnonzero(codes == c))[: self.bank_size]
                               for c in np.unique(codes[codes >= 0])])
        return np.sort(keep)

    # ----------------------------------------------------------- class matches
    def _real_bank_decisions(self) -> np.ndarray:
        """Decisions for the real photos the head was fitted on, each with its source left out of the real
        class mean (one photo left out when the sources are unknown), ``(n_real, n_classes)``: how real
        photos of a source the head never saw score."""
        decisions = self._decisions(self.real_bank_)
        if not len(decisions):
            return decisions
        code = self.classes_.index(REAL)
        n, mean = self.class_counts_[code], self.class_means_[code]
        sources = np.asarray(self.real_sources_)
        keys = sources if len(np.unique(sources)) > 1 else np.arange(len(sources)).astype(str)
        for key in np.unique(keys):
            rows = keys == key
            left = n - rows.sum()
            if left < 1:
                continue
            loo_mean = (n * mean - self.real_bank_[rows].sum(axis=0)) / left
            d = ((self.real_bank_[rows] - loo_mean) ** 2).sum(axis=1)
            decisions[rows, code] = predictive_log_likelihood(d, left, self.real_bank_.shape[1]) + self.class_bias_[code]
        return decisions

    def real_negatives(self, label: str) -> np.ndarray:
        """:meth:`class_log_odds` for ``label`` of the real photos the head was fitted on, each source left out
        of the real class, ``(n_real,)``: the false-match rate on real photos alone is read from them."""
        self.check_is_fitted()
        return self._log_odds(self._real_bank_decisions())[:, self._code(label)]

    def _real_matched(self) -> np.ndarray:
        """Which real photos of the bank (source left out) any generator class matches, ``(n_real,)``."""
        if not len(self.real_bank_):
            return np.zeros(0, bool)
        generators = self._generator_columns()
        scores = self._log_odds(self._real_bank_decisions())
        return (scores[:, generators] >= self.verify_offsets_[generators]).any(axis=1)

    def _match_thresholds(self, codes: np.ndarray, budget: float) -> np.ndarray:
        """Thresholds of classes ``codes``, each at least its false-match offset, raised by one common real-photo
        rate until the real photos matched by them or by the other generator classes make at most ``budget``
        of the real bank (sources left out)."""
        scores = self._log_odds(self._real_bank_decisions())
        others = self._generator_columns().copy()
        others[codes] = False
        taken = (scores[:, others] >= self.verify_offsets_[others]).any(axis=1)
        S, floor = scores[:, codes], self.verify_offsets_[codes]
        allowed = int(np.floor(budget * len(scores) + 1e-9))

        def thresholds(rate: float) -> np.ndarray:
            top = np.nextafter(S.max(axis=0), np.inf)
            return np.maximum(floor, top if rate <= 0 else np.quantile(S, 1.0 - rate, axis=0))

        def matched(rate: float) -> int:
            return int((taken | (S >= thresholds(rate)).any(axis=1)).sum())

        lo, hi = 0.0, 1.0
        if matched(hi) <= allowed:
            return thresholds(hi)
        for _ in range(40):  # the largest common rate whose union stays within the budget
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if matched(mid) <= allowed else (lo, mid)
        return thresholds(lo)

    # -------------------------------------------------------------- enrollment
    def enroll(self, X: np.ndarray, label: str, ids: Sequence[str] | None = None) -> "OpenSetHead":
        """Add class ``label`` from a few samples ``X`` ``(n_samples, n_features)`` without touching the other
        classes; raises ``ValueError`` for fewer than 2 samples or a known label."""
        self.check_is_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError("enrollment needs at least 2 samples as an (n_samples, n_features) array")
        if label in self.classes_:
            raise ValueError(f"class {label!r} is already known; remove it first")
        Z = self.transform(X)
        keep = np.arange(min(len(Z), self.bank_size))
        new_ids = list(ids) if ids is not None else [""] * len(X)
        self._append(label, Z.mean(axis=0), float(len(X)), None, None, Z[keep], [str(new_ids[i]) for i in keep])
        return self

    def _append(self, label: str, mean: np.ndarray, count: float, bias: float | None, verify_offset: float | None,
                bank: np.ndarray, ids: Sequence[str]) -> None:
        """Add an enrolled class's rows; a bias or offset of ``None`` is computed here (the bias by
        ``enroll_false_rate``, the offset by ``false_match_rate`` and the real-photo budget), a given offset
        is never lowered below what the real-photo budget needs."""
        code = len(self.classes_)
        self.classes_ = [*self.classes_, label]
        self.enrolled_ = [*self.enrolled_, label]
        self.class_means_ = np.vstack([self.class_means_, mean[None]])
        self.class_counts_ = np.append(self.class_counts_, count)
        self.class_bias_ = np.append(self.class_bias_, 0.0 if bias is None else bias)
        self.verify_offsets_ = np.append(self.verify_offsets_, -np.inf)
        self.class_radius_ = np.append(self.class_radius_, self._enrolled_radius(mean, count, bank))
        bank_decisions = self._bank_decisions()
        if bias is None:
            margin = bank_decisions[:, code] - np.delete(bank_decisions, code, axis=1).max(axis=1)
            self.class_bias_[code] = -float(np.quantile(margin, 1.0 - self.enroll_false_rate))
            bank_decisions[:, code] += self.class_bias_[code]
        offset = self._verify_offset(self._log_odds(bank_decisions)[:, code]) if verify_offset is None else verify_offset
        self.verify_offsets_[code] = offset
        if self.matches_decide:
            self.verify_offsets_[code] = self._match_thresholds(np.array([code]), self.match_real_rate)[0]
        self.bank_ = np.vstack([self.bank_, bank])
        self.bank_labels_ = np.append(self.bank_labels_, np.full(len(bank), code))
        self.bank_ids_ = [*self.bank_ids_, *ids]

    def _enrolled_radius(self, mean: np.ndarray, count: float, bank: np.ndarray) -> float:
        """Support radius of an enrolled class: the median distance of its exemplars to its mean, each left out of
        it, times the training classes' ratio of radius to median (``inf`` for heads saved without radii)."""
        if self.radius_ratio_ is None or count < 2 or not len(bank):
            return float("inf")
        loo = (count * mean - bank) / (count - 1)
        return float(np.median(_rms(bank - loo)) * self.radius_ratio_)

    def class_delta(self, label: str) -> ClassDelta:
        """The rows enrolled class ``label`` added to this head. Raises ``ValueError`` for another label."""
        code = self._code(label)
        if label not in self.enrolled_:
            raise ValueError(f"{label!r} is a training class, not an enrolled one")
        rows = self.bank_labels_ == code
        return ClassDelta(label, np.array(self.class_means_[code]), float(self.class_counts_[code]),
                          float(self.class_bias_[code]), float(self.verify_offsets_[code]), np.array(self.bank_[rows]),
                          tuple(i for i, r in zip(self.bank_ids_, rows) if r))

    def with_deltas(self, deltas: Sequence[ClassDelta]) -> "OpenSetHead":
        """A new head: this one with the classes of ``deltas`` appended in order (this head is unchanged);
        the same head :meth:`enroll` made, thresholds included. Raises ``ValueError`` when a delta does not
        fit (dimension, duplicate label, invalid values)."""
        head = self.clone()
        dim = self.class_means_.shape[1]
        for delta in deltas:
            mean, rows = np.asarray(delta.mean, np.float64), np.asarray(delta.bank, np.float64)
            if delta.label in head.classes_:
                raise ValueError(f"class {delta.label!r} is already known")
            if mean.shape != (dim,) or rows.ndim != 2 or rows.shape[1] != dim or len(delta.ids) not in (0, len(rows)):
                raise ValueError(f"enrollment {delta.label!r} does not fit this head ({dim} dimensions, an id per "
                                 "exemplar or none)")
            values = np.concatenate([mean, rows.ravel(), [delta.count, delta.bias, delta.verify_offset]])
            if not np.isfinite(values).all() or delta.count < 2:
                raise ValueError(f"enrollment {delta.label!r} holds invalid values")
            head._append(delta.label, mean, float(delta.count), float(delta.bias), float(delta.verify_offset),
                         rows, list(delta.ids) or [""] * len(rows))
        return head

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
        self.verify_offsets_, self.class_radius_ = self.verify_offsets_[keep], self.class_radius_[keep]
        rows = self.bank_labels_ != code
        self.bank_, self.bank_ids_ = self.bank_[rows], [i for i, r in zip(self.bank_ids_, rows) if r]
        labels = self.bank_labels_[rows]
        self.bank_labels_ = labels - (labels > code)
        return self

    @classmethod
    def upgrade_state(cls, meta: dict, arrays: dict[str, np.ndarray], version: int
                      ) -> tuple[dict, dict[str, np.ndarray]]:
        """Heads of ``format_version`` 1 kept ``offset_`` and ``distance_offset_`` as thresholds on the
        unknown score and the distance (higher = worse); they are negated into scikit-learn's convention.
        Heads saved before enrolled classes were tracked treat every class as a training class, heads
        saved before the synthetic probe decide with one question, and heads saved before class matches
        were calibrated on real photos (no ``real_bank_``) decide without them."""
        if version < 2:
            meta = {**meta, "offset_": -meta["offset_"], "distance_offset_": -meta["distance_offset_"]}
        empty = np.zeros(0)
        dim = np.asarray(arrays["class_means_"]).shape[1]
        n_classes = np.asarray(arrays["class_means_"]).shape[0]
        arrays = {"probe_mean_": empty, "probe_scale_": empty, "probe_coef_": empty, "real_bank_": np.zeros((0, dim)),
                  "class_radius_": np.full(n_classes, np.inf), **arrays}
        meta = {"enrolled_": [], "probe_intercept_": None, "real_offset_": None, "synthetic_offset_": None,
                "real_sources_": [], "radius_ratio_": None, **meta}
        return meta, arrays

    def model_card(self, config: dict) -> str:
        """``README.md`` of a zoo head: classes, the decision and its thresholds, training data, metrics."""
        return model_card(config)

    # ---------------------------------------------------------------- scoring
    def transform(self, X: np.ndarray) -> np.ndarray:
        """Whitened features ``(n_samples, n_components)`` of ``X`` ``(n_samples, n_features)``."""
        if not hasattr(self, "projection_"):
            raise NotFittedError("OpenSetHead is not fitted yet; call fit first")
        return (np.asarray(X, dtype=np.float64)[:, self._geometry_columns] - self.mean_) @ self.projection_

    def _likelihoods(self, Z: np.ndarray) -> np.ndarray:
        """Posterior-predictive log-likelihood of each class (covariance inflated by ``1 + 1/n_c`` for a class
        estimated from ``n_c`` samples), without the enrolled-class biases."""
        return class_likelihoods(Z, self.class_means_, self.class_counts_)

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
        decisions[rows, own] = predictive_log_likelihood(d, n[:, 0] - 1, self.bank_.shape[1]) + self.class_bias_[own]
        return decisions

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-likelihood of each class (posterior predictive, equal priors but for enrolled-class biases),
        ``(n_samples, n_classes)``."""
        return self._decisions(self.transform(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``: the temperature-calibrated softmax of
        :meth:`decision_function`, or with a probe ``P(real) = 1 - synthetic score`` and each generator
        ``synthetic score x P(generator | synthetic)``."""
        return self.decide(X).proba

    def _unknown_from_decisions(self, decisions: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """``1 - max`` of the flattened softmax. With a probe it runs over the generators alone (is this
        synthetic image one of theirs?); without one it is scaled by ``1 - P(real)``, so a photo unlike
        every known one but more real than synthetic is not called unknown."""
        if self.synthetic_probe:
            return 1.0 - softmax(decisions[:, self._generator_columns(classes)] / self.unknown_temperature).max(axis=1)
        unknown = 1.0 - softmax(decisions / self.unknown_temperature).max(axis=1)
        if REAL in classes:
            unknown *= 1.0 - softmax(decisions / self.temperature_)[:, list(classes).index(REAL)]
        return unknown

    def _unknown_from_likelihoods(self, likelihoods: np.ndarray) -> np.ndarray:
        base = np.array([c not in self.enrolled_ for c in self.classes_])
        unknown = self._unknown_from_decisions(likelihoods[:, base], np.asarray(self.classes_)[base].tolist())
        if base.all():
            return unknown
        return np.minimum(unknown, self._unknown_from_decisions(likelihoods + self.class_bias_, self.classes_))

    def _distance_from_likelihoods(self, likelihoods: np.ndarray) -> np.ndarray:
        """Distance to the nearest class (the nearest generator, with a probe), per whitened dimension."""
        if self.synthetic_probe:
            likelihoods = likelihoods[:, self._generator_columns()]
        return -likelihoods.max(axis=1) / self.projection_.shape[1]

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """How well the known classes explain each sample, ``(n_samples,)`` in -1-0: the negated
        :meth:`unknown_score` (scikit-learn's outlier convention, as ``IsolationForest.score_samples``).
        ``score_samples(X) - offset_ < 0`` is the unknown-score rule of :meth:`decide`."""
        return -self.unknown_score(X)

    def unknown_score(self, X: np.ndarray) -> np.ndarray:
        """``1 - max`` of a flattened softmax of the likelihoods (over the generators, with a probe; else
        times ``1 - P(real)``), ``(n_samples,)`` in 0-1: higher = more likely from an unknown generator.

        The score over the training classes (the one ``-offset_`` was calibrated on) is lowered, never
        raised, by enrolled classes: an image is as known as its best explanation, either by the
        training classes alone or by all classes with the enrolled-class biases. So enrolling never
        makes old-class images look unknown, and an image the new class claims is not rejected.
        """
        self.check_is_fitted()
        return self._unknown_from_likelihoods(self._likelihoods(self.transform(X)))

    def decide(self, X: np.ndarray, nearest: int = 0) -> Decision:
        """Label, probabilities, scores, thresholds, the deciding rule and (``nearest`` > 0) the nearest
        exemplars of every row of ``X`` ``(n_samples, n_features)``, from one projection of the batch.

        With a synthetic probe the decision asks two questions. 1) Is it synthetic? Yes when a generator
        class matches (its verification score, :meth:`class_log_odds`, passes ``verify_offsets_``) or the
        synthetic score reaches ``synthetic_offset_``; ``real`` when neither holds and the synthetic score
        is below ``real_offset_``; else ``uncertain`` (heads whose matches were not calibrated on real photos,
        saved before that: a match alone never makes the image synthetic, nor ever ``real``: reason
        ``class_match_disagrees``). 2) If synthetic, which known generator? The matched
        class furthest above its threshold, else the most likely generator; ``unknown`` when the unknown
        score passes ``-offset_`` or the image is farther from every generator than ``-distance_offset_``.
        Without a probe (earlier heads): the most likely class, or ``unknown`` by the same two rules (the
        guard sparing images whose best class is ``real``).
        """
        self.check_is_fitted()
        Z = self.transform(X)
        likelihoods = self._likelihoods(Z)
        decisions = likelihoods + self.class_bias_
        unknown = self._unknown_from_likelihoods(likelihoods)
        far = -self._distance_from_likelihoods(likelihoods) < self.distance_offset_
        above = -unknown < self.offset_
        neighbours = self._nearest(Z, nearest) if nearest else None
        classes = np.asarray(self.classes_, dtype=object)
        if not self.has_probe:
            best = decisions.argmax(axis=1)
            if REAL in self.classes_:
                far &= best != self.classes_.index(REAL)
            labels = classes[best]
            reasons = np.full(len(labels), REASON_CLOSED_KNOWN, dtype=object)
            reasons[far] = REASON_CLOSED_FAR
            reasons[above] = REASON_CLOSED_UNKNOWN
            labels[above | far] = UNKNOWN
            return Decision(labels, softmax(decisions / self.temperature_), unknown, -self.offset_, None, None, None,
                            reasons, neighbours)
        generators = self._generator_columns()
        synthetic = self.synthetic_score(X)
        p_generator = softmax(decisions[:, generators] / self.temperature_)
        proba = np.zeros_like(decisions)
        proba[:, ~generators] = (1.0 - synthetic)[:, None]
        proba[:, generators] = synthetic[:, None] * p_generator
        scores = self._log_odds(decisions)
        margins = np.where(generators, scores - self.verify_offsets_, -np.inf)
        best = margins.argmax(axis=1)
        rows = np.arange(len(X))
        any_match = (margins[rows, best] >= 0) & self.class_match
        inside = _rms(Z - self.class_means_[best]) <= self.class_radius_[best]  # the image looks like that class's
        matched = any_match & inside & self.matches_decide
        labels = np.full(len(X), UNCERTAIN, dtype=object)
        reasons = np.full(len(X), REASON_UNCERTAIN, dtype=object)
        is_real = (synthetic < self.real_offset_) & ~any_match
        labels[is_real], reasons[is_real] = REAL, REASON_REAL
        reasons[any_match & ~matched] = REASON_DISPUTED  # a match that cannot decide: never real, and said why
        is_synthetic = (synthetic >= self.synthetic_offset_) | matched
        labels[is_synthetic] = classes[generators][p_generator.argmax(axis=1)][is_synthetic]
        reasons[is_synthetic] = REASON_KNOWN
        labels[matched], reasons[matched] = classes[best][matched], REASON_MATCH
        for mask, reason in ((is_synthetic & above, REASON_UNKNOWN), (is_synthetic & far, REASON_FAR)):
            labels[mask], reasons[mask] = UNKNOWN, reason
        return Decision(labels, proba, unknown, -self.offset_, synthetic, self.real_offset_, self.synthetic_offset_,
                        reasons, neighbours, match_class=classes[best], match_score=scores[rows, best],
                        match_threshold=self.verify_offsets_[best], match_margin=margins[rows, best],
                        match_inside=inside)

    def reject(self, X: np.ndarray) -> np.ndarray:
        """``True`` where :meth:`decide` labels a sample ``unknown``."""
        return self.decide(X).labels == UNKNOWN

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Labels of :meth:`decide`: a class, ``unknown`` or (with a probe) ``uncertain``."""
        return self.decide(X).labels

    def _log_odds(self, decisions: np.ndarray) -> np.ndarray:
        """``log p_c - log(1 - p_c)`` for every class under the calibrated temperature."""
        return log_odds(decisions / self.temperature_)

    def class_log_odds(self, X: np.ndarray) -> np.ndarray:
        """``log p_c - log(1 - p_c)`` of every class, ``(n_samples, n_classes)``: the black-box verification
        score of "made by class c" (higher = more likely), a match from ``verify_offsets_[c]`` on (set at
        ``false_match_rate`` and within the real-photo budget; see
        :class:`attribution.verification.BlackBoxVerifier`)."""
        self.check_is_fitted()
        return self._log_odds(self.decision_function(X))

    def verification_negatives(self, label: str) -> np.ndarray:
        """:meth:`class_log_odds` for ``label`` of the exemplar bank's other-class images (each left out of
        its own class mean), ``(n_negatives,)``: the negatives that false-match rates are read from."""
        self.check_is_fitted()
        code = self._code(label)
        scores = self._log_odds(self._bank_decisions())[:, code]
        return scores[self.bank_labels_ != code]

    def nearest_exemplars(self, X: np.ndarray, k: int = 4) -> list[list[tuple[str, str, float]]]:
        """For each sample, the ``k`` closest bank exemplars as ``(class, id, distance)`` (distance: RMS
        per whitened dimension)."""
        self.check_is_fitted()
        return self._nearest(self.transform(X), k)

    def _nearest(self, Z: np.ndarray, k: int) -> list[list[tuple[str, str, float]]]:
        d = np.sqrt(((Z[:, None, :] - self.bank_[None]) ** 2).sum(axis=2) / Z.shape[1])
        order = np.argsort(d, axis=1)[:, :k]
        return [[(self.classes_[self.bank_labels_[j]], self.bank_ids_[j], float(d[i, j])) for j in row]
                for i, row in enumerate(order)]

    def _code(self, label: str) -> int:
        if label not in self.classes_:
            raise ValueError(f"unknown class {label!r}; known: {self.classes_}")
        return self.classes_.index(label)
