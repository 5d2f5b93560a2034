"""Per-visitor state: a visitor's enrollments as small signed deltas over the operator's head.

A visitor's enrollments live in their Gradio session (``gr.State``; for ``gradio_client`` callers, a
store keyed by their session) and, signed, in their browser (``gr.BrowserState``) and in the .zip they
can export, so they survive reloads and restarts without ever touching what other visitors see.

Stored state comes back from the browser or an upload, so it is untrusted input: it must carry a
valid HMAC-SHA256 signature made with the operator's secret (``ATTRIBUTION_SECRET``), parse into
bounded, finite values, and name the head it was made for by its fingerprint. Enrollments made for
another head are kept aside with a notice instead of being applied.

An enrollment also keeps small JPEG thumbnails of its exemplars (re-encoded from those the input stage made
while enrolling), so the nearest examples of a verdict can show the visitor's own images; entries stored
before thumbnails were kept have none and load as before.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from attribution import ClassDelta, OpenSetHead, load_image, normalize_label
from attribution.head_folder import exemplar_ids
from attribution.transform import thumbnail_jpeg

from .settings import MAX_ENROLL_IMAGES, SECRET_ENV

FORMAT = "attribution-enrollments"
VERSION = 1
MAX_ENROLLMENTS = 10
MAX_STORED_CHARS = 4_000_000
MAX_DIM = 4096
MAX_BANK_ROWS = 256
THUMBNAIL_PX = 96  # longer side of a stored exemplar thumbnail
THUMBNAIL_QUALITY = 70  # JPEG quality tried first (lower, then smaller, until MAX_THUMBNAIL_BYTES)
MAX_THUMBNAIL_BYTES = 3_600  # per thumbnail: MAX_ENROLL_IMAGES of them fit MAX_THUMBNAIL_CHARS as base64
MAX_THUMBNAIL_CHARS = 250_000  # base64 of one enrollment's thumbnails; MAX_ENROLLMENTS of them use 2.5M chars
JPEG_MAGIC = b"\xff\xd8\xff"
EXPORT_NAME = "attribution-enrollments.zip"
EXPORT_MEMBER = "enrollments.json"
BROWSER_KEY = "attribution-enrollments-v1"
# gr.BrowserState encrypts in the page with a key the page can read: obfuscation only. Integrity comes
# from the HMAC signature, whose secret never leaves the server.
BROWSER_OBFUSCATION = "attribution-browser-state"

_EPHEMERAL_SECRET = secrets.token_bytes(32)
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")


class StateError(ValueError):
    """Stored state that cannot be used; the message is safe to show the visitor."""


def secret_is_ephemeral() -> bool:
    """``True`` when no ``ATTRIBUTION_SECRET`` is set: stored enrollments then last only for this run."""
    return not os.environ.get(SECRET_ENV)


def _secret() -> bytes:
    return os.environ.get(SECRET_ENV, "").encode() or _EPHEMERAL_SECRET


def _sign(data: str) -> str:
    return hmac.new(_secret(), data.encode(), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------ state
@dataclass(frozen=True)
class Enrollment:
    """One generator a visitor enrolled: the rows it adds to the head, and what it is worth."""

    delta: ClassDelta
    display_name: str
    n_images: int
    enrolled_at: str
    expected_recall: float
    closest_class: str
    closest_class_share: float
    expected_real_or_uncertain: float | None = None  # enrollments stored before it was measured have none
    thumbnails: tuple[bytes, ...] = ()  # JPEGs of the first exemplars, in bank order (stored before: none)

    @property
    def label(self) -> str:
        return self.delta.label

    @classmethod
    def from_head(cls, head: OpenSetHead, label: str, info: dict[str, Any],
                  thumbnails: Mapping[str, bytes] | None = None) -> "Enrollment":
        """Cut ``label`` out of an enrolled head, with small copies of its exemplars' ``thumbnails`` (exemplar id ->
        JPEG, as :meth:`attribution.Attributor.enroll` keeps them). Its exemplar rows are kept at half precision
        and named as the library names the first images enrolled as ``label``, as stored, so the session and a
        reload build the very same head."""
        delta = head.class_delta(label)
        pictures = [(thumbnails or {}).get(i) for i in delta.ids]
        delta = replace(delta, bank=delta.bank.astype(np.float16).astype(np.float64),
                        ids=tuple(exemplar_ids(label, len(delta.bank))))
        unflagged = info.get("expected_real_or_uncertain")
        return cls(delta, str(info["display_name"]), int(info["n_images"]), str(info["enrolled_at"]),
                   float(info["expected_recall"]), str(info["closest_class"]), float(info["closest_class_share"]),
                   None if unflagged is None else float(unflagged), _small_thumbnails(pictures))

    def info(self) -> dict[str, Any]:
        """The ``config["enrolled"]`` entry of this class."""
        return {"display_name": self.display_name, "n_images": self.n_images, "enrolled_at": self.enrolled_at,
                "expected_recall": self.expected_recall, "closest_class": self.closest_class,
                "closest_class_share": self.closest_class_share,
                "expected_real_or_uncertain": self.expected_real_or_uncertain}


@dataclass(frozen=True)
class VisitorState:
    """A visitor's enrollments and the head (fingerprint) they were made for; immutable, replaced on change."""

    head: str | None = None
    enrollments: tuple[Enrollment, ...] = ()
    notice: str | None = None  # why stored enrollments were not loaded or are not applied

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.enrollments]

    def active(self, fingerprint: str) -> tuple[Enrollment, ...]:
        """The enrollments that apply to the head with ``fingerprint`` (none when they were made for another)."""
        return self.enrollments if self.head == fingerprint else ()

    def thumbnails(self, fingerprint: str) -> dict[str, bytes]:
        """Exemplar id -> JPEG of this visitor's enrolled images that apply to the head with ``fingerprint``."""
        return {i: t for e in self.active(fingerprint) for i, t in zip(e.delta.ids, e.thumbnails)}

    def stale(self, fingerprint: str) -> bool:
        return bool(self.enrollments) and self.head != fingerprint

    def add(self, enrollment: Enrollment, fingerprint: str) -> "VisitorState":
        """This state plus ``enrollment`` (made for ``fingerprint``; enrollments for another head are dropped)."""
        kept = self.active(fingerprint)
        if len(kept) >= MAX_ENROLLMENTS:
            raise StateError(f"at most {MAX_ENROLLMENTS} enrolled generators per visitor; remove one first")
        return _storable(VisitorState(fingerprint, (*kept, enrollment)))

    def remove(self, label: str) -> "VisitorState":
        if label not in self.labels:
            raise StateError(f"{label!r} is not one of your enrolled generators")
        rest = tuple(e for e in self.enrollments if e.label != label)
        return VisitorState(self.head if rest else None, rest)


def _small_thumbnails(pictures: Sequence[bytes | None]) -> tuple[bytes, ...]:
    """The stored thumbnails of exemplars whose ``pictures`` (JPEG) are given, in order: each fitted in
    :data:`THUMBNAIL_PX` and :data:`MAX_THUMBNAIL_BYTES`, up to the first missing one or :data:`MAX_THUMBNAIL_CHARS`."""
    kept: list[bytes] = []
    chars = 0
    for picture in pictures:
        if picture is None:
            break
        small = thumbnail_jpeg(load_image(picture), THUMBNAIL_PX, MAX_THUMBNAIL_BYTES, THUMBNAIL_QUALITY)
        chars += 4 * -(-len(small) // 3)  # as base64
        if chars > MAX_THUMBNAIL_CHARS:
            break
        kept.append(small)
    return tuple(kept)


# ------------------------------------------------------------------------------ encoding
def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()


def _enrollment_json(e: Enrollment) -> dict[str, Any]:
    d = e.delta
    return {**e.info(), "label": d.label, "count": d.count, "bias": d.bias, "verify_offset": d.verify_offset,
            "mean": _b64(d.mean, "<f8"), "bank": _b64(d.bank, "<f2"), "bank_rows": int(len(d.bank)),
            "thumbnails": [base64.b64encode(t).decode() for t in e.thumbnails]}


def encode(state: VisitorState) -> dict[str, str]:
    """The signed form stored in the browser and in exports; ``{}`` for no enrollments (the page writes only
    non-empty values to its storage, so ``None`` would leave removed enrollments there)."""
    if not state.enrollments:
        return {}
    data = json.dumps({"format": FORMAT, "version": VERSION, "head": state.head,
                       "enrollments": [_enrollment_json(e) for e in state.enrollments]},
                      sort_keys=True, separators=(",", ":"))
    return {"data": data, "sig": _sign(data)}


def _storable(state: VisitorState) -> VisitorState:
    """``state``, unless its stored form would be too large to load back."""
    if len(encode(state).get("data", "")) > MAX_STORED_CHARS:
        raise StateError("your enrollments would be too large to keep; remove one first")
    return state


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise StateError(f"stored enrollments hold an invalid {what}")
    return float(value)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise StateError(f"stored enrollments hold an invalid {what}")
    return value


def _raw(value: Any, what: str, limit: int) -> bytes:
    """The bytes of base64 text ``value`` of at most ``limit`` chars."""
    try:
        return base64.b64decode(_text(value, what, limit).encode(), validate=True)
    except binascii.Error:
        raise StateError(f"stored enrollments hold an invalid {what}") from None


def _array(value: Any, what: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = _raw(value, what, MAX_STORED_CHARS)
    if len(raw) != int(np.prod(shape)) * np.dtype(dtype).itemsize:
        raise StateError(f"stored enrollments hold a {what} of the wrong size")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.float64)
    if not np.isfinite(array).all():
        raise StateError(f"stored enrollments hold an invalid {what}")
    return array


def _thumbnails(value: Any, rows: int) -> tuple[bytes, ...]:
    """Stored thumbnails: at most one JPEG per exemplar row, each and all within their limits (none in entries
    stored before thumbnails were kept)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > rows:
        raise StateError("stored enrollments hold an invalid number of thumbnails")
    if sum(len(v) for v in value if isinstance(v, str)) > MAX_THUMBNAIL_CHARS:
        raise StateError("stored enrollments hold thumbnails that are too large")
    pictures = tuple(_raw(v, "thumbnail", MAX_THUMBNAIL_CHARS) for v in value)
    if not all(len(p) <= MAX_THUMBNAIL_BYTES and p.startswith(JPEG_MAGIC) for p in pictures):
        raise StateError("stored enrollments hold an invalid thumbnail")
    return pictures


def _enrollment(item: Any, dim: int) -> Enrollment:
    if not isinstance(item, dict):
        raise StateError("stored enrollments are malformed")
    label = _text(item.get("label"), "label", 64)
    try:
        valid = _LABEL.match(label) is not None and normalize_label(label) == label
    except ValueError:
        valid = False
    if not valid:
        raise StateError("stored enrollments hold an invalid generator name")
    closest = _text(item.get("closest_class"), "closest class", 64)
    if not _LABEL.match(closest):
        raise StateError("stored enrollments hold an invalid closest class")
    rows = int(_number(item.get("bank_rows"), "exemplar count", 0, MAX_BANK_ROWS))
    n_images = int(_number(item.get("n_images"), "image count", 2, MAX_ENROLL_IMAGES))
    delta = ClassDelta(label, _array(item.get("mean"), "class mean", "<f8", (dim,)),
                       _number(item.get("count"), "image count", 2, MAX_ENROLL_IMAGES),
                       _number(item.get("bias"), "bias", -1e6, 1e6),
                       _number(item.get("verify_offset"), "offset", -1e6, 1e6),
                       _array(item.get("bank"), "exemplar bank", "<f2", (rows, dim)), tuple(exemplar_ids(label, rows)))
    enrolled_at = _text(item.get("enrolled_at"), "date", 20)
    if not _TIMESTAMP.match(enrolled_at):
        raise StateError("stored enrollments hold an invalid date")
    unflagged = item.get("expected_real_or_uncertain")
    return Enrollment(delta, _text(item.get("display_name"), "display name", 100), n_images, enrolled_at,
                      _number(item.get("expected_recall"), "recall", 0, 1), closest,
                      _number(item.get("closest_class_share"), "share", 0, 1),
                      None if unflagged is None else _number(unflagged, "share", 0, 1),
                      _thumbnails(item.get("thumbnails"), rows))


def _foreign_dim(items: list[Any]) -> int:
    """Dimensions of enrollments made for another head, read from their first class mean (bounded)."""
    first = items[0] if isinstance(items[0], dict) else {}
    try:
        mean = _text(first.get("mean"), "class mean", MAX_STORED_CHARS)
        dim = len(base64.b64decode(mean.encode(), validate=True)) // 8
    except binascii.Error:
        dim = 0
    if not 0 < dim <= MAX_DIM:
        raise StateError("the saved enrollments are malformed")
    return dim


def decode(stored: Any, fingerprint: str, dim: int) -> VisitorState:
    """Parse and check stored state (untrusted) for the head with ``fingerprint`` and ``dim`` dimensions.

    Raises :class:`StateError` when it is malformed, unsigned, tampered with or signed with another
    secret. Enrollments made for another head come back unapplied, with a notice saying so.
    """
    if not isinstance(stored, dict) or not all(isinstance(stored.get(k), str) for k in ("data", "sig")):
        raise StateError("this is not a saved enrollment file or state")
    data = stored["data"]
    if len(data) > MAX_STORED_CHARS:
        raise StateError("the saved enrollments are too large")
    if not hmac.compare_digest(_sign(data), stored["sig"]):
        raise StateError("the saved enrollments could not be verified: they were changed, or signed by another "
                         "server (or by an earlier run of this one without ATTRIBUTION_SECRET)")
    try:
        payload = json.loads(data)
    except json.JSONDecodeError:
        raise StateError("the saved enrollments are malformed") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise StateError("the saved enrollments are of an unknown format")
    head, items = payload.get("head"), payload.get("enrollments")
    if not isinstance(head, str) or not isinstance(items, list) or not 0 < len(items) <= MAX_ENROLLMENTS:
        raise StateError("the saved enrollments are malformed")
    enrollments = tuple(_enrollment(item, dim if head == fingerprint else _foreign_dim(items)) for item in items)
    if len({e.label for e in enrollments}) != len(enrollments):
        raise StateError("the saved enrollments name a generator twice")
    state = VisitorState(head, enrollments)
    if head != fingerprint:
        names = ", ".join(state.labels)
        return replace(state, notice=f"Your saved enrollments ({names}) were made for another head than the one this "
                                     "app serves now, so they are not applied. Enroll those generators again (their "
                                     "images are needed), or remove the old entries.")
    return state


def load_stored(stored: Any, fingerprint: str, dim: int) -> VisitorState:
    """The state a returning visitor's browser holds; problems become a notice, never an error."""
    if stored in (None, "", {}):
        return VisitorState()
    try:
        return decode(stored, fingerprint, dim)
    except StateError as exc:
        return VisitorState(notice=f"Your saved enrollments were not loaded: {exc}.")
    except (ValueError, TypeError, KeyError, AttributeError):
        return VisitorState(notice="Your saved enrollments were not loaded: they are malformed.")


# ------------------------------------------------------------------------------ export / import
def export_zip(state: VisitorState) -> bytes:
    """A .zip holding the signed enrollments and a short read-me."""
    stored = encode(state)
    if not stored:
        raise StateError("you have no enrollments to export")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(EXPORT_MEMBER, json.dumps(stored))
        zf.writestr("README.txt", f"Enrollments of {', '.join(state.labels)} for the attribution app, exported "
                                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\nImport this file in the "
                                  "Enroll tab of the same app (it is signed by that server).\n")
    return buf.getvalue()


def import_zip(path: str, state: VisitorState, fingerprint: str, dim: int) -> tuple[VisitorState, str]:
    """``state`` plus the enrollments in an exported .zip; returns the new state and what was done."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(EXPORT_MEMBER)
            if info.file_size > MAX_STORED_CHARS + 1000:
                raise StateError("the enrollment file is too large")
            stored = json.loads(zf.read(info))
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise StateError(f"not an enrollment export (a .zip holding {EXPORT_MEMBER})") from None
    imported = decode(stored, fingerprint, dim)
    if imported.notice:
        raise StateError(imported.notice)
    current = state.active(fingerprint)
    known = {e.label for e in current}
    new = tuple(e for e in imported.enrollments if e.label not in known)
    if len(current) + len(new) > MAX_ENROLLMENTS:
        raise StateError(f"at most {MAX_ENROLLMENTS} enrolled generators per visitor; remove some first")
    skipped = [e.label for e in imported.enrollments if e.label in known]
    message = (f"Imported {', '.join(e.label for e in new) or 'nothing new'}"
               + (f" (already enrolled: {', '.join(skipped)})" if skipped else "") + ".")
    return _storable(VisitorState(fingerprint, (*current, *new))) if (current or new) else VisitorState(), message


# ------------------------------------------------------------------------------ API sessions
class SessionStore:
    """States of API callers by their gradio session (one per ``gradio_client.Client``); bounded, idle
    sessions expire."""

    def __init__(self, max_sessions: int = 1000, ttl_s: float = 6 * 3600) -> None:
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self._states: OrderedDict[str, tuple[float, VisitorState]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: str | None) -> VisitorState:
        with self._lock:
            self._expire()
            entry = self._states.get(session or "")
            return entry[1] if entry else VisitorState()

    def put(self, session: str | None, state: VisitorState) -> None:
        if not session:
            raise StateError("enrollment needs a client session (use gradio_client.Client)")
        with self._lock:
            self._states[session] = (time.monotonic(), state)
            self._states.move_to_end(session)
            while len(self._states) > self.max_sessions:
                self._states.popitem(last=False)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_s
        while self._states and next(iter(self._states.values()))[0] < cutoff:
            self._states.popitem(last=False)
