"""The first question of the decision: is this image synthetic at all?

A linear probe (logistic regression on standardised features, as UnivFD's probe on frozen features)
over the head's features (or chosen columns of them), fitted on real photos against every generator
with real photos and generators weighted equally. Its two thresholds are calibrated on what the probe must generalise to:
scores of *held-out generators* (so few unseen-generator images fall below ``real_offset``) and of
*held-out kinds of real photo* (so few unseen-kind photos pass ``synthetic_offset``). Between the two
the honest answer is ``uncertain``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..constants import REAL


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sample weights giving real photos half the total weight and every generator class an equal share
    of the other half."""
    y = np.asarray(y, dtype=str)
    is_real = y == REAL
    generators = np.unique(y[~is_real])
    w = np.empty(len(y))
    w[is_real] = 0.5 / max(is_real.sum(), 1)
    for g in generators:
        w[y == g] = 0.5 / len(generators) / (y == g).sum()
    return w * len(y)


@dataclass
class ProbeThresholds:
    """``real_offset`` <= ``synthetic_offset``: below the first is real, from the second on synthetic."""

    real_offset: float
    synthetic_offset: float


def thresholds_from_scores(real_scores: np.ndarray, synthetic_scores: np.ndarray, real_false_rate: float,
                           synthetic_miss_rate: float, real_matched: np.ndarray | None = None) -> ProbeThresholds:
    """Thresholds from held-out scores (probabilities of "synthetic", 0-1).

    ``synthetic_offset`` lets ``real_false_rate`` of the held-out real photos pass as synthetic, counting
    those that ``real_matched`` marks as already called synthetic by other evidence (a class match): one
    budget for both. ``real_offset`` lets ``synthetic_miss_rate`` of the held-out generator images fall
    below it as real. When the two cross (the scores separate well), both become their midpoint: no
    uncertain band.
    """
    real_scores = np.asarray(real_scores, dtype=np.float64)
    matched = np.zeros(len(real_scores), bool) if real_matched is None else np.asarray(real_matched, bool)
    free = real_scores[~matched]
    allowed = real_false_rate * len(real_scores) - matched.sum()  # real photos the probe may still pass
    if len(free) == 0 or allowed <= 0:
        synthetic_offset = float(np.nextafter(free.max() if len(free) else 1.0, np.inf))
    else:
        synthetic_offset = float(np.quantile(free, max(0.0, 1.0 - allowed / len(free))))
    real_offset = float(np.quantile(synthetic_scores, synthetic_miss_rate))
    if real_offset > synthetic_offset:
        real_offset = synthetic_offset = (real_offset + synthetic_offset) / 2
    return ProbeThresholds(real_offset, synthetic_offset)


def fit_probe(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(mean, scale, coef, intercept)`` of a class-balanced logistic regression of synthetic vs real on
    ``X`` ``(n_samples, n_columns)``."""
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit((X - mean) / scale, np.asarray(y) != REAL, sample_weight=balanced_weights(y))
    return mean, scale, model.coef_[0].copy(), float(model.intercept_[0])


def probe_scores(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """Probability that each row of ``X`` is synthetic, ``(n_samples,)`` in 0-1."""
    z = ((X - mean) / scale) @ coef + intercept
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def probe_fitter(loss: str) -> Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """The probe's fitting function by its ``loss``: ``logistic`` (:func:`fit_probe`) or ``robust``
    (:func:`fit_robust_probe`). Raises ``ValueError`` for another name."""
    fitters = {"logistic": fit_probe, "robust": fit_robust_probe}
    if loss not in fitters:
        raise ValueError(f"probe_loss must be one of {sorted(fitters)}, not {loss!r}")
    return fitters[loss]


def held_out_units(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The default held-out unit of each row: its generator, or ``real/<group>`` for a real photo."""
    y = np.asarray(y, dtype=str)
    return np.where(y == REAL, np.char.add(f"{REAL}/", np.asarray(groups, dtype=str)), y)


def held_out_probe_scores(X: np.ndarray, y: np.ndarray, units: np.ndarray, C: float,
                          fit: Callable[..., tuple] = fit_probe) -> np.ndarray:
    """Each row's score from a probe fitted without its unit, ``(n_samples,)``: ``units`` names the held-out unit
    of every row (:func:`held_out_units`: each generator and each real-photo group alone; or the folds of a
    cross-fitted recipe, so the probe is held out exactly where the networks under it were). Raises
    ``ValueError`` when a unit leaves no real photo or no generator to fit on, or with fewer than two units of
    real photos or of generators."""
    y, units = np.asarray(y, dtype=str), np.asarray(units, dtype=str)
    scores = np.empty(len(y))
    for unit in np.unique(units):
        held = units == unit
        rest = y[~held]
        if not (rest == REAL).any() or (rest == REAL).all():
            raise ValueError("held-out calibration needs, without any one unit, real photos and a generator")
        scores[held] = probe_scores(X[held], *fit(X[~held], y[~held], C))
    if len(np.unique(units[y == REAL])) < 2 or len(np.unique(units[y != REAL])) < 2:
        raise ValueError("held-out calibration needs at least two units of real photos and two of generators")
    return scores


def fit_robust_probe(X: np.ndarray, y: np.ndarray, C: float, sam: bool = True, cvar_alpha: float = 0.3,
                     auc_weight: float = 1.0, steps: int = 300, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The linear probe trained as Santosh et al. 2024 train their detector (arXiv 2404.12908): the mean of the
    hardest ``cvar_alpha`` share of the class-balanced logistic losses (CVaR), plus ``auc_weight`` times a
    squared-hinge AUC loss over every (synthetic, real) pair, plus the L2 penalty of ``C``, minimised by Adam
    with sharpness-aware minimisation (SAM, rho 0.05) when ``sam``. Same ``(mean, scale, coef, intercept)``
    as :func:`fit_probe`. Needs torch."""
    import torch

    torch.manual_seed(seed)
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    Xs = torch.tensor((X - mean) / scale, dtype=torch.float32)
    target = torch.tensor(np.asarray(y) != REAL, dtype=torch.float32)
    weight = torch.tensor(balanced_weights(y), dtype=torch.float32)
    positive, negative = target.bool(), ~target.bool()
    w = torch.zeros(Xs.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.Adam([w, b], lr=0.01)
    penalty = 1.0 / (C * len(Xs))

    def loss() -> torch.Tensor:
        z = Xs @ w + b
        per_sample = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none") * weight
        k = max(1, int(round(cvar_alpha * len(per_sample))))
        cvar = per_sample.topk(k).values.mean()
        gap = z[positive][:, None] - z[negative][None, :]
        auc = torch.clamp(1.0 - gap, min=0.0).pow(2).mean()
        return cvar + auc_weight * auc + 0.5 * penalty * w.pow(2).sum()

    for _ in range(steps):
        optimiser.zero_grad()
        loss().backward()
        if sam:  # ascend to the worst nearby weights, take the gradient there, come back
            with torch.no_grad():
                grads = [p.grad.clone() for p in (w, b)]
                norm = torch.sqrt(sum(g.pow(2).sum() for g in grads)) + 1e-12
                shifts = [0.05 * g / norm for g in grads]
                for p, e in zip((w, b), shifts):
                    p.add_(e)
            optimiser.zero_grad()
            loss().backward()
            with torch.no_grad():
                for p, e in zip((w, b), shifts):
                    p.sub_(e)
        optimiser.step()
    return mean, scale, w.detach().numpy().astype(np.float64), float(b.detach()[0])
