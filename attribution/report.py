"""A case report an analyst can file: one self-contained HTML file for one image or many.

:func:`render_report` renders the ``predict --json`` rows (``AttributionOutput.to_json()`` with ``provenance``,
and ``caveat`` where the library gives one) and the head's :class:`HeadInfo`; the evidence of each row is
ordered by :func:`attribution.evidence.evidence`, as on the app's page. Per image: its thumbnail, the verdict
and the rule, the scores and thresholds that decided, the measured caveat, ``duplicate_of``, the nearest
known examples, the provenance panel, the scores that decided nothing, the input facts with the pixel SHA-256
and the perceptual hash. The head is named with its revision (a hash of its parameters, fitted state and
features), its card's plain summary and headline figures; the tool's version and the time of analysis head
the file.

The file needs no network: pictures are inlined as ``data:`` URIs (JPEG thumbnails of bounded size), there
is no script, no link and no ``http`` anywhere in it (text that holds the word, such as an IPTC term, and
base64 that happens to, are written with a character reference). A print stylesheet puts each image on its own page.
"""
from __future__ import annotations

import base64
import datetime
import html
import importlib.metadata
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from PIL import Image

from .duplicates import perceptual_hash
from .enrollment import head_fingerprint
from .evidence import Evidence, evidence
from .heads.card import HEADLINE, plain_summary
from .provenance import disagreement_text, provenance_column
from .transform import ImageDecodeError, ImageInput, decode_image, thumbnail_jpeg

if TYPE_CHECKING:
    from .pipeline import Attributor

THUMBNAIL_PX = 320  # longer side of an image's thumbnail
NEIGHBOUR_PX = 112  # longer side of a known example's thumbnail
MAX_THUMBNAIL_BYTES = 60_000  # per picture, before base64
_HTTP = re.compile(r"(h)(t)(tp)", re.IGNORECASE)

CSS = """
:root { --ink: #1c1c1c; --muted: #5a5a5a; --line: #d6d6d6; --accent: #7a3e00; --soft: #f6f3ee; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); max-width: 960px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin: 0 0 0.4em; overflow-wrap: anywhere; }
h3 { font-size: 1.02em; margin: 1.1em 0 0.3em; color: var(--accent); }
code, .hash { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.92em;
              overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.3em 0; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; width: 32%; }
.meta th { width: 22%; }
.muted, .rule { color: var(--muted); }
.case { border-top: 2px solid var(--ink); padding-top: 1em; margin-top: 2em; }
.top { display: flex; gap: 1.2em; align-items: flex-start; }
.thumb { max-width: 320px; max-height: 320px; border: 1px solid var(--line); }
.title { font-size: 1.35em; font-weight: 700; margin: 0; }
.lead li { margin: 0.25em 0; }
.duplicate { font-weight: 700; background: var(--soft); padding: 0.2em 0.4em; list-style: none; margin-left: -1em; }
.caveat { font-style: italic; }
.neighbours { display: flex; flex-wrap: wrap; gap: 0.8em; }
.neighbours figure { margin: 0; width: 120px; font-size: 0.85em; overflow-wrap: anywhere; }
.neighbours img { max-width: 112px; max-height: 112px; border: 1px solid var(--line); }
.passed { color: #1f6b2a; font-weight: 600; } .failed { color: #a11d1d; font-weight: 600; }
@page { size: A4; margin: 14mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 10pt; }
  .case { break-before: page; border-top: none; margin-top: 0; }
  table, figure, .top, li { break-inside: avoid; }
  h3 { break-after: avoid; }
}
"""


@dataclass(frozen=True)
class HeadInfo:
    """The head a report names: ``name``, ``revision`` (:func:`attribution.enrollment.head_fingerprint`: a hash of
    its parameters, fitted state and features, so any change shows), its ``classes``, its ``base_head`` and
    ``enrolled`` classes (label -> display name), and its card's plain ``summary`` and ``headline`` figures."""

    name: str
    revision: str
    classes: list[str] = field(default_factory=list)
    base_head: str | None = None
    enrolled: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    headline: list[tuple[str, float]] = field(default_factory=list)

    @classmethod
    def of(cls, attributor: Attributor) -> HeadInfo:
        """The info of an attributor's head (an app visitor's view included: its enrollments change the revision)."""
        config = attributor.config
        metrics = config.get("metrics") or config.get("base_metrics") or {}
        return cls(attributor.name, head_fingerprint(attributor.head, attributor.backbone.config()),
                   list(attributor.classes), config.get("base_head"),
                   {k: str(v.get("display_name") or k) for k, v in config.get("enrolled", {}).items()},
                   plain_summary(metrics) if metrics else "",
                   [(text, float(metrics[key])) for key, text in HEADLINE
                    if isinstance(metrics.get(key), (int, float))])


@dataclass(frozen=True)
class ReportImage:
    """What a report shows of one input beside its row: a JPEG ``thumbnail``, the perceptual hash ``phash`` and
    JPEG thumbnails of its nearest known examples that are on this machine (``neighbours``: exemplar id -> bytes;
    ``None`` when they were not looked up, as in the app's report of several images)."""

    thumbnail: bytes | None = None
    phash: str | None = None
    neighbours: dict[str, bytes] | None = field(default_factory=dict)


def tool_version() -> str:
    """The installed package's version, else the one in the source tree's ``pyproject.toml``."""
    try:
        return importlib.metadata.version("attribution")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def report_image(source: ImageInput, row: dict[str, Any],
                 exemplar_image: Callable[[str], ImageInput | None] | None = None) -> ReportImage:
    """Thumbnail and perceptual hash of ``source`` (the input of ``row``) and thumbnails of the row's nearest
    examples that ``exemplar_image`` finds (e.g. :meth:`attribution.Attributor.exemplar_image`; ``None``: not looked
    up); what cannot be decoded is left out."""
    try:
        frame = decode_image(source).frames[0]
    except (ImageDecodeError, OSError):
        return ReportImage()
    if exemplar_image is None:
        return ReportImage(thumbnail_jpeg(frame, THUMBNAIL_PX, MAX_THUMBNAIL_BYTES), perceptual_hash(frame), None)
    neighbours = {}
    for n in row.get("nearest") or []:
        picture = exemplar_image(n["id"]) if n.get("id") else None
        if picture is None:
            continue
        try:
            neighbours[n["id"]] = thumbnail_jpeg(decode_image(picture).frames[0], NEIGHBOUR_PX, MAX_THUMBNAIL_BYTES)
        except (ImageDecodeError, OSError):
            continue
    return ReportImage(thumbnail_jpeg(frame, THUMBNAIL_PX, MAX_THUMBNAIL_BYTES), perceptual_hash(frame), neighbours)


# ------------------------------------------------------------------------------------------ rendering
def _esc(text: Any) -> str:
    """Text safe in HTML, with ``http`` written as ``h&#116;tp`` (the same to a reader, no URL in the file)."""
    return _HTTP.sub(lambda m: f"{m.group(1)}&#{ord(m.group(2))};{m.group(3)}", html.escape(str(text)))


def _inline(text: str) -> str:
    """The card's Markdown lines (code spans only) as HTML."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _img(data: bytes, alt: str, css: str) -> str:
    """An inlined JPEG (its base64 goes through :func:`_esc` too: a character reference in an attribute is
    decoded before the URI is read, so the picture is intact and the file holds no ``http``)."""
    return f'<img class="{css}" alt="{_esc(alt)}" src="data:image/jpeg;base64,{_esc(base64.b64encode(data).decode())}">'


def _rows(pairs: Sequence[tuple[str, str]], css: str = "") -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="{css}">{body}</table>' if pairs else ""


def _head(head: HeadInfo, version: str, when: datetime.datetime, n_images: int) -> str:
    meta = [("analysed", when.strftime("%Y-%m-%d %H:%M:%S UTC")), ("tool", f"attribution {version}"),
            ("head", head.name), ("head revision", head.revision), ("classes", ", ".join(head.classes))]
    if head.base_head:
        meta.append(("base head", head.base_head))
    if head.enrolled:
        meta.append(("enrolled", ", ".join(f"{k} ({v})" if v != k else k for k, v in head.enrolled.items())))
    parts = [f"<h1>Attribution report</h1><p class=\"muted\">{n_images} image{'s' * (n_images != 1)}, analysed "
             "offline. Each verdict is evidence from the pixels, weighed by the measured caveats below: a lead, "
             "not proof.</p>", _rows(meta, "meta")]
    if head.summary or head.headline:
        parts.append("<h3>What the head is good and bad at (its model card)</h3>")
        items = [line.removeprefix("- ") for line in head.summary.splitlines() if line.strip()]
        parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>" if items else "")
        if head.headline:
            parts.append("<table><tr><th>on sources the head never saw (mean of the held-out folds)</th>"
                         "<th>share</th></tr>" + "".join(f"<tr><td>{_inline(t)}</td><td>{v:.0%}</td></tr>"
                                                         for t, v in head.headline) + "</table>")
    return "<header>" + "".join(parts) + "</header>"


def _lead(ev: Evidence) -> str:
    items = "".join(f'<li class="{line.kind}">{"Measured caveat: " if line.kind == "caveat" else ""}'
                    f"{_esc(line.text)}</li>" for line in ev.lead)
    rule = f'<p class="rule">Why: {_esc(ev.rule)}</p>' if ev.rule else ""
    return f'<p class="title">{_esc(ev.title)}</p>{rule}<ul class="lead">{items}</ul>'


def _nearest(ev: Evidence, image: ReportImage) -> str:
    if not ev.judged:
        return ""
    if not ev.nearest:
        return "<h3>Most similar known examples</h3><p class=\"muted\">None listed (the head keeps no examples, " \
               "or the image is the known example itself).</p>"
    pictures = image.neighbours or {}
    figures = "".join(
        "<figure>" + (_img(pictures[n.id], n.caption(), "") if n.id in pictures else "")
        + f"<figcaption>{_esc(n.caption())}</figcaption></figure>" for n in ev.nearest)
    if image.neighbours is None:
        note = "<p class=\"muted\">Pictures of the known examples are left out of a report of several images.</p>"
    elif not any(n.id in pictures for n in ev.nearest):
        note = ("<p class=\"muted\">Pictures of the known examples were not available where this report was made "
                "(the head's training data folder was not there).</p>")
    else:
        note = ""
    return f"<h3>Most similar known examples</h3>{note}<div class=\"neighbours\">{figures}</div>"


def _provenance(ev: Evidence, label: str | None) -> str:
    report = ev.provenance
    if report is None:
        return ""
    parts = [f"<h3>Provenance (what the file's own metadata says)</h3><p>{_esc(provenance_column(report))}</p>"]
    if report.c2pa and report.c2pa.checks:
        parts.append("<p>Content Credentials checks, as C2PA reported them:</p><ul>" + "".join(
            f'<li><span class="{"passed" if c.passed else "failed"}">{"passed" if c.passed else "failed"}</span>: '
            f"{_esc(c.detail)}</li>" for c in report.c2pa.checks) + "</ul>")
    if report.records:
        parts.append("<table><tr><th>source</th><th>field</th><th>value</th></tr>" + "".join(
            f"<tr><td>{_esc(r.source)}</td><td>{_esc(r.field)}</td><td>{_esc(r.value)}</td></tr>"
            for r in report.records) + "</table>")
    disagreement = disagreement_text(report, label)
    if disagreement:
        parts.append(f"<p><strong>Records and pixels disagree:</strong> {_esc(disagreement)}</p>")
    return "".join(parts)


def _case(index: int, row: dict[str, Any], image: ReportImage, names: Mapping[str, str]) -> str:
    ev = evidence(row, names)
    thumb = _img(image.thumbnail, ev.file, "thumb") if image.thumbnail else ""
    details = ev.details + ([("probabilities", ", ".join(f"{k} {p:.1%}" for k, p in ev.probabilities))]
                            if ev.probabilities else [])
    facts = ev.facts + ([("perceptual hash (pHash, 256 bits)", image.phash)] if image.phash else [])
    return (f'<section class="case" id="case-{index}"><h2>{index}. {_esc(ev.file)}</h2>'
            f'<div class="top">{thumb}<div class="verdict">{_lead(ev)}</div></div>'
            + _nearest(ev, image) + _provenance(ev, row.get("label"))
            + ("<h3>Details (scores that decided nothing, probabilities of the most likely sources)</h3>"
               + _rows(details) if details else "")
            + ("<h3>The input</h3>" + _rows(facts) if facts else "") + "</section>")


def render_report(rows: Sequence[dict[str, Any]], head: HeadInfo, images: Sequence[ReportImage | None] | None = None,
                  analysed_at: datetime.datetime | None = None) -> str:
    """The report of ``rows`` (``predict --json`` dicts, ``file`` as it should be named) by ``head``; ``images``
    (one per row, optional) adds thumbnails and perceptual hashes. Returns the HTML text."""
    when = (analysed_at or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    images = list(images or [])
    cases = "".join(_case(i + 1, row, (images[i] if i < len(images) else None) or ReportImage(), head.enrolled)
                    for i, row in enumerate(rows))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Attribution report: {_esc(head.name)}</title><style>{CSS}</style></head><body>"
            f"{_head(head, tool_version(), when, len(rows))}<main>{cases}</main></body></html>\n")


def report_name(files: Sequence[str]) -> str:
    """A download name for a report of ``files`` (client file names): ``report-<first stem>.html``."""
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(files[0]))[0])[:60] if files else "images"
    return f"report-{stem}{'-and-more' if len(files) > 1 else ''}.html"
