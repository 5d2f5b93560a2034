"""One reference for any verifier: :func:`load_verifier` and :func:`list_verifiers`.

References (the scheme runs to the first ``:``; a black-box class follows the last ``#``):

- ``blackbox:<head>#<class>``: class ``<class>`` of a zoo head (a name, a folder or
  ``hf-hub:org/repo[@revision]``), e.g. ``blackbox:hf-hub:org/repo@rev#my_generator``;
- ``occ-clip:<folder>``: a saved OCC-CLIP verifier (a name in the zoo folders, a folder or ``hf-hub:``);
- ``whitebox:<pipeline>``: a diffusers pipeline or VAE (folder or Hub id) with its calibration, or a
  saved white-box calibration folder;
- anything else without a scheme: a saved verifier of any type (name, folder, ``local-dir:``, ``hf-hub:``).

Imports neither torch nor the verifiers until one is loaded.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from .. import zoo
from ..constants import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from ..persistence import VERIFIER, read_config, read_weights, resolve, saved_kind
from ..storage import HUB_PREFIX, ZooError, is_path_ref, zoo_folders

if TYPE_CHECKING:
    from .base import Verifier

# Saved type name -> module of this package that defines it (imported when one is loaded).
VERIFIERS = {"BlackBoxVerifier": "blackbox", "OCCCLIPVerifier": "occ_clip", "WhiteBoxVerifier": "whitebox"}
SCHEMES = {"blackbox": "BlackBoxVerifier", "occ-clip": "OCCCLIPVerifier", "whitebox": "WhiteBoxVerifier"}
VERIFIER_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]


def verifier_class(type_name: str) -> type[Verifier]:
    """The verifier class saved under ``type_name`` (its module imported now). Raises ``ValueError``."""
    if type_name not in VERIFIERS:
        raise ValueError(f"unknown verifier type {type_name!r}; known: {sorted(VERIFIERS)}")
    return getattr(importlib.import_module(f"{__package__}.{VERIFIERS[type_name]}"), type_name)


def load_verifier(ref: str, *, device: str | None = None, batch_size: int | None = None, min_size: int | None = None,
                  steps: int | None = None, calibration: str | os.PathLike | None = None) -> Verifier:
    """The verifier named by ``ref`` (see the module docstring), ready to :meth:`~Verifier.verify`.

    Options that apply: ``device``, ``batch_size`` and ``min_size`` (smallest short side judged) to all;
    ``steps`` and ``calibration`` (white-box, where a calibration fixes ``steps``). Those that do not apply
    to the verifier named, and ``None`` values, are ignored.

    Raises ``ValueError`` for a malformed reference (unknown scheme, ``blackbox:`` without ``#<class>``)
    or a class the head does not know, ``ZooError`` when nothing usable is saved there.
    """
    ref = str(ref)
    scheme, colon, rest = ref.partition(":")
    common = {k: v for k, v in (("device", device), ("batch_size", batch_size)) if v is not None}
    if scheme == "blackbox":
        return _blackbox(rest, **common, **({"min_size": min_size} if min_size is not None else {}))
    if scheme == "whitebox":
        if not rest:
            raise ValueError("whitebox: needs a diffusers pipeline or VAE, e.g. whitebox:path/to/pipeline")
        extra = {k: v for k, v in (("steps", steps), ("calibration", calibration)) if v is not None}
        return _sized(verifier_class(SCHEMES[scheme]).from_pretrained(rest, **common, **extra), min_size)
    if scheme == "occ-clip":
        if not rest:
            raise ValueError("occ-clip: needs a saved verifier, e.g. occ-clip:my-occ-clip-verifier")
        return _saved(rest, SCHEMES[scheme], min_size=min_size, **common)
    if colon and not (is_path_ref(ref) or ref.startswith(HUB_PREFIX)):
        raise ValueError(f"unknown verifier scheme {scheme!r} in {ref!r}; use blackbox:<head>#<class>, "
                         f"occ-clip:<folder>, whitebox:<pipeline> or a saved verifier's name or folder")
    return _saved(ref, None, min_size=min_size, **common)


def _saved(ref: str, expected: str | None, min_size: int | None = None, **options: Any) -> Verifier:
    """A saved verifier (of type ``expected``, or of any type when ``None``); ``options``: ``device`` and
    ``batch_size``."""
    folder = resolve(ref, files=VERIFIER_FILES)
    kind, type_name, _ = saved_kind(folder)
    if kind != VERIFIER or type_name not in VERIFIERS or (expected is not None and type_name != expected):
        raise ZooError(f"{ref} holds {type_name or 'nothing readable'}, not {expected or 'a verifier'} "
                       f"({', '.join(VERIFIERS)})")
    if type_name == "BlackBoxVerifier" and min_size is not None:  # its feature extractor checks the size
        options["min_size"] = min_size
    verifier = verifier_class(type_name).from_config(read_config(folder), read_weights(folder), **options)
    return verifier if type_name == "BlackBoxVerifier" else _sized(verifier, min_size)


def _sized(verifier: Verifier, min_size: int | None) -> Verifier:
    """``verifier``, judging images of at least ``min_size`` px on the short side when given."""
    if min_size is not None:
        verifier.min_size = min_size
    return verifier


def _blackbox(rest: str, *, device: str | None = None, batch_size: int | None = None,
              min_size: int | None = None) -> Verifier:
    """``<head>#<class>``: the class of a zoo head, with the head's backbone (checked before it is loaded)."""
    from ..backbones import backbone_from_config
    from ..features import FeatureExtractor
    from .blackbox import BlackBoxVerifier

    head_ref, hash_, label = rest.rpartition("#")
    if not hash_ or not label or not head_ref:
        raise ValueError(f"blackbox:{rest} needs a head and a class: blackbox:<head>#<class>, "
                         "e.g. blackbox:open-set-efficientnet-lite2#dalle3")
    head, config = zoo.load_head(head_ref)
    verifier = BlackBoxVerifier(head, label)
    verifier.check_is_fitted()  # an unknown class fails before the backbone loads
    options = {k: v for k, v in (("batch_size", batch_size), ("min_size", min_size)) if v is not None}
    verifier.extractor = FeatureExtractor(backbone_from_config(config, device), **options)
    return verifier


def list_verifiers() -> list[dict[str, Any]]:
    """Saved verifiers in the zoo folders (shipped first, then the user zoo), for offering them by name.

    Each entry: ``name``, ``origin`` (``shipped`` or ``user``), ``path``, ``type``, ``ref`` (what
    :func:`load_verifier` takes) and ``model`` (the target it verifies, when its config says).
    """
    entries = []
    for origin, folder in zoo_folders():
        kind, type_name, params = saved_kind(folder)
        if kind != VERIFIER or type_name not in VERIFIERS:
            continue
        scheme = next(s for s, t in SCHEMES.items() if t == type_name)
        entries.append({"name": folder.name, "origin": origin, "path": str(folder), "type": type_name,
                        "ref": f"{scheme}:{folder.name}" if scheme == "occ-clip" else folder.name,
                        "model": params.get("target") or params.get("label")})
    return entries

