"""Result dataclasses; their ``to_json`` is the CLI's public JSON contract (extend it, never break it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AttributionOutput:
    """One image's attribution. ``error`` is set (and the rest empty) when the image could not be read.

    ``label`` is ``real``, a known generator, ``unknown`` (synthetic, from a generator the head does not
    know) or ``uncertain`` (neither real nor synthetic with confidence); ``known`` is true for a class
    of the head. ``reason`` names the rule that decided (``attribution.heads.open_set.REASON_*``).
    ``synthetic_score`` (0-1, higher = more likely generated) is synthetic from ``synthetic_threshold``
    on and real below ``real_threshold``; ``unknown_score`` (0-1) against ``threshold`` decides whether
    a synthetic image is from a known generator. The synthetic fields are ``None`` for heads without
    a synthetic probe.
    """

    file: str | None
    label: str | None = None
    known: bool | None = None
    scores: dict[str, float] = field(default_factory=dict)
    unknown_score: float | None = None
    threshold: float | None = None
    reason: str | None = None
    synthetic_score: float | None = None
    synthetic_threshold: float | None = None
    real_threshold: float | None = None
    note: str | None = None
    nearest: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        out = {"file": self.file, "label": self.label, "known": self.known, "scores": self.scores,
               "unknown_score": self.unknown_score, "threshold": self.threshold, "reason": self.reason,
               "synthetic_score": self.synthetic_score, "synthetic_threshold": self.synthetic_threshold,
               "real_threshold": self.real_threshold}
        if self.note:
            out["note"] = self.note
        if self.nearest:
            out["nearest"] = self.nearest
        return out


@dataclass
class VerificationOutput:
    """"Was this image made by ``model``?" ``score`` > 0 is a match (threshold already subtracted)."""

    file: str | None
    model: str
    score: float | None = None
    match: bool | None = None
    threshold: float | None = None
    false_match_rate: float | None = None
    method: str = "blackbox"
    note: str | None = None
    error: str | None = None
    false_match_rate_at_score: float | None = None  # share of other sources' images scoring at least this high

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "model": self.model, "error": self.error}
        out = {"file": self.file, "model": self.model, "score": self.score, "match": self.match,
               "threshold": self.threshold, "false_match_rate": self.false_match_rate, "method": self.method}
        if self.false_match_rate_at_score is not None:
            out["false_match_rate_at_score"] = self.false_match_rate_at_score
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class EnrollmentOutput:
    """What an enrollment did: the label added, how many images it used, per-file errors, and how
    separable the new generator is (see :func:`attribution.enrollment.enrollment_report`)."""

    name: str
    n_images: int
    classes: list[str]
    seconds: float
    errors: dict[str, str] = field(default_factory=dict)
    saved_to: str | None = None
    expected_recall: float | None = None
    closest_class: str | None = None
    closest_class_share: float | None = None
    warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "n_images": self.n_images, "classes": self.classes, "seconds": self.seconds,
               "errors": self.errors, "saved_to": self.saved_to, "expected_recall": self.expected_recall,
               "closest_class": self.closest_class, "closest_class_share": self.closest_class_share}
        if self.warning:
            out["warning"] = self.warning
        return out
