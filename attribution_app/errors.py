"""One error policy for every callback and endpoint.

Expected input errors (bad uploads, names, stored state, a head that cannot load) are shown to the
visitor as a message; anything else is logged with its traceback under a short reference and shown
as an internal error. No message ever carries a server path.
"""
from __future__ import annotations

import functools
import logging
import re
import secrets
from typing import Any, Callable

import gradio as gr

from attribution import ZooError

from .render import error_markdown

EXPECTED_ERRORS = (ValueError, ZooError)  # ImageDecodeError and StateError are ValueErrors
log = logging.getLogger("attribution_app")

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"`<>()\[\]{}|,;]+/)*([^\s'\"`<>()\[\]{}|,;/]*)")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last part (``/tmp/gradio/ab12/x.png`` -> ``x.png``)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(folder)", str(text))


def internal_error(exc: BaseException, where: str) -> str:
    """Log ``exc`` with its traceback and return the message a visitor sees."""
    ref = secrets.token_hex(4)
    log.error("internal error %s in %s", ref, where, exc_info=exc)
    return f"internal error (reference {ref}); the operator can look it up in the server log"


def guard(message_to: gr.components.Component | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a callback: errors become ``{message_to: message}`` (shown in that tab only: no toast, which would
    stay over the other tabs), or a ``gr.Error`` for API endpoints (``message_to=None``)."""
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except gr.Error as exc:
                message = scrub_paths(exc.message)
            except EXPECTED_ERRORS as exc:
                message = scrub_paths(str(exc))
            except Exception as exc:  # noqa: BLE001 - a visitor never sees a traceback
                message = internal_error(exc, fn.__qualname__)
            if message_to is None:
                raise gr.Error(message, print_exception=False)
            return {message_to: error_markdown(message)}

        return wrapper

    return decorate
