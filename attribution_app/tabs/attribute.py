"""Attribute tab: one image gives a verdict with all its evidence, many (a deliberate multi-file or .zip upload)
give a table; both can be downloaded as a self-contained HTML report, the table also as CSV. A new upload
replaces the previous one."""
from __future__ import annotations

from typing import Any, Sequence

import gradio as gr

from attribution import MIN_IMAGE_SIZE, Attributor, ImageDecodeError, load_image
from attribution.evidence import evidence
from attribution.report import HeadInfo, render_report, report_image, report_name

from .. import model as ops
from ..errors import guard
from ..render import (batch_summary, batch_table, column_widths, csv_table, details_markdown, md, nearest_markdown,
                      provenance_markdown, verdict_markdown)
from ..settings import MAX_ATTRIBUTE_IMAGES, NEAREST, THUMBNAIL, UPLOAD_TYPES
from ..state import VisitorState
from ..uploads import Item, cleanup, expand_uploads, outbox_csv, outbox_file, server_path
from . import Shared, Tab, display_names, progress_callback

READY = "*Results appear here.*"


def nearest_gallery(view: Attributor, row: dict[str, Any]) -> list[tuple[Any, str]]:
    """Thumbnails (PIL images, so no server path reaches the page) of the nearest examples that have a picture: the
    visitor's own enrolled images from the thumbnails of their enrollments (``view`` carries that visitor's only),
    others from files on this machine; an exact duplicate's own entry left out (it is shown as the duplicate)."""
    items = []
    for n in evidence(row).nearest:
        picture = view.exemplar_image(n.id)
        if picture is None:
            continue
        try:
            im = load_image(picture)
        except (ImageDecodeError, OSError):
            continue
        im.thumbnail((THUMBNAIL, THUMBNAIL))
        items.append((im, n.caption()))
    return items


def _preview(path: str) -> Any:
    try:
        im = load_image(path)
    except (ImageDecodeError, OSError):
        return None
    im.thumbnail((512, 512))
    return im


def report_file(view: Attributor, items: Sequence[Item], rows: list[dict[str, Any]]) -> str:
    """The HTML report of ``rows`` (file names as the visitor gave them) as a download; its path. Pictures of the
    nearest known examples go in the report of one image only (a batch's would cost a decode each)."""
    exemplars = view.exemplar_image if len(rows) == 1 else None
    images = [report_image(path, row, exemplars) for (_, path), row in zip(items, rows)]
    html = render_report(rows, HeadInfo.of(view), images)
    return outbox_file(report_name([name for name, _ in items]), html.encode("utf-8"))


def fresh_upload(value: Any, last: list[str]) -> tuple[list[Any], list[str]]:
    """The files of the latest upload in the file box, and their paths. The box appends an upload to what it held;
    ``last`` are the paths of the upload before, or of this one when :func:`replace` has run meanwhile: the latest
    upload is the end of the box either way."""
    files = value if isinstance(value, list) else [value] if value else []
    paths, n = [server_path(f) for f in files], len(last)
    if n and paths[-n:] == last:  # this upload, already recorded
        return files[-n:], last
    new = files[n:] if n and paths[:n] == last else []  # appended after the upload before
    return (new, paths[n:]) if new else (files, paths)


def build(shared: Shared) -> Tab:
    with gr.Tab("Attribute", id="attribute"):
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                files = gr.File(label=f"Images or a .zip of images (up to {MAX_ATTRIBUTE_IMAGES})",
                                file_count="multiple", file_types=UPLOAD_TYPES, elem_id="attr-files")
                with gr.Row():
                    button = gr.Button("Attribute", variant="primary", elem_id="attr-button")
                    clear = gr.ClearButton(value="Clear", elem_id="attr-clear")
                gr.Markdown("One image gives a verdict with all its evidence; several (chosen together, or a .zip) "
                            "give a table. Both download as a report (one HTML file, no network needed), the table "
                            "also as CSV. A new upload replaces the previous one. Images under "
                            f"{MIN_IMAGE_SIZE} px on the short side are not judged.")
            with gr.Column(scale=2):
                status = gr.Markdown(READY, elem_id="attr-status")
                with gr.Column(visible=False) as single_box:
                    with gr.Row():
                        preview = gr.Image(label="Your image", type="pil", interactive=False, height=260, scale=1,
                                           buttons=[], format="png")  # PNG: browsers cannot show a HEIC upload
                        verdict = gr.Markdown(elem_id="attr-verdict", elem_classes=["verdict"])
                    nearest_text = gr.Markdown(elem_id="attr-nearest")
                    nearest = gr.Gallery(label="Most similar known examples", columns=4, height=200, visible=False,
                                         object_fit="contain", allow_preview=True, elem_id="attr-nearest-gallery")
                    provenance = gr.Markdown(visible=False, elem_id="attr-provenance")
                    with gr.Accordion("Details: scores that decided nothing, probabilities, the input and its "
                                      "SHA-256", open=False, elem_id="attr-details-box"):
                        details = gr.Markdown(elem_id="attr-details")
                        scores = gr.Label(label="Probability per known source", num_top_classes=10,
                                          show_heading=False)
                    report = gr.DownloadButton("Download report", visible=False, elem_id="attr-report")
                with gr.Column(visible=False) as batch_box:
                    summary = gr.Markdown(elem_id="attr-summary")
                    table = gr.Dataframe(interactive=False, wrap=True, elem_id="attr-table", max_height=720)
                    with gr.Row():
                        download = gr.DownloadButton("Download CSV", visible=False, elem_id="attr-csv")
                        batch_report = gr.DownloadButton("Download report", visible=False, elem_id="attr-batch-report")
        uploaded = gr.State([])  # server paths of the last upload, to tell a new one from what the box held
        clear.add([files, status, preview, verdict, nearest_text, nearest, provenance, details, scores, summary, table])

    hidden = gr.update(visible=False)
    reset = {single_box: hidden, batch_box: hidden, status: READY,
             **{b: gr.update(visible=False, value=None) for b in (download, report, batch_report)}}

    def replace(value: Any, previous: list[str]) -> dict[Any, Any]:
        """A new upload replaces the previous one (the file box appends). It updates nothing that :func:`run`
        updates: a click right after the upload must not have its results overtaken."""
        new, paths = fresh_upload(value, previous)
        return {files: new, uploaded: paths}

    @guard(status)
    def run(upload: Any, previous: list[str], state: VisitorState, progress: Any = gr.Progress()) -> dict[Any, Any]:
        """Attribute the last upload for this visitor (also when the button beats :func:`replace`)."""
        upload, _ = fresh_upload(upload, previous)
        if not upload:
            return {**reset, status: "Upload one or more images (or a .zip of images) first."}
        items, notes, tmp = expand_uploads(upload, MAX_ATTRIBUTE_IMAGES)
        try:
            if not items:
                raise ValueError("no images found in the upload")
            report_progress = progress_callback(progress, "Attributing")
            view, rows = ops.attribute(state, items, nearest=NEAREST, progress=report_progress)
            names = display_names(view)
            note = "\n".join(f"*{md(n)}*" for n in notes)
            file = gr.update(visible=True, value=report_file(view, items, rows))
            if len(rows) == 1:
                row = rows[0]
                panel, gallery = provenance_markdown(row), nearest_gallery(view, row)
                return {**reset, status: note, single_box: gr.update(visible=True), preview: _preview(items[0][1]),
                        verdict: verdict_markdown(row, names),
                        nearest_text: nearest_markdown(evidence(row, names), len(gallery)),
                        nearest: gr.update(value=gallery, visible=bool(gallery)),
                        provenance: gr.update(value=panel, visible=bool(panel)),
                        details: details_markdown(row, names), report: file,
                        scores: gr.update(value=row.get("scores") or None, visible=bool(row.get("scores")))}
            header, values = batch_table(rows, names)
            csv_header, csv_values = csv_table(rows)
            return {**reset, status: note, batch_box: gr.update(visible=True), summary: batch_summary(rows, names),
                    table: gr.update(value=values, headers=header, column_widths=column_widths(header)),
                    download: gr.update(visible=True, value=outbox_csv(csv_header, csv_values, "attribution.csv")),
                    batch_report: file}
        finally:
            cleanup(tmp)

    private = {"api_visibility": "private"}
    results = [status, single_box, preview, verdict, nearest_text, nearest, provenance, details, scores, report,
               batch_box, summary, table, download, batch_report]
    files.upload(replace, inputs=[files, uploaded], outputs=[files, uploaded], **private)
    clear.click(lambda: {**reset, uploaded: []}, outputs=[uploaded, *results], **private)
    button.click(run, inputs=[files, uploaded, shared.visitor], outputs=results, concurrency_id="model",
                 concurrency_limit=1, **private)
    return Tab()
