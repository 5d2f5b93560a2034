"""The zoo: attribution heads stored as Hugging Face model repos (``config.json``, ``model.safetensors``, ``README.md``,
optionally ``exemplar_hashes.json``, the duplicate index).

One resolver for every reference: a head name in the shipped ``zoo/`` or the user zoo (shipped first:
a user head can never shadow a shipped one, and saving one under a shipped name is refused), a
folder path (optionally ``local-dir:``-prefixed) or ``hf-hub:org/repo[@revision]``. Heads made by
enrollment get derived names (:func:`derived_head_name`) and record their ``base_head``. Only JSON and safetensors are
ever read, never pickle. Writes go to a temporary folder that replaces the old one by rename, so a
crash leaves either the old or the new head, never a mix.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from .constants import CARD_NAME, CONFIG_NAME, DEFAULT_ZOO_NAME, FORMAT_VERSION, HASHES_NAME, WEIGHTS_NAME
from .duplicates import ExemplarHashes
from .heads import HEADS, BaseHead
from .names import validate_head_name

SHIPPED_ZOO = Path(__file__).resolve().parent.parent / "zoo"
HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
REQUIRED_KEYS = {"format_version": int, "head": str, "head_params": dict, "head_state": dict,
                 "backbone": str, "layers": list, "preprocess_cfg": dict, "classes": list}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
HEAD_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, HASHES_NAME]  # what a head is, on the Hub too


class ZooError(RuntimeError):
    """A head that cannot be found, read or trusted; the message says which and why."""


def user_zoo_dir() -> Path:
    """Writable zoo for enrolled heads: ``$ATTRIBUTION_HOME/zoo`` (default ``~/.cache/attribution/zoo``)."""
    home = os.environ.get("ATTRIBUTION_HOME") or Path.home() / ".cache" / "attribution"
    return Path(home) / "zoo"


def zoo_dirs() -> list[Path]:
    """Where bare names are looked up, first match wins: the shipped zoo, then the user zoo."""
    return [SHIPPED_ZOO, user_zoo_dir()]


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


# ------------------------------------------------------------------ resolving
def resolve(ref: str | os.PathLike | None = None) -> Path:
    """Local folder holding the head named by ``ref`` (downloaded and cached for Hub ids)."""
    ref = str(ref) if ref is not None else DEFAULT_ZOO_NAME
    if ref.startswith(HUB_PREFIX):
        return _download(ref[len(HUB_PREFIX):])
    if ref.startswith(LOCAL_PREFIX) or os.sep in ref or ref.startswith("."):
        path = Path(ref.removeprefix(LOCAL_PREFIX)).expanduser()
        _recover(path)
        if not (path / CONFIG_NAME).is_file():
            raise ZooError(f"no zoo head at {path} (missing {CONFIG_NAME})")
        return path
    name = validate_head_name(ref)
    for base in zoo_dirs():
        _recover(base / name)
        if (base / name / CONFIG_NAME).is_file():
            return base / name
    raise ZooError(f"no zoo head named {name!r}; available: {[h['name'] for h in list_zoo()] or 'none'}")


def _download(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        folder = snapshot_download(repo_id, revision=revision or None, allow_patterns=HEAD_FILES)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ZooError(f"could not fetch {HUB_PREFIX}{repo} from the Hugging Face Hub or its cache: {exc}") from None
    return Path(folder)


def _recover(path: Path) -> None:
    """Finish a swap interrupted between its two renames (the previous version is put back)."""
    if path.exists() or not path.parent.is_dir():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds:
        with contextlib.suppress(OSError):
            os.rename(olds[-1], path)


# -------------------------------------------------------------------- loading
def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a head folder, validated against the schema."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"unreadable {CONFIG_NAME} in {folder}: {exc}") from None
    validate_config(config, folder)
    return config


def validate_config(config: Any, where: Any = "config") -> None:
    if not isinstance(config, dict):
        raise ZooError(f"{where}: {CONFIG_NAME} must hold a JSON object")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(config.get(key), kind):
            raise ZooError(f"{where}: {CONFIG_NAME} needs {key!r} of type {kind.__name__}")
    if config["format_version"] > FORMAT_VERSION:
        raise ZooError(f"{where}: format_version {config['format_version']} is newer than this library "
                       f"supports ({FORMAT_VERSION}); upgrade attribution")
    if config["head"] not in HEADS:
        raise ZooError(f"{where}: unknown head type {config['head']!r}; known: {sorted(HEADS)}")
    weights = config.get("weights", WEIGHTS_NAME)
    if not str(weights).endswith(".safetensors") or "/" in str(weights):
        raise ZooError(f"{where}: weights must be a .safetensors file in the head folder (pickle is refused)")


def load_head(ref: str | os.PathLike | None = None) -> tuple[BaseHead, dict[str, Any]]:
    """Head and config for ``ref`` (see :func:`resolve`)."""
    folder = resolve(ref)
    config = read_config(folder)
    try:
        arrays = load_file(str(folder / WEIGHTS_NAME))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ZooError(f"unreadable {WEIGHTS_NAME} in {folder}: {exc}") from None
    try:
        head = HEADS[config["head"]].from_state(config["head_params"], config["head_state"], arrays)
    except (TypeError, ValueError, KeyError) as exc:
        raise ZooError(f"{folder}: head state does not match its config: {exc}") from None
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
def build_config(head: BaseHead, backbone_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``config.json`` of a head trained on features described by ``backbone_config``."""
    meta = head.meta_dict()
    return {"format_version": FORMAT_VERSION, "head": type(head).__name__, "head_params": head.get_params(),
            "head_state": meta, "classes": list(meta.get("classes_", [])), **backbone_config, **extra}


@contextlib.contextmanager
def head_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock for read-modify-write of the head at ``folder`` (e.g. two enrollments at once)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_folder(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Replace ``folder`` atomically by what ``write(tmp)`` puts in a fresh temporary folder beside it
    (the files already in ``folder`` are copied there first, pickle files excepted)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the head is as readable as any new folder
    try:
        if folder.is_dir():
            for item in folder.iterdir():
                if not item.name.endswith(PICKLE_SUFFIXES):
                    (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        write(tmp)
        _swap(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def save_head(folder: str | os.PathLike, head: BaseHead, config: dict[str, Any], card: str | None = None,
              extra_files: dict[str, bytes] | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` to ``folder`` atomically.

    An existing ``README.md`` is kept unless ``card`` is given. ``extra_files`` (relative name -> bytes)
    are written alongside, e.g. exemplar thumbnails.
    """
    folder = Path(folder)
    validate_config(config, folder)
    _check_not_shadowing(folder)

    def write(tmp: Path) -> None:
        arrays = {k: np.ascontiguousarray(v) for k, v in head.state_dict().items()}
        save_file(arrays, str(tmp / WEIGHTS_NAME), metadata={"format": "np"})
        _write_file(tmp / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
        if card is not None or not (tmp / CARD_NAME).exists():
            _write_file(tmp / CARD_NAME, (card if card is not None else model_card(config)).encode())
        for name, data in (extra_files or {}).items():
            target = (tmp / name).resolve()
            if tmp.resolve() not in target.parents:
                raise ValueError(f"extra file {name!r} would escape the head folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_file(target, data)

    return write_folder(folder, write)


def _swap(new: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        os.rename(folder, old)
    os.rename(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_pretrained(folder: str | os.PathLike, head: BaseHead, backbone_config: dict[str, Any],
                    hashes: ExemplarHashes | None = None, **extra: Any) -> Path:
    """Build the config for ``head`` and save it, with its duplicate index when given (the one call the CLI
    and the app use)."""
    config = build_config(head, backbone_config, **extra)
    files = {HASHES_NAME: hashes.to_bytes()} if hashes is not None else None
    return save_head(folder, head, config, card=model_card(config), extra_files=files)


def save_hashes(ref: str | os.PathLike, hashes: ExemplarHashes) -> Path:
    """Write ``hashes`` as the duplicate index of the head at ``ref`` (a folder), atomically, under its lock."""
    folder = Path(ref)
    with head_lock(folder):
        head, config = load_head(folder)
        return save_head(folder, head, config, extra_files={HASHES_NAME: hashes.to_bytes()})


# --------------------------------------------------------------- listing, hub
def is_network(folder: Path) -> bool:
    """Whether ``folder`` holds a trained feature network (e.g. the residual CNN) rather than a head."""
    try:
        return "network" in json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False


def list_zoo() -> list[dict[str, Any]]:
    """Every head of the shipped zoo and the user zoo, side by side.

    Each entry: ``name``, ``origin`` (``shipped`` or ``user``), ``path``, ``backbone``, ``classes``,
    ``head``, ``base_head`` (the head an enrolled one was made from, else ``None``) and ``shadowed``
    (a user head named like a shipped one, which only loads by its path); or ``error``.
    """
    entries: list[dict[str, Any]] = []
    shipped: set[str] = set()
    for base in zoo_dirs():
        if not base.is_dir():
            continue
        origin = "shipped" if base == SHIPPED_ZOO else "user"
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if is_network(folder):
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
            entries.append({**entry, "backbone": config["backbone"], "classes": config["classes"],
                            "head": config["head"], "base_head": config.get("base_head")})
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


# ---------------------------------------------------------------- model card
CARD_TEMPLATE = """---
library_name: attribution
tags:
- image-forensics
- generator-attribution
- open-set
license: apache-2.0
---

# {name}

Open-set attribution head: tells which generator made an image (`real`, one of the known
generators, `unknown` or `uncertain`). Head `{head}` over frozen `{backbone}` features (layers: {layers}).

## Classes
{classes}

## Decision
{probe}`unknown` when the unknown score exceeds **{offset}** (calibrated so that {accept:.0%} of held-out
  known-{known} images are accepted).
- Verification: per-class thresholds set at a false-match rate of {fmr:.1%} on other-class images.

## Training data
{training}
{base}
## Metrics
{metrics}

## Use
```bash
python -m attribution predict --zoo {name} --json image.png
```
```python
from attribution import Attributor
attributor = Attributor.from_pretrained("{name}")
print(attributor("image.png")[0].label)
```
"""


def _public(value: Any) -> Any:
    """A value fit for a card that others read: absolute paths are cut to their last part."""
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


def _table(rows: dict[str, Any]) -> str:
    if not rows:
        return "Not measured yet."
    lines = ["| metric | value |", "|---|---|"]
    for key, value in rows.items():
        value = _public(value)
        lines.append(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(lines)


def _enrolled_section(config: dict[str, Any]) -> str:
    """Where an enrolled head comes from and what each enrolled class is worth (measured at enrollment)."""
    enrolled = config.get("enrolled", {})
    if not config.get("base_head") and not enrolled:
        return ""
    lines = [f"\n## Base head\n`{config.get('base_head', '?')}`, extended by enrollment with the generators below "
             "(its own metrics were measured without them and are not repeated here).\n",
             "| generator | images | expected recall (left out) | closest known class (share of its images) |",
             "|---|---|---|---|"]
    for label, info in enrolled.items():
        recall, closest = info.get("expected_recall"), info.get("closest_class")
        share = info.get("closest_class_share")
        lines.append(f"| `{label}` | {info.get('n_images', '?')} | {'-' if recall is None else f'{recall:.2f}'} | "
                     + ("-" if closest is None or share is None else f"`{closest}` ({share:.0%})") + " |")
    return "\n".join(lines) + "\n"


def model_card(config: dict[str, Any]) -> str:
    """README.md model card filled from ``config``."""
    state = config.get("head_state", {})
    params = config.get("head_params", {})
    training = config.get("training", {})
    counts = training.get("class_counts", {})
    classes = "\n".join(f"- `{c}`" + (f" ({counts[c]} images)" if c in counts else "") for c in config["classes"])
    metrics = config.get("metrics", {})
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    extra = "\n\n".join(f"![{name}]({name})" for name in config.get("figures", []))
    probe = "- "
    if state.get("synthetic_offset_") is not None:
        probe = (f"- Is it synthetic? A linear probe on the features gives a synthetic score: below "
                 f"**{state['real_offset_']:.4f}** the label is `real`, from **{state['synthetic_offset_']:.4f}** on the "
                 f"image is synthetic, in between `uncertain` (thresholds: {params.get('real_false_rate', 0.05):.0%} of "
                 f"held-out kinds of real photo called synthetic, {params.get('synthetic_miss_rate', 0.05):.0%} of "
                 f"held-out generators called real).\n- If synthetic, which known generator? ")
    return CARD_TEMPLATE.format(
        probe=probe, known="generator" if probe != "- " else "class",
        name=config.get("name", "attribution-head"), head=config["head"], backbone=config["backbone"],
        layers=", ".join(f"`{l}`" for l in config["layers"]), classes=classes,
        offset=f"{state.get('offset_', float('nan')):.4f}", accept=params.get("accept_rate", 0.95),
        fmr=params.get("false_match_rate", 0.01),
        training=_table({k: v for k, v in training.items() if not isinstance(v, (dict, list))}),
        base=_enrolled_section(config),
        metrics=(_table(flat) if flat or not config.get("enrolled") else "See the enrolled generators above.")
        + (f"\n\n{extra}" if extra else ""),
    )
