"""The zoo: attribution heads stored as Hugging Face model repos (``config.json``, ``model.safetensors``, ``README.md``,
optionally ``exemplar_hashes.json``, the duplicate index).

References resolve through :func:`attribution.persistence.resolve`: a head name in the shipped ``zoo/`` or the
user zoo (shipped first: a user head can never shadow a shipped one, and saving one under a shipped
name is refused), a folder path (optionally ``local-dir:``-prefixed) or ``hf-hub:org/repo[@revision]``.
Heads made by enrollment get derived names (:func:`derived_head_name`) and record their ``base_head``.
Heads are saved by :class:`~attribution.persistence.PretrainedMixin` (atomic, JSON and safetensors only,
never pickle); this module adds what is particular to heads: the class registry, the duplicate index,
the rules of a zoo folder (:func:`save_pretrained`, the one way a head folder is written), listing and
publishing.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

from .constants import CARD_NAME, CONFIG_NAME, EXEMPLAR_DIR, HASHES_NAME, WEIGHTS_NAME
from .duplicates import ExemplarHashes
from .heads import HEADS, BaseHead
from .names import validate_head_name
from .persistence import HEAD, backbone_section, read_weights, saved_kind
from .persistence import read_config as _read_any_config
from .persistence import resolve as _resolve
from .persistence import validate_config as _validate_any_config
from .storage import SHIPPED_ZOO, ZooError, folder_lock, user_zoo_dir, write_bytes, zoo_folders

HEAD_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, HASHES_NAME]  # what a head is, on the Hub too


def derived_head_name(base: str, labels: Sequence[str]) -> str:
    """Name of head ``base`` extended with enrolled ``labels``: ``<base>-with-<label>[-<label>...]``.

    Valid as a zoo folder and as a Hugging Face repo name (which forbids ``--``); names longer than
    96 characters end in a hash of the labels instead.
    """
    suffix = "-".join(labels)
    name = f"{base}-with-{suffix}"
    if len(name) > 96:
        digest = hashlib.sha256(suffix.encode()).hexdigest()[:10]
        name = f"{base[:96 - len(digest) - 6]}-with-{digest}"
    return validate_head_name(name)


def _check_not_shadowing(folder: Path) -> None:
    """Refuse a user-zoo head named like a shipped one (it could never be loaded by name, and used to hide it)."""
    if folder.resolve().parent == user_zoo_dir().resolve() and (SHIPPED_ZOO / folder.name / CONFIG_NAME).is_file():
        raise ZooError(f"{folder.name!r} is the name of a shipped head; save the new head under another name "
                       f"(e.g. {derived_head_name(folder.name, ['my_generator'])!r})")


def resolve(ref: str | os.PathLike | None = None) -> Path:
    """Local folder holding the head named by ``ref`` (downloaded and cached for Hub ids); ``None``: the
    default head. Raises ``ZooError`` when there is none."""
    return _resolve(ref, files=HEAD_FILES)


# -------------------------------------------------------------------- loading
def validate_config(config: Any, where: Any = "config") -> dict[str, Any]:
    """A head's config checked and upgraded to the current layout; ``ZooError`` naming ``where`` otherwise."""
    config = _validate_any_config(config, where)
    if config["head"]["type"] not in HEADS:
        raise ZooError(f"{where}: unknown head type {config['head']['type']!r}; known: {sorted(HEADS)}")
    if not isinstance(config.get("classes"), list) or config.get("backbone") is None:
        raise ZooError(f"{where}: {CONFIG_NAME} of a head needs 'classes' and 'backbone'")
    return config


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a head folder, validated and in the current layout."""
    config = _read_any_config(folder)
    return validate_config(config, folder)


def load_head(ref: str | os.PathLike | None = None) -> tuple[BaseHead, dict[str, Any]]:
    """Head and config (current layout) for ``ref`` (see :func:`resolve`)."""
    folder = resolve(ref)
    config = read_config(folder)
    try:
        head = HEADS[config["head"]["type"]].from_config(config, read_weights(folder))
    except ZooError as exc:
        raise ZooError(f"{folder}: {exc}") from None
    if list(getattr(head, "classes_", [])) != config["classes"]:
        raise ZooError(f"{folder}: classes in {CONFIG_NAME} do not match the head state")
    return head, config


def read_hashes(folder: Path) -> ExemplarHashes | None:
    """The head's duplicate index (``exemplar_hashes.json``, JSON only), or ``None`` for a head without one.

    Raises ``ZooError`` for a file that is not a valid index.
    """
    path = folder / HASHES_NAME
    if not path.is_file():
        return None
    try:
        return ExemplarHashes.from_bytes(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ZooError(f"unreadable {HASHES_NAME} in {folder}: {exc} (delete it to go on without duplicate "
                       "look-ups)") from None


# -------------------------------------------------------------------- saving
def save_pretrained(folder: str | os.PathLike, head: BaseHead, backbone_config: dict[str, Any], /, *,
                    hashes: ExemplarHashes | None = None, files: dict[str, bytes] | None = None,
                    **extra: Any) -> Path:
    """Save ``head`` as a zoo folder over the features of ``backbone_config`` (``Backbone.config()``), with
    ``extra`` config entries (name, training, metrics...; a loaded config may be passed whole, its head,
    classes and backbone parts are replaced), its duplicate index ``hashes`` and ``files`` (name relative to
    the folder -> bytes: thumbnails, figures), atomically, under the folder's lock, with a fresh model card.

    Files already in the folder are kept, but thumbnails of classes the head no longer has. Raises
    ``ZooError`` for a user head named like a shipped one or a config no head could be loaded from.
    """
    folder = Path(folder)
    classes = list(head.meta_dict().get("classes_", []))
    config = {**extra, **backbone_section(backbone_config), "classes": classes}
    full = validate_config(head.to_config(config), folder)
    _check_not_shadowing(folder)
    files = {**(files or {}), **({HASHES_NAME: hashes.to_bytes()} if hashes is not None else {})}

    def keep(relative: str) -> bool:
        parts = relative.split("/")
        return not (parts[0] == EXEMPLAR_DIR and len(parts) > 2 and parts[1] not in classes)

    return head.save_pretrained(folder, config, card=head.model_card(full), files=files, keep=keep)


def save_hashes(ref: str | os.PathLike, hashes: ExemplarHashes) -> Path:
    """Write ``hashes`` as the duplicate index of the head at ``ref`` (a folder), atomically, under its lock."""
    folder = Path(ref)
    with folder_lock(folder):
        read_config(folder)  # a head must be there; the head itself is not rewritten
        write_bytes(folder / HASHES_NAME, hashes.to_bytes())
    return folder


# --------------------------------------------------------------- listing, hub
def list_zoo() -> list[dict[str, Any]]:
    """Every head of the shipped zoo and the user zoo, side by side (saved verifiers are listed by
    :func:`attribution.verification.list_verifiers`).

    Each entry: ``name``, ``origin`` (``shipped`` or ``user``), ``path``, ``backbone`` (its id), ``classes``,
    ``head`` (its type), ``base_head`` (the head an enrolled one was made from, else ``None``) and
    ``shadowed`` (a user head named like a shipped one, which only loads by its path); or ``error``.
    """
    entries: list[dict[str, Any]] = []
    shipped: set[str] = set()
    for origin, folder in zoo_folders():
        if saved_kind(folder).kind not in (HEAD, None):  # verifiers: list_verifiers; networks: backbones
            continue
        entry: dict[str, Any] = {"name": folder.name, "origin": origin, "path": str(folder),
                                 "shadowed": origin == "user" and folder.name in shipped}
        try:
            config = read_config(folder)
        except ZooError as exc:
            entries.append({**entry, "error": str(exc)})
            continue
        if origin == "shipped":
            shipped.add(folder.name)
        entries.append({**entry, "backbone": config["backbone"]["id"], "classes": config["classes"],
                        "head": config["head"]["type"], "base_head": config.get("base_head")})
    return entries


def push_to_hub(ref: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False,
                commit_message: str = "Upload attribution head") -> str:
    """Upload a head folder (JSON, safetensors and card only) to ``repo_id``; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = resolve(ref)
    read_config(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                             allow_patterns=[*HEAD_FILES, "*.png", "*.jpg"])
    return str(getattr(info, "commit_url", info))
