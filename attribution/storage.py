"""Where saved things live and how they are written: the one place for atomic writes, folder swaps,
locks, the zoo folders and Hub downloads (what a folder holds is read by :mod:`attribution.persistence`,
which resolves a reference to one).

Every write goes to a temporary name beside its target and is renamed over it, so a crash leaves the
old or the new version, never a mix. Folders are swapped with two renames; :func:`recover` finishes a
swap interrupted between them. Imports neither torch nor the heads.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence


SHIPPED_ZOO = Path(__file__).resolve().parent.parent / "zoo"
HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def _read_umask() -> int:
    """The process umask, read once at import (setting it to read it is not thread-safe later)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


class ZooError(RuntimeError):
    """A saved model that cannot be found, read or trusted; the message says which and why."""


# ------------------------------------------------------------------ writing
@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends without error, the file written
    there replaces ``target`` (one rename; flushed to disk first when ``durable``, which a cache can
    skip); otherwise it is removed and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; the result is as readable as any new file
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path`)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_folder(folder: str | os.PathLike, write: Callable[[Path], None],
                 keep: Callable[[str], bool] | None = None) -> Path:
    """Replace ``folder`` atomically by what ``write(tmp)`` puts in a fresh temporary folder beside it.

    The files already in ``folder`` are copied there first, except pickle files and those whose path
    relative to the folder (``/``-separated) ``keep`` refuses.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it private; the folder is as readable as any new one
    try:
        if folder.is_dir():
            for item in folder.rglob("*"):
                relative = item.relative_to(folder).as_posix()
                if item.is_file() and not item.name.endswith(PICKLE_SUFFIXES) and (keep is None or keep(relative)):
                    (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(item, tmp / relative)
        write(tmp)
        for path in tmp.rglob("*"):  # some writers (safetensors) make private files; a saved model is readable
            if path.is_file():
                os.chmod(path, 0o666 & ~_UMASK)
        _swap(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


_held = threading.local()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock (threads and processes) for a read-modify-write of the saved model at ``folder``.

    Re-entrant within a thread: a save inside a locked read-modify-write does not wait on itself.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = (folder.parent / f".{folder.name}.lock").resolve()
    held = _held.__dict__.setdefault("paths", set())
    if lock in held:
        yield
        return
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        held.add(lock)
        try:
            yield
        finally:
            held.discard(lock)
            fcntl.flock(fh, fcntl.LOCK_UN)


def recover(path: Path) -> None:
    """Finish a folder swap interrupted between its two renames (the previous version is put back)."""
    if path.exists() or not path.parent.is_dir():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds:
        with contextlib.suppress(OSError):
            os.rename(olds[-1], path)


def _swap(new: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        os.rename(folder, old)
    os.rename(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- resolving
def user_zoo_dir() -> Path:
    """Writable zoo for enrolled heads and fitted verifiers: ``$ATTRIBUTION_HOME/zoo`` (default
    ``~/.cache/attribution/zoo``)."""
    home = os.environ.get("ATTRIBUTION_HOME") or Path.home() / ".cache" / "attribution"
    return Path(home) / "zoo"


def zoo_dirs() -> list[Path]:
    """Where bare names are looked up, first match wins: the shipped zoo, then the user zoo."""
    return [SHIPPED_ZOO, user_zoo_dir()]


def zoo_folders() -> list[tuple[str, Path]]:
    """Every folder of the zoo dirs as ``(origin, folder)``: ``shipped`` ones first, then ``user`` ones, each
    sorted by name; hidden folders (swaps in progress, locks) left out."""
    return [("shipped" if base == SHIPPED_ZOO else "user", folder) for base in zoo_dirs() if base.is_dir()
            for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))]


def is_path_ref(ref: str) -> bool:
    """Whether ``ref`` names a folder (``local-dir:``, a path separator or a leading ``.``), not a zoo name."""
    return ref.startswith(LOCAL_PREFIX) or os.sep in ref or ref.startswith(".")


def download(repo: str, files: Sequence[str] = ()) -> Path:
    """Snapshot of ``org/repo[@revision]`` from the Hugging Face Hub (or its cache, offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        folder = snapshot_download(repo_id, revision=revision or None, allow_patterns=list(files) or None)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ZooError(f"could not fetch {HUB_PREFIX}{repo} from the Hugging Face Hub or its cache: {exc}") from None
    return Path(folder)
