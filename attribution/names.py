"""Validation of user-given names: generator labels and zoo head names can never escape a folder."""
from __future__ import annotations

import re
import unicodedata

from .constants import UNKNOWN

_LABEL = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_HEAD = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,95}$")


def normalize_label(name: str) -> str:
    """Turn a user-typed generator name into a snake_case label (``"Midjourney v5"`` -> ``"midjourney_v5"``).

    Raises ``ValueError`` for names that are empty after normalisation, too long, or reserved.
    """
    if not isinstance(name, str):
        raise ValueError("a generator name must be text")
    text = unicodedata.normalize("NFKC", name).strip().lower()
    label = re.sub(r"[^a-z0-9]+", "_", text).strip("_")
    if not label:
        raise ValueError(f"invalid generator name {name!r}: use letters, digits, spaces or underscores")
    if not _LABEL.match(label):
        raise ValueError(f"invalid generator name {name!r}: at most 64 characters of a-z, 0-9 and _")
    if label == UNKNOWN:
        raise ValueError(f"{UNKNOWN!r} is reserved for the open-set reject decision")
    return label


def validate_head_name(name: str) -> str:
    """A zoo head name: lower-case letters, digits, ``-``, ``_``, ``.``; no path separators, no ``..``."""
    if not isinstance(name, str) or not _HEAD.match(name) or ".." in name:
        raise ValueError(f"invalid zoo head name {name!r}: use lower-case letters, digits, '-', '_' or '.' "
                         "(e.g. 'open-set-efficientnet-lite2')")
    return name
