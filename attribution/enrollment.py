"""What an enrollment is worth, where an enrolled class is recorded, and which head enrollments belong to.

Everything here uses the head's public methods and fitted state (``clone``, ``enroll``, ``decide``,
``state_dict``/``meta_dict``), so it works for any head with the :class:`~attribution.heads.OpenSetHead`
layout; an enrolled class as the rows it adds to a head is the head's own
(:meth:`~attribution.heads.OpenSetHead.class_delta`, :meth:`~attribution.heads.OpenSetHead.with_deltas`).

* :func:`enrollment_report` says how separable a new generator is before it is kept: the left-out
  recall of its own images through the full decision, the share of them that would be called
  ``real`` or ``uncertain``, and the known class that takes most of them, with a warning under the
  documented rules (:data:`WARN_SHARE` / :data:`WARN_PROBA`, :data:`WARN_NOT_FLAGGED`).
* :func:`enrolled_config` records an enrolled class in a head's config; :func:`head_fingerprint` names
  the head a visitor's enrollments belong to.

(The false-match rate at a verification score is :func:`attribution.verification.false_match_rate_at`.)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import REAL, UNCERTAIN
from .heads import OpenSetHead

WARN_SHARE = 0.5  # warn when at least this share of the images ...
WARN_PROBA = 0.8  # ... goes to one known class with at least this probability
WARN_NOT_FLAGGED = 0.2  # warn when at least this share of the left-out images would be called real or uncertain
MAX_RECALL_FOLDS = 10


@dataclass(frozen=True)
class EnrollmentReport:
    """How a new generator ``label`` stands against the classes a head already knows."""

    expected_recall: float  # share of its images attributed to it when each is left out of its enrollment
    closest_class: str  # known class that takes most of its images before it is enrolled
    closest_class_share: float  # share of its images that class takes
    warning: str | None = None  # set by the rules of WARN_SHARE / WARN_PROBA and WARN_NOT_FLAGGED
    expected_real_or_uncertain: float | None = None  # share of the left-out images called real or uncertain


def enrollment_report(head: OpenSetHead, X: np.ndarray, label: str) -> EnrollmentReport:
    """Left-out recall, left-out share called ``real`` or ``uncertain``, and closest known class of the images
    ``X`` ``(n_images, n_features)`` enrolled as ``label`` on ``head``.

    ``head`` is the head *before* the enrollment (it is not changed). Recall is measured with up to
    :data:`MAX_RECALL_FOLDS` folds: each fold's images are held out, the class is enrolled from the rest
    and the held-out images go through the full decision (``head.predict``): they count when they get
    ``label`` (so ``unknown`` is a miss), and as not flagged when they get ``real`` or ``uncertain``.
    The warning rules: at least ``WARN_SHARE`` of the images are attributed to one known class (``predict``
    gives that class, not ``unknown``) with probability at least ``WARN_PROBA``; or at least
    ``WARN_NOT_FLAGGED`` of them would be called ``real`` or ``uncertain``.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    folds = np.arange(n) % min(n, MAX_RECALL_FOLDS)
    hits = not_flagged = 0
    for fold in np.unique(folds):
        held_out = folds == fold
        labels = head.clone().enroll(X[~held_out], label).predict(X[held_out])
        hits += int((labels == label).sum())
        not_flagged += int(np.isin(labels, [REAL, UNCERTAIN]).sum())
    decision = head.decide(X)  # labels and probabilities from one projection of the batch
    proba = decision.proba
    top = proba.argmax(axis=1)
    counts = np.bincount(top, minlength=len(head.classes_))
    closest = int(counts.argmax())
    attributed = (decision.labels == np.asarray(head.classes_, dtype=object)[top]) & (proba.max(axis=1) >= WARN_PROBA)
    confident = np.bincount(top[attributed], minlength=len(head.classes_))
    recall, unflagged = hits / n, not_flagged / n
    warnings = []
    if confident.max() >= WARN_SHARE * n:
        taker = head.classes_[int(confident.argmax())]
        warnings.append(
            f"{confident.max()} of {n} images are attributed to the known class {taker!r} with probability "
            f">= {WARN_PROBA:.0%}, so they look like that class; " + (
                f"enrolled as {label!r}, only {recall:.0%} of them would be recognised when left out: it may "
                f"be the same source as {taker!r}" if recall < 0.5 else
                f"enrolled as {label!r}, {recall:.0%} of them would still be recognised when left out: make "
                f"sure they are not images of {taker!r}"))
    if unflagged >= WARN_NOT_FLAGGED:
        warnings.append(f"{unflagged:.0%} of the images, each left out of the enrollment, would be called 'real' or "
                        f"'uncertain': the head finds too little of {label!r} in them to attribute its new images "
                        "reliably; enroll more (and more varied) images of it")
    share = round(float(counts[closest] / n), 4)
    return EnrollmentReport(round(recall, 4), str(head.classes_[closest]), share, "; ".join(warnings) or None,
                            round(unflagged, 4))


def enrolled_config(config: dict[str, Any], base_name: str, label: str, info: dict[str, Any]) -> dict[str, Any]:
    """Config of a head after enrolling ``label`` (``info``: display name, counts, metrics).

    Records the head it was made from (``base_head``) and drops the base head's ``metrics`` and ``figures``,
    which were measured without the new class; the metrics are kept as ``base_metrics`` (what the base head
    does on sources it never saw still holds for its own classes: verdicts keep their measured caveats).
    """
    out = {k: v for k, v in config.items() if k not in ("metrics", "figures")}
    out["base_head"] = config.get("base_head") or base_name
    if "metrics" in config or "base_metrics" in config:
        out["base_metrics"] = config.get("base_metrics") or config["metrics"]
    out["enrolled"] = {**config.get("enrolled", {}), label: dict(info)}
    return out


def head_fingerprint(head: OpenSetHead, backbone_config: dict[str, Any]) -> str:
    """Short content hash of a fitted head and the features it reads: enrollments are keyed to it."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"params": head.get_params(), "meta": head.meta_dict(), "backbone": backbone_config},
                             sort_keys=True, default=float).encode())
    for name, array in sorted(head.state_dict().items()):
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]

