"""Fit a head on a folder-per-class dataset (``real`` plus one folder per generator)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import Backbone
from .constants import REAL
from .duplicates import ExemplarHashes
from .features import FeatureBatch, FeatureExtractor, Progress
from .heads import OpenSetHead
from .names import normalize_label
from .inputs import InputFile, walk_files


def real_source(name: str) -> str:
    """The collection a real photo comes from: its file-name prefix before ``__`` (``mei__x.jpg`` -> ``mei``)."""
    return Path(name).name.split("__")[0]


def list_dataset(root: str | os.PathLike) -> tuple[list[InputFile], list[str]]:
    """Files and labels of a dataset with one sub-folder per class (every non-hidden file, by content:
    files that are no image are skipped when their features are extracted)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder at {root}")
    files: list[InputFile] = []
    labels: list[str] = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        label = normalize_label(folder.name)
        found = walk_files(folder)
        files += [InputFile(f, walked=True) for f in found]
        labels += [label] * len(found)
    if len(set(labels)) < 2:
        raise ValueError(f"{root} needs at least two class folders with images")
    if REAL not in labels:
        raise ValueError(f"{root} has no '{REAL}' folder; the real class is required")
    return files, labels


def dataset_hashes(root: str | os.PathLike, files: list[InputFile], labels: list[str],
                   batch: FeatureBatch) -> ExemplarHashes:
    """Duplicate index of the images of ``batch`` (extracted with ``hashes=True``); ids relative to ``root``."""
    root = Path(root)
    return ExemplarHashes([ExemplarHashes.entry(str(Path(files[i]).relative_to(root)), labels[i], batch.facts[i],
                                                batch.phashes[i]) for i in batch.index])


@dataclass
class TrainingResult:
    """A fitted head, its training summary (stored in ``config.json``), its duplicate index, and the files
    that were skipped (path -> reason: no image, unreadable, too small...)."""

    head: OpenSetHead
    summary: dict[str, Any]
    hashes: ExemplarHashes
    skipped: dict[str, str]


def train_head(backbone: Backbone, data: str | os.PathLike, head: OpenSetHead | None = None,
               progress: Progress | None = None, batch_size: int = 16) -> TrainingResult:
    """Fit ``head`` (default :class:`OpenSetHead`) on ``data``, indexing every image for duplicate look-ups."""
    start = time.perf_counter()
    files, labels = list_dataset(data)
    batch = FeatureExtractor(backbone, batch_size=batch_size)(files, progress, hashes=True)
    root = Path(data)
    y = np.asarray(labels)[batch.index]
    ids = [str(Path(files[i]).relative_to(root)) for i in batch.index]
    head = head or OpenSetHead(synthetic_probe=True)
    head.fit(batch.features, y, ids=ids, groups=[real_source(i) if label == REAL else "" for i, label in zip(ids, y)])
    classes, counts = np.unique(y, return_counts=True)
    summary = {"data": root.resolve().name, "n_images": int(len(y)), "skipped_files": len(batch.errors),
               "class_counts": {str(c): int(n) for c, n in zip(classes, counts)},
               "seconds": round(time.perf_counter() - start, 1)}
    skipped = {str(files[i]): message for i, message in batch.errors.items()}
    return TrainingResult(head, summary, dataset_hashes(root, files, labels, batch), skipped)
