"""Markdown and tables for the page, built from the library's JSON dicts.

Rendering reads the output dicts generically: fields added to ``AttributionOutput.to_json()`` later
(``reason``, ``synthetic_score``/``synthetic_threshold``, ``provenance``, or others) show up in the
verdict, the batch table and the CSV when present, without changes here.
"""
from __future__ import annotations

import re
from typing import Any

from attribution import REAL, UNCERTAIN, UNKNOWN
from attribution import REASON_TEXT
from attribution.provenance import ProvenanceReport, provenance_column, summary_markdown

# fields the verdict places itself; any other scalar field is listed under "Details"
_PLACED = {"file", "label", "known", "scores", "unknown_score", "threshold", "synthetic_score", "synthetic_threshold",
           "real_threshold", "reason", "note", "nearest", "error", "provenance"}
CSV_FIRST = ["file", "label", "reason", "confidence", "unknown_score", "threshold", "synthetic_score",
             "synthetic_threshold", "real_threshold", "known", "note", "error"]


def md(text: Any) -> str:
    """User-given text (file or generator names) safe inside Markdown."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", str(text))


def code(text: Any) -> str:
    """Text as a Markdown code span (nothing inside is interpreted)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def percent(p: float | None) -> str:
    return "-" if p is None else f"{100 * p:.1f}%"


def rate(p: float | None) -> str:
    """A small probability in words people read: ``0.4%`` or ``1 in 2,500``."""
    if p is None:
        return "-"
    return f"{100 * p:.1f}%" if p >= 0.001 else f"1 in {round(1 / p):,}"


def error_markdown(message: str) -> str:
    return f"**Error:** {md(message)}"


def display(label: str | None, names: dict[str, str]) -> str:
    """``label (Display Name)`` for an enrolled class with a display name, else the label."""
    shown = names.get(label or "")
    return f"{label} ({shown})" if shown and shown != label else str(label)


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else md(value)


def _round(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def confidence(row: dict[str, Any]) -> float | None:
    """Probability of the most likely known source."""
    scores = row.get("scores") or {}
    return max(scores.values()) if scores else None


# ------------------------------------------------------------------------- one image
def verdict_markdown(row: dict[str, Any], names: dict[str, str]) -> str:
    """The verdict for one ``AttributionOutput.to_json()`` dict (``names``: display names of enrolled classes)."""
    if row.get("error"):
        return f"### Could not read {md(row.get('file'))}\n{md(row['error'])}"
    label, scores = row.get("label"), row.get("scores") or {}
    top = max(scores, key=scores.get) if scores else None
    if label == UNKNOWN:
        title = "## Verdict: unknown generator"
        lead = ("Synthetic, from a generator this head does not know: it can be enrolled in the **Enroll** tab."
                + (f" Closest known source: {code(display(top, names))} ({percent(scores[top])}), not a reliable "
                   "guess." if top else ""))
    elif label == REAL:
        title, lead = "## Verdict: real (not generated)", f"Confidence **{percent(scores.get(label))}**."
    elif label == UNCERTAIN:
        title = "## Verdict: uncertain (cannot tell)"
        lead = ("Neither a photo nor a generated image with confidence; treat it as unresolved."
                + (f" Most likely known source: {code(display(top, names))} ({percent(scores[top])})." if top else ""))
    elif label in scores:
        title = f"## Verdict: made by {code(display(label, names))}"
        lead = f"Confidence **{percent(scores[label])}** among the {len(scores)} known sources."
    else:
        title = f"## Verdict: {md(label)}"
        lead = (f"Most likely known source: {code(display(top, names))} ({percent(scores[top])})." if top else "")
    lines = [title, md(row.get("file") or ""), ""]
    if row.get("reason"):
        lines.append(f"**Why:** {md(REASON_TEXT.get(row['reason'], row['reason']))}\n")
    if lead:
        lines.append(lead + "\n")
    match = row.get("class_match")
    if match:
        who = (f"the generator you enrolled as {code(display(match['class'], names))}" if match["class"] in names
               else f"the known generator {code(display(match['class'], names))}")
        real = match.get("real_false_match_rate_at_score")
        lines.append(f"- **Matches {who}** (black-box verification score {_number(match['score'])}, threshold "
                     f"{_number(match['threshold'])}): false-match rate at this score "
                     f"{percent(match['false_match_rate_at_score'])}"
                     + (f", on real photos alone {percent(real)}" if real is not None else "") + ".")
    if row.get("disagreement"):
        lines.append(f"- **The evidence disagrees:** {md(row['disagreement']['detail'])}.")
    if row.get("unknown_score") is not None:
        lines.append(f"- Unknown score **{_number(row['unknown_score'])}** (threshold {_number(row.get('threshold'))}; "
                     "above it: made by a generator the head does not know)")
    if row.get("synthetic_score") is not None:
        if row.get("real_threshold") is not None:
            lines.append(f"- Synthetic score **{_number(row['synthetic_score'])}** (below "
                         f"{_number(row['real_threshold'])}: real; from {_number(row.get('synthetic_threshold'))} on: "
                         "generated; in between: uncertain)")
        else:
            lines.append(f"- Synthetic score **{_number(row['synthetic_score'])}** (threshold "
                         f"{_number(row.get('synthetic_threshold'))}; above it: generated rather than a photo)")
    for key, value in row.items():
        if key not in _PLACED and isinstance(value, (str, int, float, bool)):
            lines.append(f"- {md(key.replace('_', ' '))}: {_number(value)}")
    if row.get("frames_judged"):
        lines.append("\nFrames judged: " + ", ".join(f"frame {f['index']}: {code(display(f['label'], names))}"
                                                   for f in row["frames_judged"]))
    if row.get("note"):
        lines.append(f"\n*Note: {md(row['note'])}*")
    return "\n".join(lines)


def provenance_markdown(row: dict[str, Any]) -> str:
    """The provenance panel under the verdict (the library's rendering of ``row["provenance"]``, with a
    plain-words line when records and pixels disagree); empty when the row has none."""
    if "provenance" not in row:
        return ""
    return summary_markdown(ProvenanceReport.from_json(row["provenance"], row.get("provenance_reason")), row.get("label"))


# ------------------------------------------------------------------------- many images
# relative column widths: wide enough that a label (e.g. stable_diffusion_v1) never breaks inside a word
_WIDTHS = {"file": 24, "verdict": 22, "details": 16, "false-match rate at score": 13, "confidence": 12, "match": 8}


def column_widths(header: list[str]) -> list[str]:
    """Widths of a results table's columns (percentages of the table), from :data:`_WIDTHS` (numbers: 11)."""
    weights = [_WIDTHS.get(h, 11) for h in header]
    return [f"{100 * w / sum(weights):.1f}%" for w in weights]


def batch_table(rows: list[dict[str, Any]], names: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the on-page table; a synthetic-score column appears when the rows carry one."""
    synthetic = any(r.get("synthetic_score") is not None for r in rows)
    header = ["file", "verdict", "confidence", "unknown score", *(["synthetic score"] if synthetic else []), "details"]
    table = []
    for r in rows:
        label = r.get("label")
        verdict = "" if r.get("error") else ("unknown generator" if label == UNKNOWN else display(label, names))
        conf = confidence(r)
        line = [r.get("file"), verdict, _round(conf, 3), _round(r.get("unknown_score"), 3)]
        if synthetic:
            line.append(_round(r.get("synthetic_score"), 3))
        line.append(" ".join(str(r[k]) for k in ("error", "reason", "note") if r.get(k)))
        table.append(line)
    return header, table


def csv_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the CSV: every scalar field of the rows (known ones first) plus ``confidence``."""
    flat = [{**{k: v for k, v in r.items() if isinstance(v, (str, int, float, bool)) or v is None},
             "confidence": confidence(r),
             **({"provenance": provenance_column(ProvenanceReport.from_json(r["provenance"], r.get("provenance_reason")))}
                if "provenance" in r else {})} for r in rows]
    present = {k for r in flat for k, v in r.items() if v is not None}
    header = [k for k in CSV_FIRST if k in present] + sorted(present - set(CSV_FIRST))
    return header, [[r.get(k) for k in header] for r in flat]


def batch_summary(rows: list[dict[str, Any]], names: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        key = "unreadable" if r.get("error") else ("unknown generator" if r.get("label") == UNKNOWN
                                                   else display(r.get("label"), names))
        counts[key] = counts.get(key, 0) + 1
    threshold = next((r["threshold"] for r in rows if r.get("threshold") is not None), None)
    return (f"**{len(rows)} images:** " + ", ".join(f"{md(k)}: {v}" for k, v in sorted(counts.items()))
            + (f". An unknown score above {threshold:.3f} means *unknown generator*; confidence is the probability "
               "of the most likely known source." if threshold is not None else "."))


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
