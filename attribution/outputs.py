"""Result dataclasses; their ``to_json`` is the CLI's public JSON contract (extend it, never break it), and
:func:`columns` lays a row out flat for tables (the batch Parquet schema)."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

JSON_DECIMALS = 6  # scores, thresholds and rates in the JSON lines (the core keeps full precision)
JSON_TEXT = "json"  # the kind of a column holding an object (dict or list), stored as JSON text


@dataclass
class ImageFacts:
    """What an input is, read while decoding it (the ``predict --json`` input facts).

    ``width`` x ``height`` in px after EXIF rotation; ``format`` as Pillow names it (``JPEG``, ``PNG``,
    ``HEIF``, ``AVIF``...); ``frames`` in the file; ``has_alpha`` for any transparency (flattened on
    white before judging); ``bit_depth`` per channel of the decoded mode; ``grayscale`` when the file is
    grey or all its pixels are (R = G = B); ``pixel_sha256`` of frame 0's RGB bytes after EXIF rotation
    and alpha flattening (no header, so a lossless re-encode keeps it).
    """

    width: int
    height: int
    format: str | None
    frames: int
    has_alpha: bool
    bit_depth: int
    grayscale: bool
    exif_orientation_applied: bool
    pixel_sha256: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttributionOutput:
    """One image's attribution: the one row that every renderer shows (``predict --json`` via :meth:`to_json`,
    the app, the batch Parquet columns via :func:`columns`). The core fills it with full precision; the
    JSON rounds (:data:`JSON_DECIMALS`). ``error`` is set (and the decision's fields empty) when the image
    could not be judged.

    ``label`` is ``real``, a known generator, ``unknown`` (synthetic, from a generator the head does not
    know) or ``uncertain`` (neither real nor synthetic with confidence); ``known`` is true for a class
    of the head. ``reason`` names the rule that decided (``attribution.heads.open_set.REASON_*``).
    ``synthetic_score`` (0-1, higher = more likely generated) is synthetic from ``synthetic_threshold``
    on and real below ``real_threshold``; ``unknown_score`` (0-1) against ``threshold`` decides whether
    a synthetic image is from a known generator. The synthetic fields are ``None`` for heads without
    a synthetic probe.

    ``threshold`` means different things on different rows, and each is a public JSON field that stays as it
    is: here it is the head's unknown-score threshold (an image found synthetic whose ``unknown_score``
    passes it is ``unknown``); inside ``class_match`` it is that class's verification threshold on the raw
    class score; on a :class:`VerificationOutput` it is always 0.0, because a verification ``score`` is the
    decision value, the verifier's threshold already subtracted.

    ``error_code`` is one of :data:`attribution.transform.ERROR_CODES`; ``skipped`` marks a file found by
    walking a folder whose bytes are no image (it does not fail a run). ``facts`` are the input facts
    (:class:`ImageFacts`, flat in the JSON). ``frames_judged`` lists ``{index, label, scores}`` per frame of an
    animated input (the row's own fields aggregate them); ``duplicate_of`` is ``{class, id, match, distance}``
    when the image is (nearly) one of the head's training or enrolled images; an ``exact`` one decides the
    label (reason ``exact_known_image``). ``nearest`` lists ``{label, id, distance}`` of the closest known
    exemplars when asked for. ``class_match`` is ``{class, score, threshold, false_match_rate_at_score,
    real_false_match_rate_at_score}`` when a generator class's black-box verification score passes its
    threshold (the class furthest above it): the same test as ``verify --model <class>``. ``disagreement``
    names the evidence that pulled both ways when the label is ``uncertain`` for that reason
    (``{evidence: [...], detail}``).

    ``provenance`` and ``provenance_reason`` are the file's provenance evidence
    (:meth:`attribution.provenance.ProvenanceReport.fields`: an object, or ``None`` with a reason when the
    file had no readable bytes), read from the bytes decoded, beside the verdict and never feeding it;
    both ``None`` when provenance was not asked for (the JSON then has no ``provenance`` key).

    ``caveat`` is the measured caveat of this kind of answer, ``{text, rates, measured_on}``
    (:func:`attribution.caveats.caveat`), when the head carries the measurement. ``distinct_colours`` is an
    input fact kept apart (after the others, so that table columns are only ever appended): the number of
    distinct colours of frame 0 when it has at most 1,024 (a palette or posterised image), else ``None``.

    The fields are in the order of the batch Parquet columns: a new field (e.g. a per-row caveat) is
    appended, and added to :meth:`to_json`.
    """

    file: str | None
    label: str | None = None
    known: bool | None = None
    scores: dict[str, float] = field(default_factory=dict)
    unknown_score: float | None = None
    threshold: float | None = None
    note: str | None = None
    error: str | None = None
    error_code: str | None = None
    skipped: bool = False
    facts: ImageFacts | None = None
    frames_judged: list[dict[str, Any]] = field(default_factory=list)
    duplicate_of: dict[str, Any] | None = None
    reason: str | None = None
    synthetic_score: float | None = None
    synthetic_threshold: float | None = None
    real_threshold: float | None = None
    nearest: list[dict[str, Any]] = field(default_factory=list)
    class_match: dict[str, Any] | None = None
    disagreement: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    provenance_reason: str | None = None
    caveat: dict[str, Any] | None = None
    distinct_colours: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``predict --json`` object (the public contract: fields are only ever added)."""
        if self.error is not None:
            out: dict[str, Any] = {"file": self.file, "error": self.error, "error_code": self.error_code}
            if self.skipped:
                out["skipped"] = True
            return self._with_provenance(out)
        out = {"file": self.file, "label": self.label, "known": self.known, "scores": _rounded(self.scores),
               "unknown_score": _rounded(self.unknown_score), "threshold": _rounded(self.threshold),
               "reason": self.reason, "synthetic_score": _rounded(self.synthetic_score),
               "synthetic_threshold": _rounded(self.synthetic_threshold),
               "real_threshold": _rounded(self.real_threshold)}
        if self.note:
            out["note"] = self.note
        if self.nearest:
            out["nearest"] = [{**n, "distance": round(float(n["distance"]), 4)} for n in self.nearest]
        if self.facts is not None:
            out.update(self.facts.to_json())
        if self.frames_judged:
            out["frames_judged"] = [{**f, "scores": _rounded(f["scores"])} for f in self.frames_judged]
        if self.duplicate_of:
            out["duplicate_of"] = self.duplicate_of
        if self.class_match:
            out["class_match"] = _rounded(self.class_match)
        if self.disagreement:
            out["disagreement"] = self.disagreement
        if self.caveat:
            out["caveat"] = {**self.caveat, "rates": _rounded(self.caveat["rates"])}
        if self.distinct_colours is not None:
            out["distinct_colours"] = self.distinct_colours
        return self._with_provenance(out)

    def _with_provenance(self, out: dict[str, Any]) -> dict[str, Any]:
        if self.provenance is not None or self.provenance_reason is not None:
            out["provenance"] = self.provenance
            if self.provenance_reason is not None:
                out["provenance_reason"] = self.provenance_reason
        return out


@dataclass
class VerificationOutput:
    """"Was this image made by ``model``?" ``score`` >= 0 is a match: the verifier's threshold is already
    subtracted, so ``threshold`` is always 0.0 here (see :class:`AttributionOutput` for the attribution
    row's own ``threshold``). The JSON rounds the scores (:data:`JSON_DECIMALS`).

    ``false_match_rate_at_score`` is the conformal estimate ``(k + 1) / (n + 1)`` of the share of other
    sources' images scoring at least this high (``k`` of the verifier's ``n`` held-out negatives do), so it
    is never 0; ``real_false_match_rate_at_score`` the same on real photos alone (black-box: the head's real
    photos, each source left out, as from a kind of photo the networks never trained on); ``skipped``
    marks a file found by walking a folder that is no image.
    """

    file: str | None
    model: str
    score: float | None = None
    match: bool | None = None
    threshold: float | None = None
    false_match_rate: float | None = None
    method: str = "blackbox"
    note: str | None = None
    error: str | None = None
    false_match_rate_at_score: float | None = None
    error_code: str | None = None
    skipped: bool = False
    real_false_match_rate_at_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            out = {"file": self.file, "model": self.model, "error": self.error, "error_code": self.error_code}
            return {**out, "skipped": True} if self.skipped else out
        out = {"file": self.file, "model": self.model, "score": _rounded(self.score), "match": self.match,
               "threshold": self.threshold, "false_match_rate": self.false_match_rate, "method": self.method}
        if self.false_match_rate_at_score is not None:
            out["false_match_rate_at_score"] = _rounded(self.false_match_rate_at_score)
        if self.real_false_match_rate_at_score is not None:
            out["real_false_match_rate_at_score"] = _rounded(self.real_false_match_rate_at_score)
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class EnrollmentOutput:
    """What an enrollment did: the label added, how many images it used, per-file errors (``errors`` maps a
    file to its error text, ``error_codes`` the same files to their stable codes), and how separable the
    new generator is: left-out recall through the full decision, the left-out share that would be called
    ``real`` or ``uncertain``, the closest known class (see :func:`attribution.enrollment.enrollment_report`)."""

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
    error_codes: dict[str, str] = field(default_factory=dict)
    expected_real_or_uncertain: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "n_images": self.n_images, "classes": self.classes, "seconds": self.seconds,
               "errors": self.errors, "error_codes": self.error_codes, "saved_to": self.saved_to,
               "expected_recall": self.expected_recall, "closest_class": self.closest_class,
               "closest_class_share": self.closest_class_share,
               "expected_real_or_uncertain": self.expected_real_or_uncertain}
        if self.warning:
            out["warning"] = self.warning
        return out


def _rounded(value: Any) -> Any:
    """``value`` as the JSON shows it: floats (also those of a dict's values) to :data:`JSON_DECIMALS`."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(float(value), JSON_DECIMALS) if isinstance(value, float) else value


def columns(cls: type) -> list[tuple[str, type | str]]:
    """The flat columns of a result dataclass, in field order: ``(name, kind)`` with ``kind`` ``str``,
    ``bool``, ``int`` or ``float``, or :data:`JSON_TEXT` for an object (a dict or a list); a nested
    dataclass (``facts``) gives its own fields. What a renderer of tables maps to its types."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, type | str]] = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if dataclasses.is_dataclass(kind):
            out += columns(kind)
        else:
            out.append((f.name, kind if kind in (str, bool, int, float) else JSON_TEXT))
    return out
