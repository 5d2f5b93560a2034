"""The LDA-family geometry of the open-set head, as pure functions.

Features are projected on their principal components and whitened by the shrunk within-class
covariance, so every class is a mean in a space where its spread is the identity. Class scores are
posterior-predictive Gaussian log-likelihoods of the squared distance to each mean (the unit covariance
inflated by ``1 + 1/n_c`` for a class estimated from ``n_c`` samples), which keeps a 5-shot class fair
next to 200-image classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import ledoit_wolf


@dataclass(frozen=True)
class Geometry:
    """Whitening and class means: ``mean`` (n_features,), ``projection`` (n_features, k), ``class_means``
    (n_classes, k), ``class_counts`` (n_classes,)."""

    mean: np.ndarray
    projection: np.ndarray
    class_means: np.ndarray
    class_counts: np.ndarray

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Whitened features ``(n_samples, k)`` of ``X`` ``(n_samples, n_features)``."""
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.projection

    def likelihoods(self, Z: np.ndarray) -> np.ndarray:
        """Posterior-predictive log-likelihood of each class for whitened ``Z``, ``(n_samples, n_classes)``."""
        return class_likelihoods(Z, self.class_means, self.class_counts)


def fit_geometry(X: np.ndarray, codes: np.ndarray, n_components: int, shrinkage: float | None) -> Geometry:
    """PCA to at most ``n_components`` dimensions, then whitening by the within-class covariance shrunk
    towards the identity by ``shrinkage`` (``None``: Ledoit-Wolf). ``X`` is ``(n_samples, n_features)``
    float64, ``codes`` the class index of each row (every class present)."""
    mean = X.mean(axis=0)
    centred = X - mean
    n_classes = int(codes.max()) + 1
    k = int(min(n_components, X.shape[1], len(X) - n_classes))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = vt[:k].T
    P = centred @ pcs
    means = np.stack([P[codes == c].mean(axis=0) for c in range(n_classes)])
    within = P - means[codes]
    if shrinkage is None:
        cov, _ = ledoit_wolf(within, assume_centered=True)
    else:
        sample = within.T @ within / max(len(within) - n_classes, 1)
        cov = (1 - shrinkage) * sample + shrinkage * np.trace(sample) / k * np.eye(k)
    whiten = np.linalg.inv(np.linalg.cholesky(cov)).T  # z = p @ whiten has identity within-class covariance
    return Geometry(mean, pcs @ whiten, means @ whiten, np.bincount(codes, minlength=n_classes).astype(np.float64))


def predictive_log_likelihood(sq_distance: np.ndarray, counts: np.ndarray, dim: int) -> np.ndarray:
    """Gaussian log-likelihood (up to a constant) of a squared whitened distance to a class mean estimated
    from ``counts`` samples: the posterior predictive inflates the unit covariance by ``1 + 1/count``."""
    inflation = 1.0 + 1.0 / counts
    return -0.5 * sq_distance / inflation - 0.5 * dim * np.log(inflation)


def class_likelihoods(Z: np.ndarray, class_means: np.ndarray, class_counts: np.ndarray) -> np.ndarray:
    """:func:`predictive_log_likelihood` of every row of ``Z`` for every class mean, ``(n_samples, n_classes)``."""
    d = ((Z[:, None, :] - class_means[None]) ** 2).sum(axis=2)
    return predictive_log_likelihood(d, class_counts, Z.shape[1])


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n_samples, n_classes)`` scores."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_odds(z: np.ndarray) -> np.ndarray:
    """``log p_c - log(1 - p_c)`` of every column under ``p = softmax(z)``, ``(n_samples, n_classes)``."""
    out = np.empty_like(z)
    for c in range(z.shape[1]):
        out[:, c] = z[:, c] - logsumexp(np.delete(z, c, axis=1), axis=1)
    return out


def fit_temperature(decisions: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``softmax(decisions / T)`` for labels ``y``
    (golden-section search on log T in [-3, 8])."""
    def nll(log_t: float) -> float:
        p = softmax(decisions / np.exp(log_t))
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
