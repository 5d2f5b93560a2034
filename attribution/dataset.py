"""Folder-per-class datasets as samples: class, source, prompt group and, for grids, the tile.

One loader for ``train``, ``train-forensic`` and the benchmarks, so every split keeps what belongs
together on one side:

- a real photo's **source** is its collection (file-name prefix before ``__``: ``mei__x.jpg`` ->
  ``mei``); a generator's source is the generator itself;
- a **group** is what must never be split: the file (so the tiles of one grid stay together), or for
  files named ``YYYY-MM-DD_n`` the day (DALL-E 3 through Bing: four images a day share one prompt);
- **tiling** (``tiles={"flux1_dev": 2}``) cuts every file of a class into an ``n x n`` grid of
  samples (published FLUX.1 style sheets are 2x2 grids of four outputs); no tile is written to disk.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from .constants import REAL
from .names import normalize_label
from .inputs import InputFile, walk_files
from .transform import ImageDecodeError, load_image

DAY_GROUP = re.compile(r"^(\d{4}-\d\d-\d\d)_")  # file names of images made on one day from one prompt


def real_source(name: str) -> str:
    """The collection a real photo comes from: its file-name prefix before ``__`` (``mei__x.jpg`` -> ``mei``)."""
    return Path(name).name.split("__")[0]


def parse_tiles(specs: Sequence[str] | None) -> dict[str, int]:
    """``["flux1_dev=2"]`` -> ``{"flux1_dev": 2}`` (each file of the class is cut into a 2x2 grid).
    Raises ``ValueError`` for a malformed spec."""
    out: dict[str, int] = {}
    for spec in specs or []:
        label, sep, n = spec.partition("=")
        if not sep or not n.isdigit() or int(n) < 1:
            raise ValueError(f"tiling is CLASS=N (an N x N grid per file), e.g. flux1_dev=2; got {spec!r}")
        out[normalize_label(label)] = int(n)
    return out


@dataclass(frozen=True)
class Sample:
    """One training or evaluation image: a file, or tile ``tile`` (row-major) of an ``grid x grid`` file."""

    path: Path
    label: str
    tile: int | None = None
    grid: int = 1

    @property
    def file_id(self) -> str:
        """``<class folder>/<file name>``: the file as the dataset names it."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def id(self) -> str:
        """The file id, plus ``#<tile>`` for a tile."""
        return self.file_id if self.tile is None else f"{self.file_id}#{self.tile}"

    @property
    def source(self) -> str:
        """The real photo's collection, or the generator."""
        return real_source(self.path.name) if self.label == REAL else self.label

    @property
    def group(self) -> str:
        """What must stay on one side of a split: the day for day-named files, else the file (all its tiles)."""
        day = DAY_GROUP.match(self.path.name)
        return f"{self.label}/{day.group(1)}" if day else self.file_id

    def image(self) -> InputFile | Image.Image:
        """The input to judge: the file itself (read by the extractor), or the decoded tile. A tile whose file
        cannot be decoded gives the file, so that the extractor reports its error."""
        if self.tile is None:
            return InputFile(self.path, walked=True)
        try:
            return cut_tile(load_image(self.path), self.tile, self.grid)
        except ImageDecodeError:
            return InputFile(self.path, walked=True)


def cut_tile(image: Image.Image, tile: int, grid: int) -> Image.Image:
    """Tile ``tile`` (row-major) of an ``grid x grid`` split of ``image``."""
    w, h = image.size
    row, col = divmod(tile, grid)
    box = (col * w // grid, row * h // grid, (col + 1) * w // grid, (row + 1) * h // grid)
    return image.crop(box)


class SampleImages(Sequence):
    """The inputs of ``samples`` for a :class:`~attribution.features.FeatureExtractor`, tiles decoded only
    when reached (bounded memory)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):  # type: ignore[override]
        return self.samples[i].image()

    def __iter__(self) -> Iterator[InputFile | Image.Image]:
        return (s.image() for s in self.samples)


def list_samples(root: str | os.PathLike, tiles: Mapping[str, int] | None = None) -> list[Sample]:
    """Samples of a dataset with one sub-folder per class (every non-hidden file, judged by content later;
    files that are no image are skipped when their features are extracted), sorted by class and file.

    ``tiles`` maps a class to the grid side its files are cut into. Raises ``FileNotFoundError`` for a
    missing folder and ``ValueError`` without a ``real`` class or with fewer than two classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder at {root}")
    tiles = dict(tiles or {})
    samples: list[Sample] = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        label = normalize_label(folder.name)
        grid = tiles.pop(label, 1)
        for path in walk_files(folder):
            samples += ([Sample(path, label)] if grid == 1 else
                        [Sample(path, label, t, grid) for t in range(grid * grid)])
    labels = {s.label for s in samples}
    if tiles:
        raise ValueError(f"tiling names classes {sorted(tiles)} that {root} does not have")
    if len(labels) < 2:
        raise ValueError(f"{root} needs at least two class folders with images")
    if REAL not in labels:
        raise ValueError(f"{root} has no '{REAL}' folder; the real class is required")
    return samples


def list_dataset(root: str | os.PathLike) -> tuple[list[InputFile], list[str]]:
    """Files and labels of a folder-per-class dataset, untiled (see :func:`list_samples`)."""
    samples = list_samples(root)
    return [InputFile(s.path, walked=True) for s in samples], [s.label for s in samples]


def split_groups(samples: Sequence[Sample], fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of a held-out split: ``fraction`` of each class's groups (at least one), at random
    (seeded), so one prompt, day or grid is never on both sides. Real photos split by file, so every
    collection is on both sides (collections are held out whole by the folds, not here)."""
    rng = np.random.default_rng(seed)
    keys = np.asarray([s.file_id if s.label == REAL else s.group for s in samples])
    labels = np.asarray([s.label for s in samples])
    out = np.zeros(len(samples), bool)
    for label in sorted(set(labels)):
        rows = labels == label
        unique = rng.permutation(np.unique(keys[rows]))
        chosen = set(unique[: max(1, round(fraction * len(unique)))])
        out |= rows & np.isin(keys, list(chosen))
    return out
