"""Fit a head on a folder-per-class dataset (``real`` plus one folder per generator).

The features the head is fitted on are never a network's view of its own training images: with a
cross-fitted ensemble in the backbone (``forensic_ensemble:...``), each image's ensemble features come
from the member that was trained without it (out of fold), and the class geometry reads only the
columns before the ensemble's, since out-of-fold and shipped outputs differ for known generators.
With ``augment``, changed copies of every image (re-encoded, resized, cropped: :func:`random_change`)
are fitted too, so a verdict survives the way images travel.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from .backbones import Backbone
from .backbones.ensemble import column_ranges, ensemble_part, out_of_fold
from .changes import random_change
from .constants import REAL
from .dataset import Sample, SampleImages, list_samples
from .duplicates import ExemplarHashes, perceptual_hash
from .features import FeatureBatch, FeatureCache, FeatureExtractor, Progress
from .heads import OpenSetHead
from .transform import ImageDecodeError, decode_image, load_image


@dataclass
class TrainingResult:
    """A fitted head, its training summary (stored in ``config.json``), its duplicate index, and the files
    that were skipped (path -> reason: no image, unreadable, too small...)."""

    head: OpenSetHead
    summary: dict[str, Any]
    hashes: ExemplarHashes
    skipped: dict[str, str]


class ChangedImages(SampleImages):
    """Copy ``copy`` of every sample after one :func:`random_change`, seeded by the copy and the sample's
    position, so the same copies (and cache keys) come back in every run."""

    def __init__(self, samples: Sequence[Sample], copy: int, seed: int = 0) -> None:
        super().__init__(samples)
        self.copy, self.seed = copy, seed

    def __getitem__(self, i):  # type: ignore[override]
        image = self.samples[i].image()
        if not isinstance(image, Image.Image):
            try:
                image = load_image(image)
            except ImageDecodeError:
                return image  # its error is reported by the extractor
        return random_change(image, np.random.default_rng([self.seed, self.copy, i]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def out_of_fold_members(backbone: Backbone, samples: Sequence[Sample]) -> list[int | None]:
    """For each sample, the ensemble member that never saw it (``None``: no ensemble part, or every member
    trained on it)."""
    part = ensemble_part(backbone)
    if part is None:
        return [None] * len(samples)
    return [part.model.member_for(s.label, s.source) for s in samples]


def extract_samples(backbone: Backbone, samples: Sequence[Sample], copies: int = 0, seed: int = 0,
                    cache: FeatureCache | None = None, progress: Progress | None = None,
                    batch_size: int = 16) -> tuple[FeatureBatch, list[FeatureBatch]]:
    """Features of ``samples`` and of ``copies`` changed copies of each (:class:`ChangedImages`), every one from
    the out-of-fold member of the backbone's ensemble (the mean of all for a sample no member left out).
    Returns the originals' batch (with hashes) and one batch per copy, each in sample order."""
    members = out_of_fold_members(backbone, samples)
    cache = cache if cache is not None else FeatureCache()
    sets = [SampleImages(samples)] + [ChangedImages(samples, c, seed) for c in range(copies)]
    total, done = len(samples) * len(sets), 0
    batches = []
    for images in sets:
        parts = []
        for member in sorted(set(members), key=lambda m: -1 if m is None else m):
            rows = [i for i, m in enumerate(members) if m == member]
            features = backbone if member is None else out_of_fold(backbone, member)

            def step(n: int, _: int, before: int = done) -> None:
                if progress:
                    progress(before + n, total)

            extractor = FeatureExtractor(features, cache, batch_size=batch_size)
            parts.append((rows, extractor(_Subset(images, rows), step, hashes=images is sets[0])))
            done += len(rows)
        batches.append(_merge(parts))
    return batches[0], batches[1:]


class _Subset(Sequence):
    """Items ``rows`` of a lazy image sequence, still lazy."""

    def __init__(self, images: Sequence, rows: Sequence[int]) -> None:
        self.images, self.rows = images, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        return self.images[self.rows[i]]

    def __iter__(self):
        return (self.images[r] for r in self.rows)


def _merge(parts: list[tuple[list[int], FeatureBatch]]) -> FeatureBatch:
    """One batch keyed by sample position from batches over subsets (``rows`` maps their positions back)."""
    out = FeatureBatch(np.zeros((0, 0), np.float32), [])
    found: dict[int, np.ndarray] = {}
    for rows, batch in parts:
        for pos, row in zip(batch.index, batch.features):
            found[rows[pos]] = row
        for name in ("errors", "notes", "error_codes", "facts", "phashes"):
            getattr(out, name).update({rows[p]: v for p, v in getattr(batch, name).items()})
    out.index = sorted(found)
    out.features = np.stack([found[i] for i in out.index]) if found else np.zeros((0, 0), np.float32)
    return out


def dataset_hashes(samples: Sequence[Sample], batch: FeatureBatch) -> ExemplarHashes:
    """Duplicate index of the samples of ``batch`` (extracted with hashes), ids as the dataset names them; the
    whole file of every tiled sample is indexed too (its tiles are what the head saw)."""
    entries = [ExemplarHashes.entry(samples[i].id, samples[i].label, batch.facts[i], batch.phashes[i])
               for i in batch.index]
    tiled = {s.file_id: s for i, s in enumerate(samples) if s.tile == 0 and i in batch.facts}
    for file_id, s in tiled.items():
        decoded = decode_image(s.path)
        entries.append(ExemplarHashes.entry(file_id, s.label, decoded.facts, perceptual_hash(decoded.frames[0])))
    return ExemplarHashes(entries)


def fit_head(head: OpenSetHead, samples: Sequence[Sample], batch: FeatureBatch,
             copies: Sequence[FeatureBatch] = (), folds: Sequence[int | None] | None = None) -> OpenSetHead:
    """Fit ``head`` on the features of ``samples`` (``batch``, positions into ``samples``) and of their changed
    copies: every real photo grouped by its source, ids as the dataset names them (``~<copy>`` added); with
    ``folds`` (the cross-fitting fold of each sample, ``None`` for none), the probe's thresholds are calibrated
    holding out whole folds, as the networks under it were."""
    rows = [batch, *copies]
    X = np.concatenate([b.features for b in rows])
    index = [i for b in rows for i in b.index]
    y = np.asarray([samples[i].label for i in index])
    ids = [samples[i].id + (f"~{c}" if c else "") for c, b in enumerate(rows) for i in b.index]
    units = None if folds is None or any(folds[i] is None for i in index) else [f"fold {folds[i]}" for i in index]
    return head.fit(X, y, ids=ids, groups=[samples[i].source if samples[i].label == REAL else "" for i in index],
                    exemplars=[c == 0 for c, b in enumerate(rows) for _ in b.index], units=units)


def train_head(backbone: Backbone, data: str | os.PathLike, head: OpenSetHead | None = None,
               progress: Progress | None = None, batch_size: int = 16, tiles: Mapping[str, int] | None = None,
               augment: int = 0, cache: FeatureCache | None = None, seed: int = 0) -> TrainingResult:
    """Fit ``head`` (default :class:`OpenSetHead` with a synthetic probe) on ``data``, out of fold where the
    backbone has a cross-fitted ensemble, on ``augment`` changed copies of every image too; index every
    image for duplicate look-ups. ``tiles`` cuts the files of a class into a grid (see
    :func:`~attribution.dataset.list_samples`)."""
    start = time.perf_counter()
    samples = list_samples(data, tiles)
    batch, copies = extract_samples(backbone, samples, augment, seed, cache, progress, batch_size)
    head = head or OpenSetHead(synthetic_probe=True)
    part = ensemble_part(backbone)
    if part is not None and head.geometry_columns is None and len(batch.index):
        columns = {p: (a, b) for p, a, b in column_ranges(backbone, batch.features.shape[1])}
        head.set_params(geometry_columns=[0, columns[part.id][0]])
    members = out_of_fold_members(backbone, samples)
    fit_head(head, samples, batch, copies, members if part is not None else None)
    classes, counts = np.unique([samples[i].label for i in batch.index], return_counts=True)
    summary = {"data": Path(data).resolve().name, "n_images": len(batch.index), "skipped_files": len(batch.errors),
               "class_counts": {str(c): int(n) for c, n in zip(classes, counts)},
               "tiles": dict(tiles or {}), "augmented_copies": augment,
               "out_of_fold": None if part is None else
               {"images": sum(m is not None for m in members), "in_sample": sum(m is None for m in members)},
               "seconds": round(time.perf_counter() - start, 1)}
    skipped = {str(samples[i].path): message for i, message in batch.errors.items()}
    return TrainingResult(head, summary, dataset_hashes(samples, batch), skipped)
