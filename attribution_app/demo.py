"""The whole app: :func:`build_demo` lays out the tabs and wires them together; :func:`main` serves it."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

import gradio as gr

from attribution import DEFAULT_ZOO_NAME, Attributor, ZooError

from . import api
from .model import HOST, view_or_none
from .render import code, md
from .settings import (ADMIN_TOKEN_ENV, CONCURRENCY, MAX_FILE_SIZE, QUEUE_SIZE, SECRET_ENV, SHARE_ENV, ZOO_ENV,
                       admin_enabled, env_flag)
from .state import BROWSER_KEY, BROWSER_OBFUSCATION, VisitorState, load_stored, secret_is_ephemeral
from .tabs import Shared, attribute, enroll, verify, zoo

CSS = """
.verdict h2 { margin-top: 0; }
table th, table th * { word-break: normal !important; overflow-wrap: normal !important; hyphens: none; }
#attr-table :is(th, td, span), #verify-table :is(th, td, span), #enrolled-table :is(th, td, span),
#zoo-list :is(th, td, span) { font-family: var(--font) !important; }
#zoo-card :is(th, td) { padding: 2px 8px !important; }
#zoo-card img { display: inline-block !important; }
"""
# fonts every system has: nothing is fetched from the network, and bold text is the font's own bold
THEME = gr.themes.Default(
    font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"])

INTRO = f"""# Which generative model made this image?
Upload an image: the app tells whether it is **real**, made by one of the **known generators**, or made by an
**unknown generator** (open-set). Teach it a new generator from a few images in **Enroll** (for you only), check
one generator in **Verify**, and see the model in **Zoo**. Uploads: up to {MAX_FILE_SIZE.upper()} per file; they
are deleted from the server within two hours."""

LAUNCH_KWARGS: dict[str, Any] = {"max_file_size": MAX_FILE_SIZE, "css": CSS, "theme": THEME,
                                 "footer_links": ["api", "gradio"]}


def banner(view: Attributor | None, state: VisitorState) -> str:
    """The line above the tabs: the served head, the visitor's own generators, and any notice about them."""
    if view is None:
        return f"**No head is served.** {md(HOST.load_error or '')}"
    own = {e.label for e in state.active(HOST.fingerprint)}
    mine = [c for c in view.classes if c in own]
    shipped = [c for c in view.classes if c not in own]
    text = (f"Head {code(HOST.base().name)} knows {len(shipped)} sources: " + ", ".join(code(c) for c in shipped)
            + (". **Yours** (only you see them): " + ", ".join(code(c) for c in mine) if mine else "") + ".")
    return text + (f"\n\n> **Note:** {md(state.notice)}" if state.notice else "")


def build_demo() -> gr.Blocks:
    """The app: four tabs over one served head, per-visitor enrollments, and the ``gr.api`` endpoints."""
    with gr.Blocks(title="Generator attribution", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        head_banner = gr.Markdown(elem_id="head-banner")
        shared = Shared(visitor=gr.State(VisitorState()),
                        stored=gr.BrowserState(None, storage_key=BROWSER_KEY, secret=BROWSER_OBFUSCATION))
        tabs = [attribute.build(shared), enroll.build(shared), verify.build(shared), zoo.build(shared)]
        outputs = [head_banner, *(o for t in tabs for o in t.outputs)]

        def refresh(state: VisitorState) -> dict[Any, Any]:
            """Every head-dependent part of the page, for this visitor."""
            view = view_or_none(state)
            updates: dict[Any, Any] = {head_banner: banner(view, state)}
            for t in tabs:
                updates.update(t.refresh(view, state))
            return updates

        def restore(stored: Any) -> dict[Any, Any]:
            """Page load: the visitor's enrollments from their browser (checked as untrusted input), then the page."""
            try:
                state = load_stored(stored, HOST.fingerprint, HOST.dim)
            except ZooError:
                state = VisitorState()  # nothing to check them against: the browser keeps them meanwhile
            return {shared.visitor: state, **refresh(state)}

        demo.load(restore, inputs=[shared.stored], outputs=[shared.visitor, *outputs], api_visibility="private")
        for t in tabs:
            for event in t.changes:
                event.then(refresh, inputs=[shared.visitor], outputs=outputs, api_visibility="private")
        api.register()
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def main(demo: gr.Blocks, argv: Sequence[str] | None = None) -> None:
    """``python app.py [--zoo REF] [--share]``: load and warm up the head, then serve ``demo``."""
    parser = argparse.ArgumentParser(description="Web app: which generative model made this image?")
    parser.add_argument("--zoo", default=os.environ.get(ZOO_ENV),
                        help=f"head name, folder or hf-hub:org/repo (default: {DEFAULT_ZOO_NAME}; env {ZOO_ENV})")
    parser.add_argument("--share", action="store_true", default=env_flag(SHARE_ENV),
                        help=f"also serve through a temporary public *.gradio.live link (env {SHARE_ENV}=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    HOST.set_ref(args.zoo)
    try:
        att = HOST.warm_up()
        print(f"* Serving head {att.name} ({len(att.classes)} classes)", flush=True)
    except ZooError as exc:
        print(f"warning: {exc}\n  The app starts anyway and says so on the page.", file=sys.stderr, flush=True)
    if secret_is_ephemeral():
        print(f"* {SECRET_ENV} is not set: visitors' saved enrollments are signed with a key of this run only and "
              "will not load after a restart", flush=True)
    print(f"* Admin actions {'enabled' if admin_enabled() else f'disabled (set {ADMIN_TOKEN_ENV} to enable)'}",
          flush=True)
    # quiet: gradio's own hints name launch(share=True), not this app's --share
    demo.launch(share=args.share, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS)
    print(f"* Running on local URL:  {demo.local_url}", flush=True)
    if not args.share:
        print(f"* To create a public link, start the app with --share (or {SHARE_ENV}=1)", flush=True)
    elif not demo.share_url:
        print(f"* No public link could be created (no network access to the gradio share server?). "
              f"The app keeps serving locally at {demo.local_url}", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
