"""Verify tab: "was each image made by this generator?" The visitor picks a verifier and the tab calls it:
black-box against a class of their head (shipped or their own), a saved verifier of the operator's zoo
(OCC-CLIP...) by name, or white-box with a diffusers pipeline and its calibration."""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from attribution import REAL, Attributor

from attribution.verification import list_verifiers

from .. import model as ops
from ..errors import guard, scrub_paths
from ..render import code, column_widths, md, verify_markdown, verify_table
from ..settings import MAX_VERIFY_IMAGES, UPLOAD_TYPES
from ..state import VisitorState
from ..uploads import Item, cleanup, expand_uploads, server_path
from . import Shared, Tab, progress_callback

BLACKBOX = "Black-box: a class of the head"
SAVED = "Saved verifier (OCC-CLIP...)"
WHITEBOX = "White-box: diffusers pipeline folder or Hub id"


def whitebox_rows(source: str, calibration: str | None, steps: int, items: list[Item],
                  progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """White-box verification of ``(client name, path)`` pairs: one CLI ``verify`` dict per image."""
    source = (source or "").strip()
    if not source:
        raise ValueError("type a diffusers pipeline folder or Hub id for white-box mode")
    return ops.verify_with(ops.HOST.whitebox(source, calibration, steps), items, progress)


def saved_choices() -> list[tuple[str, str]]:
    """``(label, name)`` of every saved verifier in the zoo folders: names only, never paths."""
    return [(f"{e['name']} ({e['type'].removesuffix('Verifier')}: {e['model'] or '?'})", e["name"])
            for e in list_verifiers()]


def build(shared: Shared) -> Tab:
    with gr.Tab("Verify", id="verify"):
        gr.Markdown("Was each image made by one particular generator? **Black-box** compares the image with what "
                    "the head knows about that generator (its known classes and yours). A **saved verifier** "
                    "(e.g. OCC-CLIP, learnt CLIP prompts) was fitted for one generator beforehand. **White-box** "
                    "needs the generator itself (a latent-diffusion pipeline): it tries to reproduce the image with "
                    "the model's decoder, which is slow on CPU (minutes per image). The *false-match rate at this "
                    "score* says how often images from other known sources score as high: the smaller, the stronger "
                    "the evidence.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                mode = gr.Radio([BLACKBOX, SAVED, WHITEBOX], value=BLACKBOX, label="Mode")
                model = gr.Dropdown(label="Generator", choices=[], elem_id="verify-model")
                saved = gr.Dropdown(label="Saved verifier", choices=saved_choices(), visible=False,
                                    elem_id="verify-saved",
                                    info="verifiers fitted with `attribution fit-verifier` into the zoo")
                with gr.Group(visible=False) as whitebox_box:
                    wb_source = gr.Textbox(label="Diffusers pipeline folder or Hub id",
                                           placeholder="a folder on the server, or org/repo")
                    wb_steps = gr.Slider(0, 200, value=50, step=10, label="Inversion steps",
                                         info="a calibration file overrides this with the value it was made with")
                    wb_calibration = gr.File(label="Calibration file (optional): a .zip of the folder `attribution "
                                                   "calibrate` saves, or an attribution_whitebox.json",
                                             file_types=[".zip", ".json"])
                files = gr.File(label="Images to verify", file_count="multiple", file_types=UPLOAD_TYPES,
                                elem_id="verify-files")
                button = gr.Button("Verify", variant="primary", elem_id="verify-button")
            with gr.Column(scale=2):
                summary = gr.Markdown(elem_id="verify-summary")
                table = gr.Dataframe(interactive=False, wrap=True, elem_id="verify-table", max_height=720,
                                     visible=False)  # shown with the first results: no placeholder headers

    @guard(summary)
    def run(mode_: str, model_: str, saved_: str, upload: Any, source: str, steps: float, calibration: Any,
            state: VisitorState, progress: Any = gr.Progress()) -> dict[Any, Any]:
        """Verify the uploaded images for this visitor."""
        items, notes, tmp = expand_uploads(upload, MAX_VERIFY_IMAGES)
        try:
            if not items:
                raise ValueError("upload one or more images to verify first")
            if mode_ == WHITEBOX:
                rows = whitebox_rows(source, server_path(calibration) if calibration else None, int(steps or 50),
                                     items, progress=progress_callback(progress, "Inverting the VAE decoder"))
                target = f"{code(scrub_paths(source.strip()))} (white-box)"
            elif mode_ == SAVED:
                verifier = ops.HOST.saved_verifier(saved_)
                rows = ops.verify_with(verifier, items, progress=progress_callback(progress, "Verifying"))
                target = f"{code(scrub_paths(verifier.name))} ({verifier.method})"
            else:
                rows = ops.verify(state, items, model_, progress=progress_callback(progress, "Verifying"))
                target = code(model_)
        finally:
            cleanup(tmp)
        header, values = verify_table(rows)
        text = verify_markdown(rows, target) + "".join(f"\n\n*{md(n)}*" for n in notes)
        return {summary: text, table: gr.update(value=values, headers=header, column_widths=column_widths(header),
                                                visible=True)}

    mode.change(lambda m: {whitebox_box: gr.update(visible=m == WHITEBOX), model: gr.update(visible=m == BLACKBOX),
                           saved: gr.update(visible=m == SAVED, choices=saved_choices())},
                inputs=mode, outputs=[whitebox_box, model, saved], api_visibility="private")
    button.click(run, inputs=[mode, model, saved, files, wb_source, wb_steps, wb_calibration, shared.visitor],
                 outputs=[summary, table], api_visibility="private",
                 concurrency_id="verify", concurrency_limit=1)  # white-box runs for minutes

    def refresh(view: Attributor | None, state: VisitorState) -> dict[Any, Any]:
        classes = view.classes if view is not None else []
        enrolled = [c for c in classes if c in state.labels]
        default = enrolled[-1] if enrolled else next((c for c in classes if c != REAL), None)
        return {model: gr.update(choices=classes, value=default)}

    return Tab(outputs=[model], refresh=refresh)
