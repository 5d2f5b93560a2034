"""One way to save anything fitted: :class:`PretrainedMixin`, after huggingface_hub's ``ModelHubMixin``.

A saved model is a folder like a Hugging Face model repo: ``config.json`` (sorted, indented),
``model.safetensors`` (arrays only: never pickle) and ``README.md`` (the class's own model card; an
existing one is kept unless a new one is passed). The same files, zipped, are its bytes
(:meth:`PretrainedMixin.to_bytes`) for browser state and exports. The config separates three parts
(``format_version`` 2)::

    {"format_version": 2,
     "kind": "head",                                                  # what the folder is (or "verifier")
     "head": {"type": "OpenSetHead", "params": {...}, "state": {...}},   # what was fitted
     "backbone": {"id": "...", "layers": [...], ...} | null,          # the features it reads
     "preprocess_cfg": {...} | null,                                  # how images become tensors
     ...}                                                             # classes, name, training, metrics...

Configs of ``format_version`` 1 (the same keys, flat: ``head``, ``head_params``, ``head_state``,
``backbone``, ``layers``...) still load: :func:`upgrade_config` nests them and the class's
:meth:`PretrainedMixin.upgrade_state` converts its fitted state. A subclass brings ``kind``, ``get_params``,
``meta_dict`` (JSON-able fitted state), ``state_dict`` (arrays), ``from_state`` and ``model_card``.

Every saved folder says what it is in its config's ``kind`` (``head``, ``verifier``, or ``network`` for a
trained feature network); :func:`config_kind` is the one reader, and tells folders saved before ``kind``
existed by their layout. :func:`resolve` finds a folder from a zoo name, a path or an ``hf-hub:`` id.
Needs only NumPy and safetensors.
"""
from __future__ import annotations

import inspect
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Sequence, TypeVar

import numpy as np

from .constants import CARD_NAME, CONFIG_NAME, DEFAULT_ZOO_NAME, FORMAT_VERSION, WEIGHTS_NAME
from .names import validate_head_name
from .storage import (HUB_PREFIX, LOCAL_PREFIX, ZooError, download, folder_lock, is_path_ref, recover, write_folder,
                      zoo_dirs, zoo_folders)

T = TypeVar("T", bound="PretrainedMixin")
BACKBONE_KEYS = ("layers", "pool", "window", "parts")  # with the id, what a backbone section holds
MAX_BYTES = 256 * 2**20  # largest zip from_bytes reads (uncompressed)
HEAD, VERIFIER, NETWORK = "head", "verifier", "network"  # the kinds of saved folder
_ROLES = {"Head": HEAD, "Verifier": VERIFIER}  # type-name ending -> kind, for configs saved before ``kind``


def dump_json(obj: Any) -> bytes:
    """The JSON of every saved config: sorted keys, indent 2, trailing newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def config_kind(config: dict[str, Any]) -> str | None:
    """What a saved config describes: ``head``, ``verifier`` or ``network`` (:data:`HEAD`, :data:`VERIFIER`,
    :data:`NETWORK`); ``None`` when it does not tell.

    Its ``kind`` entry; a config saved before ``kind`` existed is told by its layout: a feature network has a
    ``network`` entry and no head section, a head or a verifier is named by its type (``head.type``, or
    ``head`` in format 1), whose name ends in its role (``OpenSetHead``, ``BlackBoxVerifier``).
    """
    if "kind" in config:
        return config["kind"] if isinstance(config["kind"], str) else None
    if "network" in config and "head" not in config:
        return NETWORK
    head = config.get("head")
    type_name = head.get("type") if isinstance(head, dict) else head
    if not isinstance(type_name, str):
        return None
    return next((kind for role, kind in _ROLES.items() if type_name.endswith(role)), None)


def card_header(*tags: str, license: str | None = None) -> str:
    """The YAML front matter of every model card the package writes, as the Hugging Face Hub reads it:
    ``library_name: attribution``, ``tags`` and, when given, the ``license``."""
    lines = ["---", "library_name: attribution", "tags:", *(f"- {tag}" for tag in tags)]
    return "\n".join([*lines, *([f"license: {license}"] if license else []), "---"]) + "\n"


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config of any supported ``format_version`` in the current layout (a new dict; state not converted).

    Raises ``ZooError`` for a version newer than this library or a config missing its head section.
    """
    version = config.get("format_version")
    if config_kind(config) == NETWORK:
        raise ZooError(f"this is the feature network {config['network']!r}, not a head or a verifier: use it as a "
                       f"backbone (e.g. residual_cnn:{config.get('name', '<name>')})")
    if not isinstance(version, int):
        raise ZooError(f"{CONFIG_NAME} needs an integer 'format_version'")
    if version > FORMAT_VERSION:
        raise ZooError(f"format_version {version} is newer than this library supports ({FORMAT_VERSION}); "
                       "upgrade attribution")
    flat_layout = isinstance(config.get("head"), str) and "head_params" in config
    if version >= 2 and not flat_layout:
        return dict(config)
    flat = dict(config)  # the flat layout is format 1 whatever it claims (OCC-CLIP wrote it under 2)
    head_type = flat.pop("head", None)
    if not isinstance(head_type, str):
        raise ZooError(f"{CONFIG_NAME} (format_version 1) needs 'head' naming the head type")
    out: dict[str, Any] = {"head": {"type": head_type, "params": flat.pop("head_params", {}),
                                    "state": flat.pop("head_state", {})}}
    backbone_id = flat.pop("backbone", None)
    options = {k: flat.pop(k) for k in BACKBONE_KEYS if k in flat}
    out["backbone"] = {"id": backbone_id, **options} if backbone_id is not None else None
    out["preprocess_cfg"] = flat.pop("preprocess_cfg", None)
    return {**flat, **out, "format_version": FORMAT_VERSION, "upgraded_from": 1}


def validate_config(config: Any, where: Any = "config") -> dict[str, Any]:
    """Check the layout of a (possibly older) config and return it upgraded; ``ZooError`` naming ``where``."""
    if not isinstance(config, dict):
        raise ZooError(f"{where}: {CONFIG_NAME} must hold a JSON object")
    try:
        config = upgrade_config(config)
    except ZooError as exc:
        raise ZooError(f"{where}: {exc}") from None
    head = config.get("head")
    if not (isinstance(head, dict) and isinstance(head.get("type"), str) and isinstance(head.get("params"), dict)
            and isinstance(head.get("state"), dict)):
        raise ZooError(f"{where}: {CONFIG_NAME} needs 'head' with 'type', 'params' and 'state'")
    backbone = config.get("backbone")
    if backbone is not None and not (isinstance(backbone, dict) and isinstance(backbone.get("id"), str)):
        raise ZooError(f"{where}: {CONFIG_NAME} 'backbone' must be null or hold an 'id'")
    weights = str(config.get("weights", WEIGHTS_NAME))
    if not weights.endswith(".safetensors") or "/" in weights:
        raise ZooError(f"{where}: weights must be a .safetensors file in the folder (pickle is refused)")
    return config


def read_config(folder: Path) -> dict[str, Any]:
    """The validated, upgraded ``config.json`` of ``folder`` (``format_version`` as saved is kept in
    ``upgraded_from`` for older ones)."""
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"unreadable {CONFIG_NAME} in {folder}: {exc}") from None
    return validate_config(raw, folder)


class SavedKind(NamedTuple):
    """What a folder holds (see :func:`saved_kind`)."""

    kind: str | None  # head, verifier or network; None when its config cannot be read or does not tell
    type: str | None  # the class saved (``head.type``, or a network's ``network``)
    params: dict[str, Any]  # its constructor arguments (``head.params``)


def saved_kind(folder: Path) -> SavedKind:
    """What ``folder`` holds, from its ``config.json`` in any format (:func:`config_kind`), without validating
    it or reading weights; ``SavedKind(None, None, {})`` when there is no config to read."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return SavedKind(None, None, {})
    if not isinstance(config, dict):
        return SavedKind(None, None, {})
    kind = config_kind(config)
    if kind == NETWORK:
        return SavedKind(kind, config.get("network"), {})
    try:
        head = upgrade_config(config)["head"]
        type_name, params = head.get("type"), head.get("params")
    except (ZooError, AttributeError):
        return SavedKind(kind, None, {})
    return SavedKind(kind, type_name if isinstance(type_name, str) else None,
                     params if isinstance(params, dict) else {})


def resolve(ref: str | os.PathLike | None = None, files: Sequence[str] = ()) -> Path:
    """Local folder holding the saved model named by ``ref``: a name in the shipped zoo or the user zoo,
    a folder (optionally ``local-dir:``-prefixed) or ``hf-hub:org/repo[@revision]`` (downloaded with
    ``files`` as the allowed patterns, or read from the Hub cache offline). ``None``: the default head.

    A ``Path`` is always a folder. Raises ``ZooError`` when nothing with a ``config.json`` is there (naming
    the heads and verifiers of the zoo for a name), ``ValueError`` for a malformed name.
    """
    if isinstance(ref, os.PathLike):  # a Path is a folder, even one that reads like a name ("./head" -> "head")
        ref = f"{LOCAL_PREFIX}{os.fspath(ref)}"
    ref = str(ref) if ref is not None else DEFAULT_ZOO_NAME
    if ref.startswith(HUB_PREFIX):
        return download(ref[len(HUB_PREFIX):], files)
    if is_path_ref(ref):
        path = Path(ref.removeprefix(LOCAL_PREFIX)).expanduser()
        recover(path)
        if not (path / CONFIG_NAME).is_file():
            raise ZooError(f"nothing saved at {path} (missing {CONFIG_NAME})")
        return path
    name = validate_head_name(ref)
    for base in zoo_dirs():
        recover(base / name)
        if (base / name / CONFIG_NAME).is_file():
            return base / name
    available = sorted({folder.name for _, folder in zoo_folders()
                        if (folder / CONFIG_NAME).is_file() and saved_kind(folder).kind != NETWORK})
    raise ZooError(f"no zoo head named {name!r}; available: {available or 'none'}")


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """The arrays of ``model.safetensors`` in ``folder`` (empty when a model has no arrays)."""
    from safetensors.numpy import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        return {}
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ZooError(f"unreadable {WEIGHTS_NAME} in {folder}: {exc}") from None


def backbone_section(backbone_config: dict[str, Any]) -> dict[str, Any]:
    """The ``backbone`` and ``preprocess_cfg`` parts of a config from ``Backbone.config()`` (flat)."""
    return {"backbone": {"id": backbone_config["backbone"],
                         **{k: backbone_config[k] for k in BACKBONE_KEYS if k in backbone_config}},
            "preprocess_cfg": backbone_config.get("preprocess_cfg")}


def flat_backbone_config(config: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`backbone_section`: what ``Backbone.config()`` gives for a saved model's backbone."""
    section = dict(config.get("backbone") or {})
    return {"backbone": section.pop("id", None), **section, "preprocess_cfg": config.get("preprocess_cfg")}


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``to_bytes`` / ``from_bytes`` for heads and verifiers.

    Subclasses set :attr:`kind` (what their folders are, see :func:`config_kind`), store their constructor
    arguments under their own names (``get_params`` reads them, but those named in ``_unsaved``) and implement ``meta_dict()`` (JSON-able fitted state), ``state_dict()``
    (NumPy arrays), ``from_state(params, meta, arrays, **kwargs)`` and ``model_card(config)``; they may
    override :meth:`upgrade_state` (older fitted state) and :meth:`from_config` (to read other parts of
    the config, e.g. the backbone).
    """

    kind: ClassVar[str]  # HEAD or VERIFIER, written to the config
    card_template: ClassVar[str] = "# {name}\n\nSaved `{type}`.\n"
    _unsaved: ClassVar[tuple[str, ...]] = ()  # constructor arguments not saved in the config (models, devices)

    # ------------------------------------------------------------------ hooks
    @classmethod
    def _param_names(cls) -> list[str]:
        """The constructor's named arguments (scikit-learn's ``BaseEstimator._get_param_names``)."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def get_params(self) -> dict[str, Any]:
        """The JSON-able constructor arguments (all but :attr:`_unsaved`), stored under ``head.params``."""
        return {name: getattr(self, name) for name in self._param_names() if name not in self._unsaved}

    def set_params(self: T, **params: Any) -> T:
        """Change constructor arguments (scikit-learn's ``set_params``); raises ``ValueError`` for unknown names."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameters {unknown}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def meta_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def from_state(cls: type[T], params: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   **kwargs: Any) -> T:
        raise NotImplementedError

    @classmethod
    def upgrade_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], version: int
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state saved under ``format_version`` ``version``, in the current convention (default: as is)."""
        return meta, arrays

    def model_card(self, config: dict[str, Any]) -> str:
        """``README.md`` for ``config`` (the class's :attr:`card_template`)."""
        return self.card_template.format(name=config.get("name", type(self).__name__), type=type(self).__name__)

    # ------------------------------------------------------------------ config
    def to_config(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """``config`` (backbone, preprocessing, name, training...) with this model's ``head`` section, its
        ``kind`` and the current ``format_version``."""
        out = {k: v for k, v in (config or {}).items() if k != "upgraded_from"}
        out.update(format_version=FORMAT_VERSION, kind=self.kind,
                   head={"type": type(self).__name__, "params": self.get_params(), "state": self.meta_dict()})
        return out

    @classmethod
    def from_config(cls: type[T], config: dict[str, Any], arrays: dict[str, np.ndarray], **kwargs: Any) -> T:
        """Rebuild from a (validated) config and its arrays; ``kwargs`` override constructor arguments.

        Raises ``ZooError`` when the config holds another type or a state that does not fit.
        """
        config = validate_config(config)
        head = config["head"]
        if head["type"] != cls.__name__:
            raise ZooError(f"the config holds a {head['type']!r}, not a {cls.__name__}")
        meta, arrays = cls.upgrade_state(dict(head["state"]), dict(arrays), config.get("upgraded_from", FORMAT_VERSION))
        try:
            return cls.from_state({**head["params"], **kwargs}, meta, arrays)
        except (TypeError, ValueError, KeyError) as exc:
            raise ZooError(f"{cls.__name__} state does not match its config: {exc}") from None

    # ------------------------------------------------------------------ folders
    def save_pretrained(self, folder: str | os.PathLike, config: dict[str, Any] | None = None, *,
                        card: str | None = None, files: dict[str, bytes] | None = None,
                        keep: Callable[[str], bool] | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` (plus ``files``: relative name ->
        bytes) to ``folder``, atomically and under the folder's lock. ``card`` replaces the model card;
        without it an existing card is kept and a missing one is made from :meth:`model_card`. Other files
        already in the folder are kept, except those whose relative path ``keep`` refuses."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        full = self.to_config(config)
        arrays = {k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}

        def write(tmp: Path) -> None:
            save_file(arrays, str(tmp / WEIGHTS_NAME), metadata={"format": "np"})
            (tmp / CONFIG_NAME).write_bytes(dump_json(full))
            if card is not None or not (tmp / CARD_NAME).exists():
                (tmp / CARD_NAME).write_text(card if card is not None else self.model_card(full), encoding="utf-8")
            for name, data in (files or {}).items():
                target = (tmp / name).resolve()
                if tmp.resolve() not in target.parents:
                    raise ValueError(f"file {name!r} would escape the folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)

        with folder_lock(folder):
            return write_folder(folder, write, keep)

    @classmethod
    def from_pretrained(cls: type[T], ref: str | os.PathLike, **kwargs: Any) -> T:
        """Load from a zoo name, a folder or ``hf-hub:org/repo[@revision]`` (JSON and safetensors only)."""
        folder = resolve(ref, files=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
        return cls.from_config(read_config(folder), read_weights(folder), **kwargs)

    # ------------------------------------------------------------------ bytes
    def to_bytes(self, config: dict[str, Any] | None = None) -> bytes:
        """The saved folder's ``config.json`` and ``model.safetensors`` as one zip (deterministic)."""
        from safetensors.numpy import save

        arrays = {k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in ((CONFIG_NAME, dump_json(self.to_config(config))),
                               (WEIGHTS_NAME, save(arrays, metadata={"format": "np"}))):
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls: type[T], data: bytes, **kwargs: Any) -> T:
        """Rebuild from :meth:`to_bytes` output. Raises ``ZooError`` for anything else (or too large)."""
        from safetensors.numpy import load

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                if sum(i.file_size for i in zf.infolist()) > MAX_BYTES:
                    raise ZooError(f"saved model larger than {MAX_BYTES // 2**20} MiB")
                config = json.loads(zf.read(CONFIG_NAME))
                arrays = load(zf.read(WEIGHTS_NAME))
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile, json and safetensors raise several types
            raise ZooError(f"not a saved {cls.__name__}: {exc}") from None
        return cls.from_config(config, arrays, **kwargs)
