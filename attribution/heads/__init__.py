"""Heads over backbone features, scikit-learn style; registered by class name for the zoo."""
from .base import BaseHead, NotFittedError
from .open_set import OpenSetHead

HEADS: dict[str, type[BaseHead]] = {cls.__name__: cls for cls in (OpenSetHead,)}

__all__ = ["BaseHead", "HEADS", "NotFittedError", "OpenSetHead"]
