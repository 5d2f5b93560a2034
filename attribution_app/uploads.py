"""Uploads in, files out: client file names, safe zip unpacking, temporary files the page downloads."""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Sequence

from attribution.constants import IMAGE_EXTENSIONS
from attribution.storage import write_bytes

from .settings import MAX_FILE_BYTES, MAX_FILE_SIZE, MAX_ZIP_TOTAL_BYTES

Item = tuple[str, str]  # (name the client gave the file, path on the server)
OUTBOX_MAX_AGE_S = 2 * 3600


def client_name(f: Any) -> str:
    """The client's own file name: ``orig_name`` of an API upload, else the last part of the path."""
    if isinstance(f, dict):
        return str(f.get("orig_name") or Path(str(f.get("path", ""))).name)
    return Path(server_path(f)).name


def server_path(f: Any) -> str:
    """Where an upload (path string, ``FileData`` dict or gradio file object) is on this machine."""
    if isinstance(f, dict):
        return str(f.get("path", ""))
    return str(getattr(f, "name", None) or f)


def _too_many(limit: int, what: str) -> ValueError:
    return ValueError(f"too many {what}: more than {limit} per request. Split them into several requests or use "
                      "the command line (attribution predict).")


def expand_uploads(files: Any, limit: int, what: str = "images") -> tuple[list[Item], list[str], list[str]]:
    """``(client name, path)`` per image in ``files``; ``.zip`` archives are unpacked (image members only).

    Returns the items, notes (skipped zip members) and temporary folders to delete afterwards.
    Raises ``ValueError`` when there are more than ``limit`` images.
    """
    if files is None:
        files = []
    elif isinstance(files, (str, os.PathLike, dict)) or hasattr(files, "name"):
        files = [files]
    items: list[Item] = []
    notes: list[str] = []
    tmp_dirs: list[str] = []
    total = 0
    for f in files:
        path, name = server_path(f), client_name(f)
        if not name.lower().endswith(".zip"):
            if len(items) >= limit:
                raise _too_many(limit, what)
            items.append((name, path))
            continue
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            raise ValueError(f"{name} is not a readable zip archive") from None
        with archive:
            tmp = tempfile.mkdtemp(prefix="attribution-zip-")
            tmp_dirs.append(tmp)
            skipped = 0
            for i, info in enumerate(archive.infolist()):
                member = info.filename
                base = Path(member).name
                if info.is_dir() or not base or base.startswith(".") or member.startswith("__MACOSX/"):
                    continue
                if not base.lower().endswith(IMAGE_EXTENSIONS) or info.file_size > MAX_FILE_BYTES:
                    skipped += 1
                    continue
                total += info.file_size
                if total > MAX_ZIP_TOTAL_BYTES:
                    raise ValueError(f"{name}: the archive is too large once unpacked "
                                     f"(limit {MAX_ZIP_TOTAL_BYTES // 2**20} MB)")
                if len(items) >= limit:
                    raise _too_many(limit, what)
                target = Path(tmp) / f"{i:05d}_{base}"
                try:
                    target.write_bytes(archive.read(info))
                except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
                    raise ValueError(f"{name}: could not unpack {member}") from None
                items.append((f"{name}/{member}", str(target)))
            if skipped:
                notes.append(f"{name}: skipped {skipped} file(s) that are not images (or larger than {MAX_FILE_SIZE})")
    return items, notes, tmp_dirs


def cleanup(tmp_dirs: Sequence[str]) -> None:
    for d in tmp_dirs:
        shutil.rmtree(d, ignore_errors=True)


def _outbox() -> Path:
    """This process's folder of files for visitors to download; files older than two hours are swept."""
    folder = Path(tempfile.gettempdir()) / f"attribution-app-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    cutoff = time.time() - OUTBOX_MAX_AGE_S
    for old in folder.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def outbox_file(name: str, data: bytes) -> str:
    """Write ``data`` as a download named ``name`` (atomically, in a fresh folder); returns its path."""
    return str(write_bytes(Path(tempfile.mkdtemp(dir=_outbox())) / name, data))


def outbox_csv(header: list[str], rows: list[list[Any]], name: str) -> str:
    """A CSV download; cells that spreadsheets would run as formulas are quoted."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows([[f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in row]
                      for row in rows])
    return outbox_file(name, text.getvalue().encode("utf-8"))
