"""What an enrollment is worth, and enrollments as small deltas over a head.

Everything here uses the head's public methods and fitted state (``clone``, ``enroll``, ``predict``,
``predict_proba``, ``decide``, ``state_dict``/``meta_dict``/``from_state``), so it works for any head with the
:class:`~attribution.heads.OpenSetHead` layout.

* :func:`enrollment_report` says how separable a new generator is before it is kept: the left-out
  recall of its own images and the known class that takes most of them, with a warning under the
  documented rule :data:`WARN_SHARE` / :data:`WARN_PROBA`.
* :class:`ClassDelta` is one enrolled class as the rows it adds to a head (mean, count, bias,
  verification offset, exemplar-bank rows): :func:`class_delta` cuts it out of an enrolled head and
  :func:`apply_deltas` puts it back on the base head, so a visitor's enrollments can be stored apart
  from the head they extend. :func:`head_fingerprint` names the head they belong to.

(The false-match rate at a verification score is :func:`attribution.verification.false_match_rate_at`.)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .heads import OpenSetHead

WARN_SHARE = 0.5  # warn when at least this share of the images ...
WARN_PROBA = 0.8  # ... goes to one known class with at least this probability
MAX_RECALL_FOLDS = 10


@dataclass(frozen=True)
class EnrollmentReport:
    """How a new generator ``label`` stands against the classes a head already knows."""

    expected_recall: float  # share of its images attributed to it when each is left out of its enrollment
    closest_class: str  # known class that takes most of its images before it is enrolled
    closest_class_share: float  # share of its images that class takes
    warning: str | None = None  # set when the images look like the closest class (see WARN_SHARE, WARN_PROBA)


def enrollment_report(head: OpenSetHead, X: np.ndarray, label: str) -> EnrollmentReport:
    """Left-out recall and closest known class of the images ``X`` enrolled as ``label`` on ``head``.

    ``head`` is the head *before* the enrollment (it is not changed). Recall is measured with up to
    :data:`MAX_RECALL_FOLDS` folds: each fold's images are held out, the class is enrolled from the rest
    and the held-out images count when ``head.predict`` gives ``label`` (so ``unknown`` is a miss).
    The warning rule: at least ``WARN_SHARE`` of the images are attributed to one known class (``predict``
    gives that class, not ``unknown``) with probability at least ``WARN_PROBA``.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    folds = np.arange(n) % min(n, MAX_RECALL_FOLDS)
    hits = 0
    for fold in np.unique(folds):
        held_out = folds == fold
        trial = head.clone().enroll(X[~held_out], label)
        hits += int((trial.predict(X[held_out]) == label).sum())
    decision = head.decide(X)  # labels and probabilities from one projection of the batch
    proba = decision.proba
    top = proba.argmax(axis=1)
    counts = np.bincount(top, minlength=len(head.classes_))
    closest = int(counts.argmax())
    attributed = (decision.labels == np.asarray(head.classes_, dtype=object)[top]) & (proba.max(axis=1) >= WARN_PROBA)
    confident = np.bincount(top[attributed], minlength=len(head.classes_))
    recall = hits / n
    warning = None
    if confident.max() >= WARN_SHARE * n:
        taker = head.classes_[int(confident.argmax())]
        warning = (f"{confident.max()} of {n} images are attributed to the known class {taker!r} with probability "
                   f">= {WARN_PROBA:.0%}, so they look like that class; " + (
                       f"enrolled as {label!r}, only {recall:.0%} of them would be recognised when left out: it may "
                       f"be the same source as {taker!r}" if recall < 0.5 else
                       f"enrolled as {label!r}, {recall:.0%} of them would still be recognised when left out: make "
                       f"sure they are not images of {taker!r}"))
    share = round(float(counts[closest] / n), 4)
    return EnrollmentReport(round(recall, 4), str(head.classes_[closest]), share, warning)


def enrolled_config(config: dict[str, Any], base_name: str, label: str, info: dict[str, Any]) -> dict[str, Any]:
    """Config of a head after enrolling ``label`` (``info``: display name, counts, metrics).

    Records the head it was made from (``base_head``) and drops the base head's ``metrics`` and
    ``figures``, which were measured without the new class.
    """
    out = {k: v for k, v in config.items() if k not in ("metrics", "figures")}
    out["base_head"] = config.get("base_head") or base_name
    out["enrolled"] = {**config.get("enrolled", {}), label: dict(info)}
    return out


# ---------------------------------------------------------------------------- deltas
_ROW_ARRAYS = ("class_means_", "class_counts_", "class_bias_", "verify_offsets_", "bank_", "bank_labels_")


@dataclass(frozen=True)
class ClassDelta:
    """One enrolled class as the rows it adds to a head (whitened space of that head)."""

    label: str
    mean: np.ndarray  # (n_components,)
    count: float
    bias: float
    verify_offset: float
    bank: np.ndarray  # (n_exemplars, n_components)


def class_delta(head: OpenSetHead, label: str) -> ClassDelta:
    """The rows enrolled class ``label`` added to ``head``."""
    code = head.classes_.index(label)
    return ClassDelta(label, np.array(head.class_means_[code]), float(head.class_counts_[code]),
                      float(head.class_bias_[code]), float(head.verify_offsets_[code]),
                      np.array(head.bank_[head.bank_labels_ == code]))


def apply_deltas(head: OpenSetHead, deltas: Sequence[ClassDelta]) -> OpenSetHead:
    """A new head: ``head`` with the classes of ``deltas`` appended in order (``head`` is unchanged).

    Raises ``ValueError`` when a delta does not fit the head (dimension, duplicate label, bad values).
    """
    arrays = dict(head.state_dict())
    meta = dict(head.meta_dict())
    dim = arrays["class_means_"].shape[1]
    parts = {name: [arrays[name]] for name in _ROW_ARRAYS}  # each array and the rows appended to it
    classes, enrolled, ids = list(meta["classes_"]), list(meta["enrolled_"]), list(meta["bank_ids_"])
    for delta in deltas:
        mean, rows = np.asarray(delta.mean, np.float64), np.asarray(delta.bank, np.float64)
        if delta.label in classes:
            raise ValueError(f"class {delta.label!r} is already known")
        if mean.shape != (dim,) or rows.ndim != 2 or rows.shape[1] != dim:
            raise ValueError(f"enrollment {delta.label!r} does not fit this head ({dim} dimensions)")
        values = np.concatenate([mean, rows.ravel(), [delta.count, delta.bias, delta.verify_offset]])
        if not np.isfinite(values).all() or delta.count < 2:
            raise ValueError(f"enrollment {delta.label!r} holds invalid values")
        code = len(classes)
        for name, value in (("class_means_", mean[None]), ("class_counts_", [delta.count]),
                            ("class_bias_", [delta.bias]), ("verify_offsets_", [delta.verify_offset]),
                            ("bank_", rows), ("bank_labels_", np.full(len(rows), code, arrays["bank_labels_"].dtype))):
            parts[name].append(value)
        classes.append(delta.label)
        enrolled.append(delta.label)
        ids += [""] * len(rows)
    arrays.update({name: np.concatenate(values) for name, values in parts.items()})
    meta.update(classes_=classes, enrolled_=enrolled, bank_ids_=ids)
    return type(head).from_state(head.get_params(), meta, arrays)


def head_fingerprint(head: OpenSetHead, backbone_config: dict[str, Any]) -> str:
    """Short content hash of a fitted head and the features it reads: enrollments are keyed to it."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"params": head.get_params(), "meta": head.meta_dict(), "backbone": backbone_config},
                             sort_keys=True, default=float).encode())
    for name, array in sorted(head.state_dict().items()):
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]

