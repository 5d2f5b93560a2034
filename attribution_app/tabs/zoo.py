"""Zoo tab: the served head, its card and every head of the zoo, read-only. With the operator's admin
token (``ATTRIBUTION_ADMIN_TOKEN``) a visitor may serve another head to everyone, save their enrollments
as a new head, or push the served head to the Hub."""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any

import gradio as gr

from attribution import Attributor, zoo
from attribution.heads.card import model_card

from .. import model as ops
from ..errors import guard, scrub_paths
from ..render import code, md, percent
from ..settings import ADMIN_TOKEN_ENV, HF_TOKEN_ENV, admin_enabled
from ..state import VisitorState
from . import Shared, Tab

LIST_HEADER = ["name", "origin", "base head", "backbone", "classes", "note"]


def origin(att: Attributor) -> str:
    """Where the served head comes from: the shipped zoo, the user zoo, or elsewhere (a folder or the Hub)."""
    parent = Path(att.source).resolve().parent if att.source else None
    if parent == zoo.SHIPPED_ZOO.resolve():
        return "shipped"
    return "user zoo" if parent == zoo.user_zoo_dir().resolve() else "folder or Hub"


def head_summary(base: Attributor | None, state: VisitorState) -> str:
    """The served head (as shipped or trained: its own metrics) and the visitor's enrollments on top of it."""
    if base is None:
        return f"**No head is served** ({md(ops.HOST.load_error or 'not loaded yet')})."
    cfg = base.config
    lines = [f"**Served head:** {code(base.name)} ({origin(base)})"
             + (f", made from {code(cfg['base_head'])} by enrollment" if cfg.get("base_head") else ""),
             f"**Backbone:** {code(cfg['backbone']['id'])}, {len(cfg['backbone'].get('layers', []))} layers, "
             f"{cfg.get('preprocess_cfg', {}).get('n_crops', '?')} crop(s) of "
             f"{cfg.get('preprocess_cfg', {}).get('size', '?')} px",
             f"**Classes ({len(base.classes)}):** " + ", ".join(code(c) for c in base.classes),
             f"**Unknown threshold:** {-float(base.head.offset_):.4f}",
             "What it is worth, measured on sources it never saw, is in its model card below."]
    mine = state.active(ops.HOST.fingerprint)
    if mine:
        lines.append("**Your enrollments** (only you see them; not included in the metrics above):\n" + "\n".join(
            f"- {code(e.label)}: expected recall {percent(e.expected_recall)}, closest known class "
            f"{code(e.closest_class)} ({percent(e.closest_class_share)})" for e in mine))
    return "\n\n".join(lines)


FIGURE = re.compile(r"!\[([^\]]*)\]\(([\w.-]+\.png)\)")
FIGURES_APART = re.compile(r"(<img [^>]*>)\s*\n\s*\n(?=<img )")
FOLDED_CODE = re.compile(r"<details><summary>(.*?)</summary>\s*```\w*\n(.*?)```\s*</details>", re.S)


def head_card(base: Attributor | None) -> str:
    """The served head's model card as :func:`attribution.heads.card.model_card` writes it (plain summary and
    headline figures first, raw metrics folded), without front matter or server paths; its figures inlined."""
    if base is None:
        return ""
    text = model_card(base.config)
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4:].lstrip() if end != -1 else text

    def figure(m: re.Match) -> str:
        path = Path(base.source) / m.group(2) if base.source else None
        if path is None or not path.is_file():
            return f"*(figure {m.group(2)} is not on this server)*"
        data = base64.b64encode(path.read_bytes()).decode()  # half the column wide: the card stays short
        return f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}" width="49%">'

    def folded(m: re.Match) -> str:  # one HTML block: a fenced block would end the <details> in the page's Markdown
        return f"<details><summary>{m.group(1)}</summary><pre>{html.escape(m.group(2))}</pre></details>"

    # server paths are scrubbed outside HTML tags only (the scrub would take "</pre>" for a path), and before the
    # figures are inlined (base64 holds slashes)
    parts = re.split(r"(</?[A-Za-z][^>]*>)", FOLDED_CODE.sub(folded, text))
    card = FIGURE.sub(figure, "".join(part if i % 2 else scrub_paths(part) for i, part in enumerate(parts)))
    return FIGURES_APART.sub(r"\1 ", card)  # the figures side by side


def zoo_rows() -> list[list[Any]]:
    rows = []
    for e in zoo.list_zoo():
        note = scrub_paths(e.get("error", "")) or ("named like a shipped head: not loadable by name"
                                                   if e["shadowed"] else "")
        rows.append([e["name"], e["origin"], e.get("base_head") or "", e.get("backbone", ""),
                     len(e.get("classes", [])), note])
    return rows


def build(shared: Shared) -> Tab:
    with gr.Tab("Zoo", id="zoo") as tab:
        gr.Markdown("The head (the model) this app serves, its model card, and every head of the server's zoo: "
                    "**shipped** heads come with the app, **user** heads were made on this server (an enrolled head "
                    "is named `<base head>-with-<generator>` and never replaces its base). The zoo is read-only "
                    "from the web.")
        info = gr.Markdown(elem_id="zoo-info")
        with gr.Accordion("Model card of the served head", open=True, elem_id="zoo-card-box"):
            card = gr.Markdown(elem_id="zoo-card")
        listing = gr.Dataframe(headers=LIST_HEADER, label="Heads in the zoo", interactive=False, wrap=True,
                               elem_id="zoo-list",
                               column_widths=["30%", "9%", "22%", "18%", "8%", "13%"])
        changed: list[Any] = []
        choice: gr.Dropdown | None = None
        if admin_enabled():
            with gr.Accordion("Operator", open=False, elem_id="zoo-admin"):
                gr.Markdown(f"For the operator (the token is the `{ADMIN_TOKEN_ENV}` the app was started with). "
                            "Serving another head changes it for every visitor.")
                token = gr.Textbox(label="Admin token", type="password", elem_id="admin-token")
                with gr.Row():
                    choice = gr.Dropdown(label="Head", choices=[], allow_custom_value=True, scale=3,
                                         info="a name from the list, a folder, or hf-hub:org/repo")
                    load = gr.Button("Serve to everyone", variant="stop", scale=1, elem_id="admin-load")
                save = gr.Button("Save my enrollments as a new head in the zoo", elem_id="admin-save")
                with gr.Row():
                    repo = gr.Textbox(label="Hugging Face repo id", placeholder="your-name/my-attribution-head",
                                      scale=3)
                    private = gr.Checkbox(label="private", value=True, scale=1)
                    push = gr.Button("Push the served head to the Hub", scale=1)
                status = gr.Markdown(elem_id="admin-status")

            @guard(status)
            def load_(secret: str, ref: str) -> dict[Any, Any]:
                ops.check_admin(secret)
                att = ops.HOST.switch(ref)
                return {status: f"Now serving {code(att.name)} to every visitor. Enrollments made for the previous "
                                "head are kept aside and visitors are told to redo them."}

            @guard(status)
            def save_(secret: str, state: VisitorState) -> dict[Any, Any]:
                ops.check_admin(secret)
                return {status: f"Saved as head {code(ops.save_enrollments(state))} in the server's zoo (the served "
                                "head is unchanged)."}

            @guard(status)
            def push_(secret: str, repo_id: str, is_private: bool) -> dict[Any, Any]:
                ops.check_admin(secret)
                hf_token = os.environ.get(HF_TOKEN_ENV)
                if not hf_token:
                    raise ValueError(f"pushing needs a write token in the {HF_TOKEN_ENV} environment variable")
                repo_id = (repo_id or "").strip()
                if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
                    raise ValueError("type a Hub repo id like your-name/my-attribution-head")
                source = ops.HOST.base().source
                if source is None:
                    raise ValueError("the served head has no folder to upload")
                url = zoo.push_to_hub(str(source), repo_id, token=hf_token, private=bool(is_private))
                return {status: f"Pushed to [{md(repo_id)}]({url}). Others can load it with "
                                f"{code('hf-hub:' + repo_id)}."}

            private_ = {"api_visibility": "private"}
            changed.append(load.click(load_, inputs=[token, choice], outputs=[status], concurrency_id="model",
                                      concurrency_limit=1, **private_))
            save.click(save_, inputs=[token, shared.visitor], outputs=[status], **private_).then(
                lambda: {listing: zoo_rows()}, outputs=[listing], **private_)
            push.click(push_, inputs=[token, repo, private], outputs=[status], **private_)
    outputs = [info, card, listing] + ([choice] if choice is not None else [])

    def refresh(view: Attributor | None, state: VisitorState) -> dict[Any, Any]:
        base = ops.HOST.base() if view is not None else None
        updates: dict[Any, Any] = {info: head_summary(base, state), card: head_card(base), listing: zoo_rows()}
        if choice is not None:
            names = sorted({e["name"] for e in zoo.list_zoo()})
            updates[choice] = gr.update(choices=names, value=base.name if base is not None else None)
        return updates

    tab.select(lambda state: refresh(ops.view_or_none(state), state), inputs=[shared.visitor], outputs=outputs,
               api_visibility="private")
    return Tab(outputs=outputs, refresh=refresh, changes=changed)
