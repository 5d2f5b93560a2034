"""The files to attribute: folders walked recursively, and the name an input is reported under.

Imports neither Pillow's decoders nor torch: listing needs only the file system.
"""
from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from .transform import ImageInput


class InputFile(os.PathLike):
    """A path to attribute, remembering whether it was found by walking a folder (``walked``) or named by
    the user: a walked file whose bytes are no image is skipped, a named one is an error."""

    __slots__ = ("path", "walked")

    def __init__(self, path: str | os.PathLike, walked: bool = False) -> None:
        self.path = os.fspath(path)
        self.walked = walked

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"InputFile({self.path!r}, walked={self.walked})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputFile) and (self.path, self.walked) == (other.path, other.walked)

    def __hash__(self) -> int:
        return hash((self.path, self.walked))


def walk_files(folder: str | os.PathLike) -> list[Path]:
    """Every regular, non-hidden file under ``folder``, recursively, sorted, whatever its extension.

    Names starting with ``.`` (``.DS_Store``, ``.git/``) are skipped. Symbolic links are followed once
    every real folder has been listed, and each folder and file is listed once (by device and inode),
    so a file reached through a link is listed under its real path when it has one, and a link loop
    ends. A dangling link, a special file or a folder that cannot be listed is returned as it is, so
    that it gets an error row.
    """
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    folders: deque[Path] = deque([Path(folder)])
    links: deque[Path] = deque()  # followed after every real folder is listed
    while folders or links:
        if not folders:
            link = links.popleft()
            try:
                st = link.stat()
            except OSError:
                found.append(link)  # dangling: a not_found row
                continue
            if stat.S_ISDIR(st.st_mode):
                folders.append(link)
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                found.append(link)
            continue
        directory = folders.popleft()
        try:
            st = directory.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            found.append(directory)  # cannot be listed: an unreadable row
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    links.append(Path(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                else:
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) not in seen:  # a hard link of a listed file is not listed again
                        seen.add((st.st_dev, st.st_ino))
                        found.append(Path(entry.path))
            except OSError:
                found.append(Path(entry.path))
    return sorted(found)


def find_inputs(paths: Iterable[str | os.PathLike]) -> list[InputFile]:
    """Files as given (``walked=False``); folders replaced by their :func:`walk_files` (``walked=True``)."""
    found: list[InputFile] = []
    for p in map(Path, paths):
        found += [InputFile(f, walked=True) for f in walk_files(p)] if p.is_dir() else [InputFile(p)]
    return found


def file_name(image: ImageInput) -> str | None:
    """The absolute path of a path input, else the ``filename`` an image carries, else ``None``."""
    if isinstance(image, (str, os.PathLike)):
        return str(Path(image).resolve())
    return getattr(image, "filename", None) or None
