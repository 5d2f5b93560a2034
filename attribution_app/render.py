"""Markdown and tables for the page, built from the library's JSON dicts.

A verdict is rendered from :func:`attribution.evidence.evidence`, which orders what a row says (the rule, the
scores that decided, a duplicate, the caveat, the nearest examples, provenance, details, input facts): these
functions only format its sections. Fields added to ``AttributionOutput.to_json()`` later show up in the
details, the batch table and the CSV without changes here.
"""
from __future__ import annotations

import re
from typing import Any

from attribution import UNKNOWN
from attribution.evidence import PROBABILITY_DECIDED, Evidence, display, evidence, percent, rate
from attribution.provenance import ProvenanceReport, provenance_column, summary_markdown

CSV_FIRST = ["file", "label", "reason", "confidence", "unknown_score", "threshold", "synthetic_score",
             "synthetic_threshold", "real_threshold", "known", "note", "error", "why", "duplicate_of", "class_match",
             "caveat"]
NOT_JUDGED = {"too_small": "not judged: too small"}


def md(text: Any) -> str:
    """User-given text (file or generator names) safe inside Markdown."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", str(text))


def code(text: Any) -> str:
    """Text as a Markdown code span (nothing inside is interpreted)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def error_markdown(message: str) -> str:
    return f"**Error:** {md(message)}"


def _round(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def confidence(row: dict[str, Any]) -> float | None:
    """Probability of the most likely known source."""
    scores = row.get("scores") or {}
    return max(scores.values()) if scores else None


def _table(pairs: list[tuple[str, str]], first: str) -> str:
    return "\n".join([f"| {first} | |", "|---|---|", *(f"| {md(k)} | {md(v)} |" for k, v in pairs)])


# ------------------------------------------------------------------------- one image
LINE_FORMAT = {"duplicate": "**{}**", "disagreement": "**{}**", "caveat": "*Measured caveat:* {}", "error": "{}"}


def verdict_markdown(row: dict[str, Any], names: dict[str, str]) -> str:
    """The verdict of one ``AttributionOutput.to_json()`` dict: the title, the rule that decided, then what decided
    it, the measured caveat and notes (``names``: display names of enrolled classes)."""
    ev = evidence(row, names)
    lines = [f"## {md(ev.title)}", md(ev.file), ""]
    if ev.rule:
        lines.append(f"**Why:** {md(ev.rule)}\n")
    lines += [f"- {LINE_FORMAT.get(line.kind, '{}').format(md(line.text))}" for line in ev.lead]
    if row.get("label") == UNKNOWN:
        lines.append("\n*A generator the head does not know can be taught to it in the **Enroll** tab.*")
    return "\n".join(lines)


def nearest_markdown(ev: Evidence, pictures: int) -> str:
    """The nearest known examples in words (class, source file, distance), and why pictures are missing when
    fewer than all are shown (``pictures``: how many the gallery shows)."""
    if not ev.judged:
        return ""
    if not ev.nearest:
        return "**Most similar known examples:** none to show (this head keeps no examples to compare with)."
    lines = ["**Most similar known examples** (distance in the head's feature space; smaller is closer):"]
    lines += [f"- {md(n.caption())}" for n in ev.nearest]
    if pictures < len(ev.nearest):
        lines.append("\n*Pictures of known examples are shown only where they are kept: the head's training images "
                     "when they are on the server (its data folder, or `ATTRIBUTION_DATA`), thumbnails of the images "
                     "enrolled in the head, and thumbnails of the images you enrolled (your enrollments saved before "
                     "the app kept thumbnails have none).*")
    return "\n".join(lines)


def details_markdown(row: dict[str, Any], names: dict[str, str]) -> str:
    """What decided nothing (other scores, the reason code, other fields) and the input facts with the SHA-256."""
    ev = evidence(row, names)
    parts = [_table(ev.details, "detail")] if ev.details else []
    if ev.facts:
        parts.append(_table(ev.facts, "the input"))
    return "\n\n".join(parts)


def provenance_markdown(row: dict[str, Any]) -> str:
    """The provenance panel under the verdict (the library's rendering of ``row["provenance"]``, with C2PA's
    checks and a plain-words line when records and pixels disagree); empty when the row has none."""
    if "provenance" not in row:
        return ""
    return summary_markdown(ProvenanceReport.from_json(row["provenance"], row.get("provenance_reason")), row.get("label"))


# ------------------------------------------------------------------------- many images
# relative column widths: wide enough that no header and no label (e.g. stable_diffusion_v1) breaks inside a word
_WIDTHS = {"file": 20, "verdict": 19, "why": 32, "probability": 15, "synthetic score": 14,
           "false-match rate at score": 13, "match": 8, "details": 16}


def column_widths(header: list[str]) -> list[str]:
    """Widths of a results table's columns (percentages of the table), from :data:`_WIDTHS` (numbers: 11)."""
    weights = [_WIDTHS.get(h, 11) for h in header]
    return [f"{100 * w / sum(weights):.1f}%" for w in weights]


def _verdict_cell(row: dict[str, Any], names: dict[str, str]) -> str:
    if row.get("error"):
        return NOT_JUDGED.get(row.get("error_code"), "could not read")
    return "unknown generator" if row.get("label") == UNKNOWN else display(row.get("label"), names)


def _why(row: dict[str, Any], names: dict[str, str]) -> str:
    """The rule in words (an exact duplicate says it better), with what a reader must not miss (a near copy, a
    disagreement, an error, a note)."""
    ev = evidence(row, names)
    said = [line.text for line in ev.lead if line.kind in ("duplicate", "near_duplicate", "disagreement", "error",
                                                         "note")]
    rule = "" if any(line.kind == "duplicate" for line in ev.lead) else ev.rule
    return " ".join(filter(None, [rule + ("." if rule and said else ""), *said]))


def batch_table(rows: list[dict[str, Any]], names: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the on-page table: the verdict, the probability of a class where it decided the verdict,
    the synthetic score (when the rows carry one) and why, in words."""
    def deciding(r: dict[str, Any]) -> float | None:
        scores = r.get("scores") or {}
        return scores[r["label"]] if r.get("reason") in PROBABILITY_DECIDED and r.get("label") in scores else None

    synthetic = any(r.get("synthetic_score") is not None for r in rows)
    probability = any(deciding(r) is not None for r in rows)  # a column only where some row's probability decided
    header = ["file", "verdict", *(["probability"] if probability else []),
              *(["synthetic score"] if synthetic else []), "why"]
    table = []
    for r in rows:
        line = [r.get("file"), _verdict_cell(r, names)]
        if probability:
            line.append("" if deciding(r) is None else percent(deciding(r)))
        if synthetic:
            line.append(_round(r.get("synthetic_score"), 3))
        line.append(_why(r, names))
        table.append(line)
    return header, table


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row's scalar fields plus the CSV's own columns (the confidence, the rule in words, the duplicate, class
    match and caveat in one cell each, the provenance summary)."""
    out = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
    duplicate, match = row.get("duplicate_of"), row.get("class_match")
    out.update(confidence=confidence(row), why=_why(row, {}),
               duplicate_of=f"{duplicate['match']}: {duplicate['id']} ({duplicate['class']})" if duplicate else None,
               class_match=(f"{match['class']} (score {match['score']:.3f}, threshold {match['threshold']:.3f}, "
                            f"false-match rate {rate(match.get('false_match_rate_at_score'))})") if match else None,
               caveat=(row.get("caveat") or {}).get("text"))
    if "provenance" in row:
        report = ProvenanceReport.from_json(row["provenance"], row.get("provenance_reason"))
        out["provenance"] = provenance_column(report)
    return out


def csv_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the CSV: every scalar field of the rows (known ones first) plus the CSV's own columns."""
    flat = [_flat(r) for r in rows]
    present = {k for r in flat for k, v in r.items() if v is not None}
    header = [k for k in CSV_FIRST if k in present] + sorted(present - set(CSV_FIRST))
    return header, [[r.get(k) for k in header] for r in flat]


def batch_summary(rows: list[dict[str, Any]], names: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        key = _verdict_cell(r, names)
        counts[key] = counts.get(key, 0) + 1
    return (f"**{len(rows)} images:** " + ", ".join(f"{md(k)}: {v}" for k, v in sorted(counts.items()))
            + ". *Probability* is that of the verdict's generator where it decided the verdict; *why* is the rule "
              "that decided. The report holds every image's full evidence.")


# ------------------------------------------------------------------------- verification
def verify_markdown(rows: list[dict[str, Any]], target: str) -> str:
    """Summary of verification rows (``VerificationOutput.to_json()`` dicts) against ``target``."""
    ok = [r for r in rows if not r.get("error")]
    matches = sum(bool(r.get("match")) for r in ok)
    if len(rows) == 1 and ok:
        r = ok[0]
        lines = [f"## {'Match' if r['match'] else 'No match'}",
                 f"{md(r.get('file'))} {'looks' if r['match'] else 'does not look'} made by {target}.", ""]
        lines.append(f"- Score **{r['score']:+.3f}** (a match needs at least {r['threshold']:+.3f})")
        if r.get("false_match_rate_at_score") is not None:
            lines.append(f"- Among images from other known sources, **{rate(r['false_match_rate_at_score'])}** score "
                         "at least this high (false-match rate at this score)")
        if r.get("false_match_rate") is not None:
            lines.append(f"- The match threshold lets through {rate(r['false_match_rate'])} of them "
                         "(operating false-match rate)")
        lines.append(f"- Method: {md(r.get('method', ''))}")
        if r.get("note"):
            lines.append(f"\n*Note: {md(r['note'])}*")
        return "\n".join(lines)
    errors = len(rows) - len(ok)
    return (f"**{matches} of {len(rows)} images match {target}**" + (f", {errors} could not be read" if errors else "")
            + ". *False-match rate at score*: share of other known sources' images scoring at least as high.")


def verify_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    header = ["file", "match", "score", "false-match rate at score", "threshold", "method", "details"]
    table = [[r.get("file"), "" if r.get("error") else ("yes" if r.get("match") else "no"), _round(r.get("score"), 3),
              _round(r.get("false_match_rate_at_score"), 4), r.get("threshold"), r.get("method", ""),
              " ".join(str(r[k]) for k in ("error", "note") if r.get(k))] for r in rows]
    return header, table


# ------------------------------------------------------------------------- enrollment
def enrollment_markdown(out: dict[str, Any], kept: bool) -> str:
    """What an enrollment is worth; ``kept`` says whether it was added (else it waits for confirmation)."""
    recall, closest, share = out.get("expected_recall"), out.get("closest_class"), out.get("closest_class_share")
    head = (f"**Enrolled {code(out['name'])}** from {out['n_images']} images in {out['seconds']:.1f} s, for you only "
            "(other visitors do not see it)." if kept else
            f"**{code(out['name'])} is not enrolled yet:** its images look like a class the head already knows.")
    lines = [head, ""]
    if recall is not None:
        verdict = ("the head will recognise most of its images" if recall >= 0.7 else
                   "the head will recognise only some of its images" if recall >= 0.4 else
                   "the head will rarely recognise its images")
        lines.append(f"- Expected recall **{percent(recall)}**: share of its own images attributed to it when each is "
                     f"left out of the enrollment ({verdict}).")
    unflagged = out.get("expected_real_or_uncertain")
    if unflagged is not None:
        lines.append(f"- Left out of the enrollment, **{percent(unflagged)}** of its images would be called `real` or "
                     "`uncertain` (the rest get a generator label).")
    if closest is not None and share is not None:
        lines.append(f"- Closest known class before enrolling: {code(closest)}, which takes {percent(share)} of "
                     "the images.")
    if out.get("warning"):
        lines.append(f"\n**Warning:** {md(out['warning'])}.")
    lines += [f"- skipped {md(f)}: {md(e)}" for f, e in (out.get("errors") or {}).items()]
    return "\n".join(lines)
