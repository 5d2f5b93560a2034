"""What a saved head carries beside the head, and the locked read-modify-write that changes a saved head.

A head folder (see :mod:`attribution.zoo`) holds ``config.json``, ``model.safetensors`` and ``README.md``,
and may hold

* ``exemplar_hashes.json``: the duplicate index (:class:`~attribution.duplicates.ExemplarHashes`);
* ``exemplars/<label>/<nnn>.jpg``: thumbnails of enrolled images, named by their exemplar ids;
* the figures listed in ``config["figures"]`` (files at the top of the folder), which travel with the
  head they were made for.

:class:`HeadFolder` keeps a head with these (and the thumbnails of enrollments not saved yet) as one
value and writes them together (:meth:`HeadFolder.save`, through :func:`attribution.zoo.save_pretrained`,
the one way a head folder is written); :func:`update_saved` changes a head saved in
a folder under the folder's lock, so concurrent changes, from threads or processes, are all kept.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import zoo
from .constants import CONFIG_NAME, EXEMPLAR_DIR, HASHES_NAME
from .duplicates import ExemplarHashes
from .heads import OpenSetHead
from .storage import ZooError, folder_lock

THUMBNAIL_SIZE = 160  # px, the longer side of an exemplar thumbnail


def exemplar_ids(label: str, n: int) -> list[str]:
    """Ids of ``n`` images enrolled as ``label``: the paths their thumbnails get in the head folder."""
    return [f"{EXEMPLAR_DIR}/{label}/{i:03d}.jpg" for i in range(n)]


@dataclass(frozen=True, eq=False)
class HeadFolder:
    """A head with its config and the files its folder carries, replaced whole on every change (so a reader
    always sees a head with its own config and duplicate index).

    Parameters
    ----------
    head : OpenSetHead
        The fitted head.
    config : dict
        Its config in the current layout (see :mod:`attribution.persistence`).
    hashes : ExemplarHashes, optional
        Its duplicate index.
    source : Path, optional
        The folder the head was loaded from or last saved to: its thumbnails and figures are copied when
        the head is saved to another folder.
    thumbnails : mapping of str to bytes
        Exemplar id -> JPEG bytes of images enrolled since the head was loaded or saved.
    """

    head: OpenSetHead
    config: dict[str, Any]
    hashes: ExemplarHashes | None = None
    source: Path | None = None
    thumbnails: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> HeadFolder:
        """The head saved in ``folder`` with its duplicate index. Raises ``ZooError`` for an unreadable one."""
        head, config = zoo.load_head(folder)
        return cls(head, config, zoo.read_hashes(folder), folder)

    @property
    def name(self) -> str:
        """The head's name: its config's, else its folder's."""
        return str(self.config.get("name") or (self.source.name if self.source else "attribution-head"))

    # ------------------------------------------------------------- changes
    def with_class(self, head: OpenSetHead, config: dict[str, Any], entries: Iterable[dict[str, Any]],
                   thumbnails: Mapping[str, bytes]) -> HeadFolder:
        """After enrolling a class: ``head`` and ``config``, the duplicate index extended by the class's
        ``entries`` and the ``thumbnails`` of the exemplars ``head`` kept in its bank."""
        kept = {k: v for k, v in thumbnails.items() if k in head.bank_ids_}
        return replace(self, head=head, config=config, hashes=(self.hashes or ExemplarHashes()).extended(entries),
                       thumbnails={**self.thumbnails, **kept})

    def without_class(self, head: OpenSetHead, config: dict[str, Any], label: str) -> HeadFolder:
        """After removing class ``label``: ``head`` and ``config``, with neither index entries nor unsaved
        thumbnails of ``label``."""
        prefix = f"{EXEMPLAR_DIR}/{label}/"
        return replace(self, head=head, config=config,
                       hashes=self.hashes.without(label) if self.hashes is not None else None,
                       thumbnails={k: v for k, v in self.thumbnails.items() if not k.startswith(prefix)})

    # --------------------------------------------------------------- files
    def exemplar_path(self, exemplar_id: str) -> Path | None:
        """Image file behind exemplar id ``exemplar_id`` (``<class>/<file>``, a tile's ``#<n>`` ignored) when it is
        on this machine: a thumbnail in the head folder, or a training image under the data folder
        (``$ATTRIBUTION_DATA``, else the config's ``training.data_root``, relative to the head folder). Never a
        path outside those folders."""
        if not exemplar_id:
            return None
        exemplar_id = exemplar_id.split("#")[0].split("~")[0]
        roots = [self.source] if self.source else []
        data_root = os.environ.get("ATTRIBUTION_DATA")
        recorded = self.config.get("training", {}).get("data_root")
        if not data_root and recorded and self.source:
            data_root = str(self.source / recorded)
        roots += [Path(data_root)] if data_root else []
        for root in roots:
            path = (root / exemplar_id).resolve()
            if root.resolve() in path.parents and path.is_file():
                return path
        return None

    def exemplar_image(self, exemplar_id: str) -> bytes | Path | None:
        """The picture of exemplar ``exemplar_id``: the thumbnail (JPEG bytes) of an image enrolled since the head was
        loaded or saved, else :meth:`exemplar_path`."""
        return self.thumbnails.get(exemplar_id) or self.exemplar_path(exemplar_id)

    def files(self, folder: Path) -> dict[str, bytes]:
        """What to write beside the head when saving it to ``folder`` (name relative to the folder -> bytes):
        the duplicate index, the unsaved thumbnails and, from a source folder other than ``folder``, its
        thumbnails and figures (a folder saved over keeps its own files)."""
        files: dict[str, bytes] = {}
        source = self.source if self.source is not None and self.source.resolve() != folder.resolve() else None
        if source is not None:
            files.update({str(p.relative_to(source)): p.read_bytes() for p in (source / EXEMPLAR_DIR).rglob("*.jpg")})
            for figure in self.config.get("figures", []):
                if Path(figure).name == figure and (source / figure).is_file():
                    files[figure] = (source / figure).read_bytes()
        files.update(self.thumbnails)
        if self.hashes is not None:
            files[HASHES_NAME] = self.hashes.to_bytes()
        return files

    def save(self, folder: str | os.PathLike, backbone_config: dict[str, Any], **extra: Any) -> HeadFolder:
        """Write the head and its files to ``folder`` (:func:`attribution.zoo.save_pretrained`) over the features
        of ``backbone_config`` (``Backbone.config()``), with ``extra`` added to the config.

        Returns the head as saved there (``source`` is ``folder``, no unsaved thumbnails). Raises ``ZooError``
        for a user head named like a shipped one. The config's ``name`` is the folder's; figures that are not
        written are dropped from it.
        """
        folder = Path(folder)
        with folder_lock(folder):
            files = self.files(folder)
            config = {k: v for k, v in self.config.items() if k not in ("format_version", "head", "classes")}
            figures = [f for f in config.pop("figures", []) if f in files or (folder / f).is_file()]
            config.update({"figures": figures} if figures else {})
            config.update(extra, name=folder.name)
            zoo.save_pretrained(folder, self.head, backbone_config, files=files, **config)
            saved = zoo.read_config(folder)
        return replace(self, config=saved, source=folder, thumbnails={})


def update_saved(folder: str | os.PathLike, current: HeadFolder, change: Callable[[HeadFolder], HeadFolder],
                 backbone_config: dict[str, Any]) -> HeadFolder:
    """Change the head saved in ``folder`` under the folder's lock and save it back; returns the result.

    ``change`` gets the head saved there now (``current`` when there is none yet) and returns the changed
    one, so changes made at the same time by other threads or processes are all kept. Raises ``ZooError``
    when the saved head reads other features than ``backbone_config`` (``Backbone.config()``).
    """
    folder = Path(folder)
    with folder_lock(folder):
        if (folder / CONFIG_NAME).is_file():
            current = HeadFolder.load(folder)
            saved_id, own_id = current.config["backbone"]["id"], backbone_config["backbone"]
            if saved_id != own_id:
                raise ZooError(f"{folder} holds a head for {saved_id}, not {own_id}")
        return change(current).save(folder, backbone_config)
