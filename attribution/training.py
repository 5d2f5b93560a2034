"""Fit a head on a folder-per-class dataset (``real`` plus one folder per generator)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import Backbone
from .constants import REAL
from .features import FeatureExtractor, Progress
from .heads import OpenSetHead
from .names import normalize_label
from .transform import image_files


FORENSIC_FAMILY = "residual_cnn:"


def real_source(name: str) -> str:
    """The collection a real photo comes from: its file-name prefix before ``__`` (``mei__x.jpg`` -> ``mei``)."""
    return Path(name).name.split("__")[0]


def forensic_columns(backbone: Backbone) -> list[int] | None:
    """Feature columns ``[start, stop)`` of the residual CNN part of ``backbone`` (the synthetic probe's
    input), or ``None`` when it has none."""
    spans = [span for layer, span in backbone.layer_columns().items() if layer.startswith(FORENSIC_FAMILY)]
    return [min(a for a, _ in spans), max(b for _, b in spans)] if spans else None


def list_dataset(root: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Files and labels of a dataset with one sub-folder per class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder at {root}")
    files, labels = [], []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        label = normalize_label(folder.name)
        images = image_files(folder)
        files += images
        labels += [label] * len(images)
    if len(set(labels)) < 2:
        raise ValueError(f"{root} needs at least two class folders with images")
    if REAL not in labels:
        raise ValueError(f"{root} has no '{REAL}' folder; the real class is required")
    return files, labels


def extract_dataset(extractor: FeatureExtractor, files: list[Path], labels: list[str],
                    progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, list[int], dict[int, str]]:
    """Features of the files that decode, their labels, kept positions and per-file errors."""
    batch = extractor(files, progress)
    return batch.features, np.asarray(labels)[batch.index], batch.index, batch.errors


def train_head(backbone: Backbone, data: str | os.PathLike, head: OpenSetHead | None = None,
               progress: Progress | None = None, batch_size: int = 16) -> tuple[OpenSetHead, dict[str, Any]]:
    """Fit ``head`` (default :class:`OpenSetHead`) on ``data``; returns it with a training summary."""
    start = time.perf_counter()
    files, labels = list_dataset(data)
    X, y, kept, errors = extract_dataset(FeatureExtractor(backbone, batch_size=batch_size), files, labels, progress)
    root = Path(data)
    ids = [str(files[i].relative_to(root)) for i in kept]
    head = head or OpenSetHead(synthetic_columns=forensic_columns(backbone))
    head.fit(X, y, ids=ids, groups=[real_source(i) if label == REAL else "" for i, label in zip(ids, y)])
    classes, counts = np.unique(y, return_counts=True)
    summary = {"data": str(root.resolve()), "n_images": int(len(y)), "skipped_files": len(errors),
               "class_counts": {str(c): int(n) for c, n in zip(classes, counts)},
               "seconds": round(time.perf_counter() - start, 1)}
    return head, summary
