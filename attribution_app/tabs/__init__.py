"""One module per tab. Each ``build(shared)`` lays out its tab and wires its own events; the demo
(:mod:`attribution_app.demo`) refreshes every tab's head-dependent parts through ``Tab.refresh``
after the events listed in ``Tab.changes``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from attribution import Attributor

from ..state import VisitorState

Refresh = Callable[[Attributor | None, VisitorState], dict[Any, Any]]


@dataclass
class Shared:
    """Components every tab reads or writes: the visitor's session state and its signed copy in the browser."""

    visitor: gr.State
    stored: gr.BrowserState


@dataclass
class Tab:
    """What the demo needs from a tab: components its refresh updates, the refresh, and events that change
    the visitor's head (after which every tab refreshes)."""

    outputs: list[Any] = field(default_factory=list)
    refresh: Refresh = lambda view, state: {}
    changes: list[Any] = field(default_factory=list)


def display_names(view: Attributor | None) -> dict[str, str]:
    """Display names of a view's enrolled classes (``label -> name the visitor typed``)."""
    enrolled = view.config.get("enrolled", {}) if view is not None else {}
    return {k: str(v.get("display_name", "")) for k, v in enrolled.items()}


def progress_callback(progress: Any, desc: str) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback driving gradio's progress bar (never breaking the request)."""
    if progress is None:
        return None

    def update(done: int, total: int) -> None:
        try:
            progress((done, total), desc=desc, unit="images")
        except Exception:  # noqa: BLE001 - a progress bar must never break the request
            pass

    return update
