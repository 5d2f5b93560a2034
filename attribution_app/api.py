"""The three named endpoints for scripts (``gradio_client``), declared with ``gr.api``.

Each ``Client`` is one session: what it enrolls with ``/enroll`` is used by its own later ``/attribute``
and ``/verify`` calls and by nobody else's. The answers are the CLI's JSON objects (``/attribute`` as
``predict`` without ``--nearest``, ``/enroll`` as ``enroll``, ``/verify`` as ``verify``), except that
``file`` is the name the client gave the file and ``saved_to`` is ``None`` (nothing is written on the server).
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from gradio import FileData

from . import model as ops
from .errors import guard
from .settings import MAX_ENROLL_IMAGES
from .state import SessionStore
from .uploads import cleanup, client_name, expand_uploads, server_path

SESSIONS = SessionStore()
MODEL_GROUP = {"concurrency_id": "model", "concurrency_limit": 1}


def _one(image: Any) -> list[tuple[str, str]]:
    if not image:
        raise ValueError("send one image file")
    return [(client_name(image), server_path(image))]


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("error"):
        raise ValueError(f"could not read {row['file']}: {row['error']}")
    return row


@guard()
def attribute(image: FileData, request: gr.Request) -> dict[str, Any]:
    """Attribute one image: real, a known (or your enrolled) generator, or unknown. Returns the CLI predict object."""
    _, rows = ops.attribute(SESSIONS.get(request.session_hash), _one(image))
    return _answer(rows[0])


@guard()
def enroll(name: str, images: list[FileData], force: bool = False, request: gr.Request = None) -> dict[str, Any]:
    """Enroll generator ``name`` from 3-50 images (or .zip files) for this client session only.

    Refused, with the reason, when half or more of the images are attributed to one known class with
    probability >= 0.8, unless ``force`` is true. Returns the CLI enroll object.
    """
    session = request.session_hash if request else None
    items, _, tmp = expand_uploads(images, MAX_ENROLL_IMAGES)
    try:
        state = SESSIONS.get(session)
        out, enrollment = ops.enroll(state, name, items)
    finally:
        cleanup(tmp)
    if out.get("warning") and not force:
        raise ValueError(f"{out['name']} was not enrolled: {out['warning']}. Send force=True to enroll it anyway")
    SESSIONS.put(session, state.add(enrollment, ops.HOST.fingerprint))
    return out


@guard()
def verify(model: str, image: FileData, request: gr.Request) -> dict[str, Any]:
    """Was this image made by ``model`` (a class of the head, or one this session enrolled)? Returns the CLI
    verify object, with ``false_match_rate_at_score``."""
    return _answer(ops.verify(SESSIONS.get(request.session_hash), _one(image), model)[0])


def register() -> None:
    """Declare the endpoints (inside the ``gr.Blocks`` context)."""
    gr.api(attribute, api_name="attribute", **MODEL_GROUP)
    gr.api(enroll, api_name="enroll", **MODEL_GROUP)
    gr.api(verify, api_name="verify", **MODEL_GROUP)
