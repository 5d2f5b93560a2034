"""A verdict as the evidence an analyst reads, in reading order: one place for the app's page and the report.

:func:`evidence` turns one ``predict --json`` row (``AttributionOutput.to_json()``, with its ``provenance``
and optional ``caveat``) into :class:`Evidence`, whose sections are read in this order (:data:`SECTIONS`):

1. ``title`` and ``rule``: the label and the rule that decided it, in words;
2. ``lead``: what decided it: an exact copy of a known image first, then the scores that decided with their
   thresholds (the unknown score only where it decided), a class match in words, a disagreement, a near copy
   (which decides nothing), then the measured caveat, the judged frames and notes;
3. ``nearest``: the closest known examples (an exact duplicate's own entry is the duplicate, not a neighbour);
4. ``provenance``: what the file's own metadata says;
5. ``details``: the scores that decided nothing and any other field, for whoever wants them;
6. ``facts``: the input facts and the pixel SHA-256.

Renderers (the app's Markdown, :mod:`attribution.report`'s HTML) only format these; they decide nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .constants import EXEMPLAR_DIR, REAL, UNCERTAIN, UNKNOWN
from .heads.decision import (REASON_CLOSED_KNOWN, REASON_CLOSED_UNKNOWN, REASON_DISPUTED, REASON_EXACT, REASON_FAR,
                             REASON_KNOWN, REASON_MATCH, REASON_REAL, REASON_TEXT, REASON_UNCERTAIN, REASON_UNKNOWN)
from .provenance import ProvenanceReport

SECTIONS = ("lead", "nearest", "provenance", "details", "facts")
# the reasons each score decided (any other reason: the score goes to the details)
SYNTHETIC_DECIDED = {REASON_REAL, REASON_UNCERTAIN, REASON_KNOWN, REASON_UNKNOWN, REASON_FAR, REASON_DISPUTED}
UNKNOWN_DECIDED = {REASON_UNKNOWN, REASON_CLOSED_UNKNOWN}
MATCH_DECIDED = {REASON_MATCH, REASON_DISPUTED}
PROBABILITY_DECIDED = {REASON_KNOWN, REASON_CLOSED_KNOWN}
FACTS = (("format", "format"), ("frames", "frames"),
         ("has_alpha", "transparency"), ("bit_depth", "bits per channel"), ("grayscale", "grayscale"),
         ("exif_orientation_applied", "EXIF rotation applied"), ("pixel_sha256", "pixel SHA-256"))
# fields placed by :func:`evidence` itself; any other scalar field of a row is listed in the details
PLACED = {"file", "label", "known", "scores", "unknown_score", "threshold", "reason", "synthetic_score",
          "synthetic_threshold", "real_threshold", "note", "nearest", "error", "error_code", "skipped", "provenance",
          "provenance_reason", "duplicate_of", "class_match", "disagreement", "caveat", "frames_judged", "width",
          "height", *(key for key, _ in FACTS)}


@dataclass(frozen=True)
class Line:
    """One piece of evidence in words. ``kind``: ``duplicate``, ``score``, ``match``, ``disagreement``,
    ``near_duplicate``, ``caveat``, ``frames``, ``note`` or ``error`` (renderers may set some apart)."""

    kind: str
    text: str


@dataclass(frozen=True)
class Neighbour:
    """A known example close to the image: its class, exemplar id (``class/file``, a tile ``class/file#n``; empty
    for an enrolled image that is not kept), source file name and distance."""

    label: str
    id: str
    file: str
    distance: float

    def caption(self) -> str:
        """``class: file (distance 0.42)``, or what is known of an example that is not kept."""
        where = self.file or "an enrolled image (not kept)"
        return f"{self.label}: {where} (distance {self.distance:.2f})"


@dataclass
class Evidence:
    """One verdict, section by section in reading order (see the module docstring)."""

    file: str
    title: str
    rule: str = ""
    lead: list[Line] = field(default_factory=list)
    nearest: list[Neighbour] = field(default_factory=list)
    provenance: ProvenanceReport | None = None
    details: list[tuple[str, str]] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    probabilities: list[tuple[str, float]] = field(default_factory=list)  # most likely first
    judged: bool = True  # False for a row with an error (nothing was decided)


def percent(p: float | None) -> str:
    return "-" if p is None else f"{100 * p:.1f}%"


def rate(p: float | None) -> str:
    """A small probability in words people read: ``0.4%`` or ``1 in 2,500``."""
    if p is None:
        return "-"
    return f"{100 * p:.1f}%" if p >= 0.001 else f"1 in {round(1 / p):,}"


def display(label: str | None, names: Mapping[str, str]) -> str:
    """``label (Display Name)`` for an enrolled class with a display name, else the label."""
    shown = names.get(label or "")
    return f"{label} ({shown})" if shown and shown != label else str(label)


def exemplar_file(exemplar_id: str) -> str:
    """The source file an exemplar or duplicate id names (``class/sub/file.png#2`` -> ``file.png, tile 2``)."""
    base, _, tile = exemplar_id.partition("#")
    name = base.split("~")[0].rsplit("/", 1)[-1]
    return f"{name}, tile {tile}" if tile else name


def _same_image(exemplar_id: str, duplicate_id: str) -> bool:
    return exemplar_id.split("#")[0].split("~")[0] == duplicate_id


def _title(row: dict[str, Any], names: Mapping[str, str]) -> str:
    label = row.get("label")
    if row.get("reason") == REASON_EXACT:
        return f"Known image: {display(label, names)}"
    return {UNKNOWN: "Unknown generator", REAL: "Real (not generated)",
            UNCERTAIN: "Uncertain (cannot tell)"}.get(label, f"Made by {display(label, names)}")


def _in_training(duplicate: dict[str, Any], names: Mapping[str, str]) -> str:
    """``the head's training set as dalle3: 2023-10-04_0.jpeg`` (or the images enrolled as a class)."""
    where = ("the images enrolled as" if str(duplicate.get("id", "")).startswith(f"{EXEMPLAR_DIR}/")
             else "the head's training set as")
    return f"{where} {display(duplicate.get('class'), names)}: {exemplar_file(str(duplicate.get('id', '')))}"


def _synthetic(row: dict[str, Any]) -> str:
    score, real, synthetic = row["synthetic_score"], row.get("real_threshold"), row.get("synthetic_threshold")
    if real is None:
        return f"Synthetic score {score:.3f} (threshold {synthetic:.3f}; from it on: generated)"
    where = ("below the real threshold" if score < real else
             "at or above the synthetic threshold" if score >= synthetic else "between the two thresholds")
    return (f"Synthetic score {score:.3f}, {where}: real below {real:.3f}, generated from {synthetic:.3f} on, "
            "uncertain in between")


def _unknown(row: dict[str, Any]) -> str:
    return f"Unknown score {row['unknown_score']:.3f} (threshold {row.get('threshold', 0.0):.3f})"


def _match(match: dict[str, Any], names: Mapping[str, str]) -> str:
    label = display(match["class"], names)
    who = f"the generator you enrolled as {label}" if match["class"] in names else f"the known generator {label}"
    real = match.get("real_false_match_rate_at_score")
    return (f"Matches {who}: black-box verification score {match['score']:.3f}, threshold {match['threshold']:.3f}; "
            f"false-match rate at this score {rate(match.get('false_match_rate_at_score'))}"
            + (f", on real photos alone {rate(real)}" if real is not None else ""))


def _lead(row: dict[str, Any], names: Mapping[str, str]) -> list[Line]:
    reason, lines = row.get("reason"), []
    duplicate = row.get("duplicate_of") or {}
    if duplicate.get("match") == "exact":
        lines.append(Line("duplicate", "This exact image (the same decoded pixels) is in "
                                       f"{_in_training(duplicate, names)}. The verdict names that copy, not what its "
                                       "pixels show."))
    scores = row.get("scores") or {}
    if reason in PROBABILITY_DECIDED and row.get("label") in scores:
        lines.append(Line("score", f"Probability {percent(scores[row['label']])} among the {len(scores)} known "
                                   "sources, the most likely."))
    if reason in SYNTHETIC_DECIDED and row.get("synthetic_score") is not None:
        lines.append(Line("score", _synthetic(row) + "."))
    if reason in UNKNOWN_DECIDED and row.get("unknown_score") is not None:
        lines.append(Line("score", _unknown(row) + ": above it, no known generator explains the image."))
    if reason in MATCH_DECIDED and row.get("class_match"):
        lines.append(Line("match", _match(row["class_match"], names) + "."))
    if row.get("disagreement"):
        lines.append(Line("disagreement", f"The evidence disagrees: {row['disagreement'].get('detail', '')}."))
    if duplicate.get("match") == "near":
        lines.append(Line("near_duplicate", f"A near copy (perceptual hashes {duplicate.get('distance')} of 256 bits "
                                            f"apart, as after a re-save or a resize) of an image in "
                                            f"{_in_training(duplicate, names)}. It decides nothing: the verdict "
                                            "comes from the pixels."))
    if (row.get("caveat") or {}).get("text"):
        lines.append(Line("caveat", row["caveat"]["text"]))
    if row.get("frames_judged"):
        lines.append(Line("frames", "Frames judged: " + ", ".join(
            f"frame {f['index']}: {display(f['label'], names)}" for f in row["frames_judged"]) + "."))
    if row.get("note"):
        lines.append(Line("note", str(row["note"])))
    return lines


def _details(row: dict[str, Any], names: Mapping[str, str]) -> list[tuple[str, str]]:
    """The scores that decided nothing (said so), the closest known source, the reason code and other fields."""
    reason, out = row.get("reason"), []
    unused = "; it did not decide this verdict"
    if row.get("synthetic_score") is not None and reason not in SYNTHETIC_DECIDED:
        out.append(("synthetic score", _synthetic(row).removeprefix("Synthetic score ") + unused))
    if row.get("unknown_score") is not None and reason not in UNKNOWN_DECIDED:
        out.append(("unknown score", _unknown(row).removeprefix("Unknown score ") + unused))
    if row.get("class_match") and reason not in MATCH_DECIDED:
        out.append(("class match", _match(row["class_match"], names) + unused))
    scores = row.get("scores") or {}
    if scores and reason not in PROBABILITY_DECIDED:
        top = max(scores, key=scores.get)
        out.append(("most likely known source", f"{display(top, names)} ({percent(scores[top])}){unused}"))
    if reason:
        out.append(("reason code", str(reason)))
    if (row.get("caveat") or {}).get("measured_on"):
        out.append(("caveat measured on", str(row["caveat"]["measured_on"])))
    out += [(key.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
            for key, value in row.items() if key not in PLACED and isinstance(value, (str, int, float, bool))]
    return out


def _facts(row: dict[str, Any]) -> list[tuple[str, str]]:
    size = [("size", f"{row['width']} x {row['height']} px")] if row.get("width") is not None else []
    return size + [(name, ("yes" if row[key] else "no") if isinstance(row[key], bool) else str(row[key]))
                   for key, name in FACTS if row.get(key) is not None]


def evidence(row: dict[str, Any], names: Mapping[str, str] | None = None) -> Evidence:
    """The evidence of one ``predict --json`` row; ``names`` maps enrolled classes to the names their owner typed
    (a class match with one of them reads "the generator you enrolled as ...")."""
    names = names or {}
    provenance = (ProvenanceReport.from_json(row["provenance"], row.get("provenance_reason"))
                  if "provenance" in row else None)
    file = str(row.get("file") or "")
    if row.get("error"):
        title = "Not judged: too small" if row.get("error_code") == "too_small" else "Could not read"
        return Evidence(file, title, lead=[Line("error", str(row["error"]))], provenance=provenance,
                        facts=_facts(row), judged=False)
    duplicate = row.get("duplicate_of") or {}
    nearest = [Neighbour(str(n.get("label")), str(n.get("id", "")), exemplar_file(str(n.get("id", ""))),
                         float(n.get("distance", 0.0)))
               for n in row.get("nearest") or []
               if not (duplicate.get("match") == "exact" and _same_image(str(n.get("id", "")), duplicate.get("id")))]
    scores = row.get("scores") or {}
    return Evidence(file, _title(row, names), REASON_TEXT.get(row.get("reason"), str(row.get("reason") or "")),
                    _lead(row, names), nearest, provenance, _details(row, names), _facts(row),
                    sorted(scores.items(), key=lambda kv: -kv[1]))
