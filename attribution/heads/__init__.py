"""Heads over backbone features, scikit-learn style; registered by class name for the zoo."""
from .base import BaseHead, NotFittedError
from .decision import REASON_TEXT, Decision
from .open_set import ClassDelta, OpenSetHead

HEADS: dict[str, type[BaseHead]] = {cls.__name__: cls for cls in (OpenSetHead,)}

__all__ = ["BaseHead", "ClassDelta", "Decision", "HEADS", "NotFittedError", "OpenSetHead", "REASON_TEXT"]
