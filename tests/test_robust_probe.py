"""The robust synthetic probe (CVaR + AUC loss with SAM, after Santosh et al. 2024), as `train --loss robust`."""
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conftest import spectra_head

from attribution.constants import REAL
from attribution.heads.synthetic import fit_probe, fit_robust_probe, probe_fitter


def blobs(seed: int = 0, n: int = 120, hard: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Real photos and two generators in 6 dimensions, separable along column 0, plus ``hard`` generator rows
    placed among the real photos (the hard examples CVaR weighs up)."""
    rng = np.random.default_rng(seed)
    real = rng.normal(0, 1, (n, 6))
    gen = rng.normal(0, 1, (n, 6))
    gen[:, 0] += 3.0
    gen[:hard, 0] -= 2.5
    return np.vstack([real, gen]), np.array([REAL] * n + ["gen_a"] * (n // 2) + ["gen_b"] * (n - n // 2))


def score(params: tuple, X: np.ndarray) -> np.ndarray:
    mean, scale, coef, intercept = params
    return ((X - mean) / scale) @ coef + intercept


def test_robust_probe_separates_held_out_rows_as_well_as_the_logistic_one():
    X, y = blobs(0)
    X_test, y_test = blobs(1)
    robust, logistic = fit_robust_probe(X, y, C=0.1, steps=200), fit_probe(X, y, C=0.1)
    auc = {name: roc_auc_score(y_test != REAL, score(p, X_test)) for name, p in (("robust", robust),
                                                                               ("logistic", logistic))}
    assert auc["robust"] > 0.9 and auc["robust"] >= auc["logistic"] - 0.02, auc
    assert score(robust, X_test[y_test != REAL]).mean() > score(robust, X_test[y_test == REAL]).mean()


def test_robust_probe_is_seeded_and_named():
    X, y = blobs(0)
    a, b = fit_robust_probe(X, y, C=0.1, steps=50, seed=3), fit_robust_probe(X, y, C=0.1, steps=50, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a[:3], b[:3])) and a[3] == b[3]
    assert probe_fitter("robust") is fit_robust_probe
    with pytest.raises(ValueError, match="probe_loss"):
        probe_fitter("hinge")


def test_train_loss_robust_fits_the_head_with_the_robust_probe(tmp_path):
    config = json.loads((spectra_head(tmp_path, "--loss", "robust") / "config.json").read_text())
    assert config["head"]["params"]["probe_loss"] == "robust"
    assert config["head"]["state"]["synthetic_offset_"] is not None  # the probe was fitted and calibrated
