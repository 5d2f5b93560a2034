"""The attribution web app (Gradio): per-visitor enrollments over one read-only served head.

Modules: ``settings`` (limits, environment variables), ``state`` (a visitor's signed enrollment deltas),
``model`` (the served head and the operations), ``uploads``, ``render``, ``errors`` (one error policy),
``api`` (``gr.api`` endpoints), ``tabs/`` (one module per tab) and ``demo`` (``build_demo``, ``main``).
"""
from .demo import build_demo, main

__all__ = ["build_demo", "main"]
