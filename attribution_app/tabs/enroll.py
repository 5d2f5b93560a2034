"""Enroll tab: a visitor's own generators. Enrolling, removing (after confirmation), exporting and
importing change only that visitor's state, never the served head."""
from __future__ import annotations

from typing import Any

import gradio as gr

from attribution import MIN_ENROLL_IMAGES, WARN_NOT_FLAGGED, WARN_PROBA, WARN_SHARE, Attributor

from .. import model as ops
from ..errors import guard
from ..render import code, enrollment_markdown, md, percent
from ..settings import MAX_ENROLL_IMAGES, UPLOAD_TYPES
from ..state import EXPORT_NAME, MAX_ENROLLMENTS, Enrollment, VisitorState, encode, export_zip, import_zip
from ..uploads import cleanup, expand_uploads, outbox_file, server_path
from . import Shared, Tab, progress_callback

ENROLLED_HEADER = ["label", "name", "images", "expected recall", "closest known class", "enrolled at (UTC)"]


def enrolled_rows(state: VisitorState, fingerprint: str | None) -> list[list[Any]]:
    """One row per enrollment of the visitor; those made for another head are marked."""
    stale = fingerprint is not None and state.stale(fingerprint)
    return [[e.label + (" (other head: not applied)" if stale else ""), e.display_name, e.n_images,
             percent(e.expected_recall), f"{e.closest_class} ({percent(e.closest_class_share)})", e.enrolled_at]
            for e in state.enrollments]


def build(shared: Shared) -> Tab:
    with gr.Tab("Enroll", id="enroll"):
        gr.Markdown(f"Add a generator the head does not know yet from **{MIN_ENROLL_IMAGES} to "
                    f"{MAX_ENROLL_IMAGES}** of its images (or a .zip). It takes seconds and is **yours only**: other visitors never see it. "
                    "It is kept in this browser (signed by the server) and you can export it as a .zip. Before "
                    f"enrolling, the app warns when {WARN_SHARE:.0%} or more of the images are attributed to one "
                    f"known class with probability >= {WARN_PROBA:.0%}, or when {WARN_NOT_FLAGGED:.0%} or more of "
                    "them, each left out of the enrollment, would still be called real or uncertain.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                name = gr.Textbox(label="Generator name", placeholder="e.g. Midjourney v6",
                                  info="letters, digits and spaces; stored as snake_case", elem_id="enroll-name")
                files = gr.File(label="Images of this generator", file_count="multiple", file_types=UPLOAD_TYPES,
                                elem_id="enroll-files")
                button = gr.Button("Enroll", variant="primary", elem_id="enroll-button")
            with gr.Column(scale=1):
                status = gr.Markdown(elem_id="enroll-status")
                with gr.Row(visible=False, elem_id="enroll-confirm") as confirm_box:
                    confirm = gr.Button("Enroll anyway", variant="stop", elem_id="enroll-anyway")
                    cancel = gr.Button("Cancel", elem_id="enroll-cancel")
        table = gr.Dataframe(headers=ENROLLED_HEADER, label=f"Your enrolled generators (up to {MAX_ENROLLMENTS})",
                             interactive=False, wrap=True, elem_id="enrolled-table",
                             column_widths=["20%", "18%", "8%", "12%", "24%", "18%"])
        with gr.Row():
            choice = gr.Dropdown(label="Your enrolled generator", choices=[], scale=3, elem_id="remove-choice")
            remove = gr.Button("Remove...", variant="stop", scale=1, elem_id="remove-button")
        with gr.Column(visible=False, elem_id="remove-confirm") as remove_box:
            question = gr.Markdown()
            with gr.Row():
                remove_yes = gr.Button("Yes, remove it", variant="stop", elem_id="remove-yes")
                remove_no = gr.Button("Keep it", elem_id="remove-no")
        with gr.Accordion("Keep or move your enrollments (.zip)", open=False):
            gr.Markdown("The export holds your enrollments (class statistics and small thumbnails of the images, "
                        "no originals), signed by this server; "
                        "import it here later or in another browser.")
            with gr.Row():
                export = gr.DownloadButton("Export my enrollments (.zip)", value=None, interactive=False,
                                           elem_id="enroll-export")
                upload = gr.File(label="Import an export (.zip)", file_types=[".zip"], elem_id="enroll-import-file")
                import_button = gr.Button("Import", elem_id="enroll-import")
        pending = gr.State(None)

    hidden, shown = gr.update(visible=False), gr.update(visible=True)

    def commit(state: VisitorState, enrollment: Enrollment, out: dict[str, Any]) -> dict[Any, Any]:
        fingerprint = ops.HOST.fingerprint
        dropped = state.stale(fingerprint)
        new = state.add(enrollment, fingerprint)
        note = "\n\n*Your enrollments made for another head were dropped.*" if dropped else ""
        return {shared.visitor: new, shared.stored: encode(new), status: enrollment_markdown(out, kept=True) + note,
                pending: None, confirm_box: hidden}

    @guard(status)
    def start(generator: str, upload_: Any, state: VisitorState, progress: Any = gr.Progress()) -> dict[Any, Any]:
        """Enroll for this visitor, or hold the enrollment for confirmation when it looks like a known class."""
        items, notes, tmp = expand_uploads(upload_, MAX_ENROLL_IMAGES)
        try:
            out, enrollment = ops.enroll(state, generator, items, progress=progress_callback(progress, "Enrolling"))
        finally:
            cleanup(tmp)
        extra = "".join(f"\n- {md(n)}" for n in notes)
        if out.get("warning"):
            return {pending: (out, enrollment), confirm_box: shown,
                    status: enrollment_markdown(out, kept=False) + extra}
        update = commit(state, enrollment, out)
        return {**update, status: update[status] + extra}

    @guard(status)
    def confirm_(held: Any, state: VisitorState) -> dict[Any, Any]:
        if not held:
            raise ValueError("nothing is waiting to be enrolled")
        out, enrollment = held
        return commit(state, enrollment, out)

    @guard(status)
    def ask_remove(label: str, state: VisitorState) -> dict[Any, Any]:
        if not label or label not in state.labels:
            raise ValueError("choose one of your enrolled generators first")
        return {remove_box: shown, question: f"Remove {code(label)} from your enrollments? This cannot be undone "
                                              "(export them first to keep a copy)."}

    @guard(status)
    def remove_(label: str, state: VisitorState) -> dict[Any, Any]:
        new = state.remove(label)
        return {shared.visitor: new, shared.stored: encode(new), remove_box: hidden,
                status: f"Removed {code(label)} from your enrollments."}

    @guard(status)
    def import_(file: Any, state: VisitorState) -> dict[Any, Any]:
        if not file:
            raise ValueError("choose an exported .zip first")
        new, message = import_zip(server_path(file), state, ops.HOST.fingerprint, ops.HOST.dim)
        return {shared.visitor: new, shared.stored: encode(new), status: md(message), upload: None}

    private = {"api_visibility": "private"}
    changed = [
        button.click(start, inputs=[name, files, shared.visitor],
                     outputs=[status, pending, confirm_box, shared.visitor, shared.stored],
                     concurrency_id="model", concurrency_limit=1, **private),
        confirm.click(confirm_, inputs=[pending, shared.visitor],
                      outputs=[status, pending, confirm_box, shared.visitor, shared.stored], **private),
        remove_yes.click(remove_, inputs=[choice, shared.visitor],
                         outputs=[status, remove_box, shared.visitor, shared.stored], **private),
        import_button.click(import_, inputs=[upload, shared.visitor],
                            outputs=[status, upload, shared.visitor, shared.stored], **private),
    ]
    cancel.click(lambda: {pending: None, confirm_box: hidden, status: "Not enrolled."},
                 outputs=[pending, confirm_box, status], **private)
    remove.click(ask_remove, inputs=[choice, shared.visitor], outputs=[status, remove_box, question], **private)
    remove_no.click(lambda: {remove_box: hidden}, outputs=[remove_box], **private)

    def refresh(view: Attributor | None, state: VisitorState) -> dict[Any, Any]:
        fingerprint = ops.HOST.fingerprint if view is not None else None
        path = outbox_file(EXPORT_NAME, export_zip(state)) if state.enrollments else None
        return {table: enrolled_rows(state, fingerprint),
                choice: gr.update(choices=state.labels, value=state.labels[-1] if state.labels else None),
                export: gr.update(value=path, interactive=path is not None)}

    return Tab(outputs=[table, choice, export], refresh=refresh, changes=changed)
