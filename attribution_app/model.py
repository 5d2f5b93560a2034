"""The operator's head, shared read-only by every visitor, and the operations the tabs and the API share.

Each request works on a *view*: a fresh ``Attributor`` over the operator's backbone and feature cache
whose head is the operator's head plus that visitor's enrollments (:meth:`attribution.heads.OpenSetHead.with_deltas`).
Nothing a visitor does changes the operator's head; only an admin action (token required) can
replace it or write a head to the zoo.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attribution import (DEFAULT_ZOO_NAME, MIN_ENROLL_IMAGES, Attributor, NotFittedError, ProvenanceReader, ZooError,
                         enrolled_config, head_fingerprint, normalize_label, zoo)
from attribution.verification import BlackBoxVerifier, Verifier, list_verifiers, load_verifier

from .errors import scrub_paths
from .settings import ADMIN_TOKEN_ENV, C2PA_ANCHORS_ENV, MAX_ENROLL_IMAGES, ZOO_ENV
from .state import Enrollment, VisitorState
from .uploads import Item

Progress = Callable[[int, int], None]


class ModelHost:
    """The served head: loaded once (lazily, under a lock), replaced only by :meth:`switch`."""

    def __init__(self) -> None:
        self.ref: str | None = os.environ.get(ZOO_ENV) or None
        self.load_error: str | None = None
        self._served: tuple[Attributor, str] | None = None  # the head and its fingerprint, swapped together
        self._lock = threading.RLock()
        self._verifier: tuple[tuple[Any, ...], Verifier] | None = None  # white-box or saved, one at a time
        self._verifier_lock = threading.Lock()

    def set_ref(self, ref: str | None) -> None:
        """Head to load on first use (``--zoo``); ``None`` is the shipped default head."""
        with self._lock:
            self.ref, self._served, self.load_error = ref or None, None, None

    def served(self) -> tuple[Attributor, str]:
        """The operator's head and its fingerprint, loaded on first use. Raises ``ZooError`` with a clear
        message if it cannot load."""
        served = self._served
        if served is not None:
            return served
        with self._lock:
            if self._served is None:
                try:
                    self._install(Attributor.from_pretrained(self.ref))
                except (ZooError, ValueError, OSError, ImportError, RuntimeError) as exc:
                    self.load_error = scrub_paths(str(exc))
                    raise ZooError(f"no attribution head is loaded ({self.ref or DEFAULT_ZOO_NAME}): "
                                   f"{self.load_error}") from None
            return self._served

    def _install(self, att: Attributor) -> None:
        self._served, self.load_error = (att, head_fingerprint(att.head, att.backbone.config())), None

    def base(self) -> Attributor:
        """The operator's head (never changed by a visitor)."""
        return self.served()[0]

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the served head (visitors' enrollments are keyed to it)."""
        return self.served()[1]

    @property
    def dim(self) -> int:
        """Dimensions of the served head's whitened space (the size of an enrollment's class mean)."""
        return int(self.base().head.class_means_.shape[1])

    def view(self, state: VisitorState) -> Attributor:
        """A fresh Attributor: the served head plus the enrollments of ``state`` that were made for it, with their
        thumbnails (this visitor's only) as its unsaved ones."""
        base, fingerprint = self.served()
        active = state.active(fingerprint)
        head = base.head.with_deltas([e.delta for e in active]) if active else base.head
        config = base.config
        for e in active:
            config = enrolled_config(config, base.name, e.label, e.info())
        return Attributor(base.backbone, head, {**config, "classes": list(head.classes_)}, cache=base.extractor.cache,
                          source=base.source, hashes=base.hashes,  # the served head's duplicate index
                          thumbnails=state.thumbnails(fingerprint))

    def switch(self, ref: str) -> Attributor:
        """Serve another head (admin only), reusing the loaded backbone when the features match."""
        ref = (ref or "").strip()
        if not ref:
            raise ValueError("choose a head from the list or type hf-hub:org/repo")
        folder = zoo.resolve(ref)
        zoo.read_config(folder)
        with self._lock:
            current = self._served[0] if self._served else None
            new = None
            if current is not None:
                try:
                    new = Attributor.from_pretrained(str(folder), backbone=current.backbone,
                                                     cache=current.extractor.cache)
                except ZooError:
                    new = None  # trained on other features: load the backbone it needs below
            if new is None:
                new = Attributor.from_pretrained(str(folder), cache=current.extractor.cache if current else None)
            self._install(new)
            self.ref = ref
            return new

    def warm_up(self) -> Attributor:
        """Load the head and run one forward pass so the first request does not pay for it."""
        att = self.base()
        att(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
        return att

    def whitebox(self, source: str, calibration: str | None, steps: int) -> Verifier:
        """A cached ``WhiteBoxVerifier`` for a diffusers pipeline (imported lazily: it needs diffusers);
        ``calibration`` is an uploaded file (a ``.zip`` of a saved calibration or an earlier ``.json``)."""
        local = Path(source).expanduser()
        if (local.is_absolute() or source.startswith((".", "~"))) and not local.is_dir():
            raise ValueError("no such folder on the server (give a diffusers pipeline folder or a Hub id)")
        calib_hash = hashlib.sha256(Path(calibration).read_bytes()).hexdigest() if calibration else None
        options = {"steps": int(steps), **({"calibration": calibration} if calibration else {})}
        return self._cached(("whitebox", source, calib_hash, int(steps)),
                            f"whitebox:{local if local.is_dir() else source}", options,
                            "could not load a diffusers VAE from it", "Give a local pipeline folder (with vae/) "
                            "or a Hub id available offline.")

    def saved_verifier(self, name: str) -> Verifier:
        """A cached saved verifier of the zoo folders (OCC-CLIP...), chosen by its name only."""
        entry = next((e for e in list_verifiers() if e["name"] == name), None)
        if entry is None:
            raise ValueError("choose a saved verifier from the list")
        return self._cached(("saved", entry["path"]), entry["ref"], {}, "could not load that verifier", "")

    def _cached(self, key: tuple[Any, ...], ref: str, options: dict[str, Any], failure: str, hint: str) -> Verifier:
        """The verifier ``ref`` names, loaded once and kept until another one is asked for (one big model at a
        time); load failures become ``ValueError`` messages without server paths."""
        with self._verifier_lock:
            if self._verifier is not None and self._verifier[0] == key:
                return self._verifier[1]
            self._verifier = None  # free the previous model before loading another
            try:
                verifier = load_verifier(ref, **options)
            except ImportError as exc:
                raise ValueError(f"this verifier is unavailable ({exc}); install its extra") from None
            except Exception as exc:  # noqa: BLE001 - diffusers / open_clip / hub raise many types
                reason = scrub_paths(f"{type(exc).__name__}: {str(exc).rstrip('.')}")
                raise ValueError(f"{failure}: {reason}. {hint}".rstrip()) from None
            try:
                verifier.check_is_fitted()
            except NotFittedError:
                raise ValueError("this model has no white-box calibration: upload a calibration (.zip of the folder "
                                 "that `attribution calibrate` saves, or an attribution_whitebox.json), or put it in "
                                 "the pipeline folder") from None
            self._verifier = (key, verifier)
            return verifier


HOST = ModelHost()
PROVENANCE = ProvenanceReader(os.environ.get(C2PA_ANCHORS_ENV) or None)


def view_or_none(state: VisitorState) -> Attributor | None:
    """The visitor's view, or ``None`` while no head can be served (the page then says why)."""
    try:
        return HOST.view(state)
    except ZooError:
        return None


def _rows(items: Sequence[Item], outputs: Sequence[Any]) -> list[dict[str, Any]]:
    """JSON dicts of ``outputs`` with ``file`` set to the client's file name and errors (and a verifier's model,
    which may be a folder, and why a file had no provenance) free of server paths."""
    rows = []
    for (name, _), out in zip(items, outputs):
        row = {**out.to_json(), "file": name}
        for key in ("error", "model", "provenance_reason"):
            if isinstance(row.get(key), str):
                row[key] = scrub_paths(row[key])
        rows.append(row)
    return rows


def attribute(state: VisitorState, items: Sequence[Item], nearest: int = 0,
              progress: Progress | None = None) -> tuple[Attributor, list[dict[str, Any]]]:
    """Attribute ``(client name, path)`` pairs for a visitor: the view used and one CLI ``predict`` dict per image,
    with the file's provenance evidence beside the verdict (read from the same bytes, never feeding it)."""
    view = HOST.view(state)
    return view, _rows(items, view([p for _, p in items], progress=progress, nearest=nearest, provenance=PROVENANCE))


def verify(state: VisitorState, items: Sequence[Item], model: str,
           progress: Progress | None = None) -> list[dict[str, Any]]:
    """Black-box verification for a visitor (a class of their view of the head): one CLI ``verify`` dict per image."""
    if not model:
        raise ValueError("choose the generator to verify against")
    view = HOST.view(state)
    return verify_with(BlackBoxVerifier(view.head, model, extractor=view.extractor), items, progress)


def verify_with(verifier: Verifier, items: Sequence[Item], progress: Progress | None = None) -> list[dict[str, Any]]:
    """``verifier``'s CLI ``verify`` dict for each ``(client name, path)`` pair."""
    return _rows(items, verifier.verify([p for _, p in items], progress=progress))


def enroll(state: VisitorState, name: str, items: Sequence[Item],
           progress: Progress | None = None) -> tuple[dict[str, Any], Enrollment]:
    """Enroll generator ``name`` for a visitor, without keeping it: the CLI ``enroll`` dict and the enrollment
    to add to their state (the caller decides, e.g. after a warning), with thumbnails of its exemplars made in the
    same pass over the images."""
    if not name or not str(name).strip():
        raise ValueError("type a name for the generator first, e.g. 'Midjourney v6'")
    label = normalize_label(name)
    if len(items) < MIN_ENROLL_IMAGES:
        raise ValueError(f"enrollment needs at least {MIN_ENROLL_IMAGES} images of {label}; got {len(items)}")
    if len(items) > MAX_ENROLL_IMAGES:
        raise ValueError(f"at most {MAX_ENROLL_IMAGES} images per enrollment; got {len(items)}")
    view = HOST.view(state)
    if label in view.classes:
        raise ValueError(f"{label!r} is already known to this head; remove it first or choose another name")
    out = view.enroll(name, [p for _, p in items], progress=progress)
    names = {str(Path(p).resolve()): n for n, p in items}
    out.errors = {names.get(k, Path(k).name): scrub_paths(v) for k, v in out.errors.items()}
    return out.to_json(), Enrollment.from_head(view.head, label, view.config["enrolled"][label],
                                               view.head_folder.thumbnails)


# ------------------------------------------------------------------------------ admin
def check_admin(token: str | None) -> None:
    """Raise unless ``token`` is the operator's admin token (``ATTRIBUTION_ADMIN_TOKEN``)."""
    expected = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if not expected:
        raise ValueError("the server's zoo is read-only from the web (the operator has not set an admin token)")
    if not hmac.compare_digest((token or "").strip().encode(), expected.encode()):
        raise ValueError("wrong admin token")


def save_enrollments(state: VisitorState) -> str:
    """Save the served head plus ``state``'s enrollments to the user zoo under a derived name; returns the name."""
    if not state.active(HOST.fingerprint):
        raise ValueError("you have no enrollments for the served head to save")
    view = HOST.view(state)
    name = zoo.derived_head_name(view.config["base_head"], list(view.config["enrolled"]))
    folder = zoo.user_zoo_dir() / name
    if folder.exists():
        raise ValueError(f"the zoo already has a head named {name!r}")
    view.save_pretrained(folder)
    return name
