"""Attribute tab: one image gives a verdict (with a place for provenance), many give a table and a CSV."""
from __future__ import annotations

from typing import Any

import gradio as gr

from attribution import MIN_IMAGE_SIZE, Attributor, ImageDecodeError, load_image

from .. import model as ops
from ..errors import guard
from ..render import batch_summary, batch_table, column_widths, csv_table, md, provenance_markdown, verdict_markdown
from ..settings import MAX_ATTRIBUTE_IMAGES, NEAREST, THUMBNAIL, UPLOAD_TYPES
from ..state import VisitorState
from ..uploads import cleanup, expand_uploads, outbox_csv
from . import Shared, Tab, display_names, progress_callback


def nearest_gallery(view: Attributor, row: dict[str, Any]) -> list[tuple[Any, str]]:
    """Thumbnails (PIL images, so no server path reaches the page) of the nearest exemplars found on this machine."""
    items = []
    for n in row.get("nearest") or []:
        path = view.exemplar_path(n.get("id", ""))
        if path is None:
            continue
        try:
            im = load_image(path)
        except (ImageDecodeError, OSError):
            continue
        im.thumbnail((THUMBNAIL, THUMBNAIL))
        items.append((im, f"{n['label']} ({n['distance']:.2f})"))
    return items


def _preview(path: str) -> Any:
    try:
        im = load_image(path)
    except (ImageDecodeError, OSError):
        return None
    im.thumbnail((512, 512))
    return im


def build(shared: Shared) -> Tab:
    with gr.Tab("Attribute", id="attribute"):
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                files = gr.File(label=f"Images or a .zip of images (up to {MAX_ATTRIBUTE_IMAGES})",
                                file_count="multiple", file_types=UPLOAD_TYPES, elem_id="attr-files")
                with gr.Row():
                    button = gr.Button("Attribute", variant="primary", elem_id="attr-button")
                    clear = gr.ClearButton(value="Clear", elem_id="attr-clear")
                gr.Markdown("One image gives a verdict with scores and the most similar known examples; "
                            "several give a table you can download as CSV. Images under "
                            f"{MIN_IMAGE_SIZE} px on the short side are not judged.")
            with gr.Column(scale=2):
                status = gr.Markdown("*Results appear here.*", elem_id="attr-status")
                with gr.Column(visible=False) as single_box:
                    with gr.Row():
                        preview = gr.Image(label="Your image", type="pil", interactive=False, height=260, scale=1,
                                           buttons=[], format="png")  # PNG: browsers cannot show a HEIC upload
                        verdict = gr.Markdown(elem_id="attr-verdict", elem_classes=["verdict"])
                    provenance = gr.Markdown(visible=False, elem_id="attr-provenance")
                    scores = gr.Label(label="Probability per known source", num_top_classes=10, show_heading=False)
                    nearest = gr.Gallery(label="Most similar known examples", columns=4, height=200,
                                         object_fit="contain", allow_preview=True)
                with gr.Column(visible=False) as batch_box:
                    summary = gr.Markdown(elem_id="attr-summary")
                    table = gr.Dataframe(interactive=False, wrap=True, elem_id="attr-table", max_height=720)
                    download = gr.DownloadButton("Download CSV", visible=False, elem_id="attr-csv")
        clear.add([files, status, preview, verdict, provenance, scores, nearest, summary, table])

    hidden = gr.update(visible=False)

    @guard(status)
    def run(upload: Any, state: VisitorState, progress: Any = gr.Progress()) -> dict[Any, Any]:
        """Attribute the uploaded images for this visitor."""
        reset = {single_box: hidden, batch_box: hidden, download: gr.update(visible=False, value=None)}
        if not upload:
            return {**reset, status: "Upload one or more images (or a .zip of images) first."}
        items, notes, tmp = expand_uploads(upload, MAX_ATTRIBUTE_IMAGES)
        try:
            if not items:
                raise ValueError("no images found in the upload")
            report = progress_callback(progress, "Attributing")
            view, rows = ops.attribute(state, items, nearest=NEAREST, progress=report)
            names = display_names(view)
            note = "\n".join(f"*{md(n)}*" for n in notes)
            if len(rows) == 1:
                row = rows[0]
                panel = provenance_markdown(row)
                return {**reset, status: note, single_box: gr.update(visible=True), preview: _preview(items[0][1]),
                        verdict: verdict_markdown(row, names), provenance: gr.update(value=panel, visible=bool(panel)),
                        scores: row.get("scores") or None, nearest: nearest_gallery(view, row)}
            header, values = batch_table(rows, names)
            csv_header, csv_values = csv_table(rows)
            return {**reset, status: note, batch_box: gr.update(visible=True), summary: batch_summary(rows, names),
                    table: gr.update(value=values, headers=header, column_widths=column_widths(header)),
                    download: gr.update(visible=True, value=outbox_csv(csv_header, csv_values, "attribution.csv"))}
        finally:
            cleanup(tmp)

    button.click(run, inputs=[files, shared.visitor],
                 outputs=[status, single_box, preview, verdict, provenance, scores, nearest, batch_box, summary,
                          table, download],
                 api_visibility="private", concurrency_id="model", concurrency_limit=1)
    return Tab()

