"""The backbone stage: inputs from the one input stage (:mod:`attribution.reading`) -> crops -> backbone
features, streamed in batches, with a feature cache keyed by pixel content."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .backbones import Backbone
from .constants import MIN_IMAGE_SIZE
from .duplicates import perceptual_hash
from .reading import Extracted, FeatureBatch, ImageReader, Progress, Provenance, Read
from .storage import atomic_path
from .transform import DecodedImage, ImageInput, distinct_colours, thumbnail_jpeg

# Crops per backbone call: 80 crops of 256 px (16 images x 5) take 1.2 GB of activations on
# EfficientNet-Lite2, 32 take 0.55 GB and run as fast per crop on a CPU (measured, 1 thread).
MAX_VIEWS = 32
# glibc keeps freed buffers of the decode threads in fragmented heaps: without a trim per batch, RSS
# creeps up by about 3 MB per image (measured: 60 vs 300 images of 512 px, 994 vs 1745 MB; trimmed
# 863 vs 869 MB). Other C libraries return memory themselves and have no malloc_trim.
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def backbone_key(backbone: Backbone) -> str:
    """Hash of everything that changes a backbone's features: id, layers, preprocessing, options, and the
    weights of networks trained here (so a retrained network under the same name is never read from the
    cache of the old one)."""
    key = {**backbone.config(), **({"weights": digest} if (digest := backbone.weights_digest()) else {})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """Features keyed by pixel hash + backbone key: an in-memory LRU, optionally backed by a folder of ``.npy``."""

    def __init__(self, directory: str | os.PathLike | None = None, max_items: int = 2048) -> None:
        self.directory = Path(directory) if directory else None
        self.max_items = max_items
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.directory is not None:
            path = self.directory / f"{key}.npy"
            if path.is_file():
                try:
                    value = np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    return None
                self._remember(key, value)
                return value
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        """Remember ``value`` under ``key``; with a directory, also write ``<key>.npy`` there (atomically)."""
        self._remember(key, value)
        if self.directory is not None:
            with atomic_path(self.directory / f"{key}.npy", durable=False) as tmp, open(tmp, "wb") as fh:
                np.save(fh, value, allow_pickle=False)

    def _remember(self, key: str, value: np.ndarray) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        return len(self._memory)


@dataclass
class _Frames:
    """What the backbone needs of one input, made on a decode thread: per judged frame a cache key, and its
    cached features (``rows``) or its views awaiting the backbone."""

    keys: list[str] = field(default_factory=list)
    rows: list[np.ndarray | None] = field(default_factory=list)
    views: list[torch.Tensor | None] = field(default_factory=list)

    def n_forward(self) -> int:
        """Frames still waiting for the backbone."""
        return sum(v is not None for v in self.views)


class FeatureExtractor:
    """Turns images into backbone features in bounded memory: decoding runs ahead of the model by at most
    ``prefetch`` batches on ``num_workers`` threads, the model runs on each batch of ``batch_size``
    frames (in forward calls of at most ``max_views`` crops), and results come out in input order as
    each batch is done.

    Images whose short side is below ``min_size`` px get a ``too_small`` error. A file repeated in one
    run (same bytes) is read once, decoded once and judged once.
    """

    def __init__(self, backbone: Backbone, cache: FeatureCache | None = None, batch_size: int = 16,
                 num_workers: int | None = None, *, prefetch: int = 2, max_views: int = MAX_VIEWS,
                 min_size: int = MIN_IMAGE_SIZE) -> None:
        self.backbone = backbone
        self.cache = cache if cache is not None else FeatureCache()
        self.batch_size = batch_size
        self.reader = ImageReader(num_workers, min_size=min_size)
        self.prefetch = prefetch
        self.max_views = max_views
        self._backbone_key = backbone_key(backbone)

    def _prepare(self, decoded: DecodedImage, result: Extracted, hashes: bool, thumbnails: int) -> _Frames:
        """On a decode thread: the small-image note, the perceptual hash (``hashes``), a thumbnail of at most
        ``thumbnails`` px (0: none), and per judged frame its cache key and its cached features or its views."""
        facts = decoded.facts
        size = self.backbone.preprocess_cfg.size
        if min(facts.width, facts.height) < size:
            result.note = (f"small image {facts.width}x{facts.height} upscaled to a {size} px window; "
                           "attribution is less reliable")
        result.colours = distinct_colours(decoded.frames[0])
        if hashes:
            result.phash = perceptual_hash(decoded.frames[0])
        if thumbnails:
            result.thumbnail = thumbnail_jpeg(decoded.frames[0], thumbnails)
        frames = _Frames()
        for i, frame in enumerate(decoded.frames):
            digest = facts.pixel_sha256 if i == 0 else hashlib.sha256(frame.tobytes()).hexdigest()
            key = f"{digest[:40]}-{frame.width}x{frame.height}-{self._backbone_key}"
            cached = self.cache.get(key)
            frames.keys.append(key)
            frames.rows.append(cached)
            frames.views.append(self.backbone.transform(frame) if cached is None else None)
        return frames

    def _encode(self, inputs: list[_Frames]) -> list[np.ndarray]:
        """Features ``(n_frames, n_features)`` of each input: its frames without cached features go through
        the backbone (cached afterwards) in calls of at most ``max_views`` views (a frame's views stay
        together): the forward's activations, not the batch size, set the peak memory."""
        todo = [(frames, i) for frames in inputs for i, v in enumerate(frames.views) if v is not None]
        while todo:
            n, end = len(todo[0][0].views[todo[0][1]]), 1
            while end < len(todo) and n + len(todo[end][0].views[todo[end][1]]) <= self.max_views:
                n, end = n + len(todo[end][0].views[todo[end][1]]), end + 1
            chunk, todo = todo[:end], todo[end:]
            views = [frames.views[i] for frames, i in chunk]
            out = self.backbone.encode(torch.cat(views), n_views=[len(v) for v in views]).numpy()
            for (frames, i), row in zip(chunk, out):
                self.cache.put(frames.keys[i], row)
                frames.rows[i], frames.views[i] = row, None
        return [np.stack(frames.rows) for frames in inputs]

    def stream(self, images: Sequence[ImageInput | DecodedImage | Read], progress: Progress | None = None,
               max_frames: int = 1, hashes: bool = False, provenance: Provenance | None = None,
               thumbnails: int = 0) -> Iterator[list[Extracted]]:
        """Yield the :class:`~attribution.reading.Extracted` of every input, in input order, a list each time a
        batch is done.

        Inputs go through the one input stage (:class:`~attribution.reading.ImageReader`): at most
        ``prefetch * batch_size`` of them are decoded ahead of the model, so memory does not grow with
        ``len(images)``; ``max_frames`` evenly spaced frames of an animated input are judged; ``hashes``
        adds each image's perceptual hash (for duplicate look-ups); ``provenance`` reads each file's
        provenance evidence from the bytes read for decoding; ``thumbnails`` > 0 keeps a JPEG thumbnail of at
        most that many px (for an enrolled image's exemplar).
        """
        for results in self.reader.extract(images, partial(self._prepare, hashes=hashes, thumbnails=thumbnails),
                                           self._encode, progress,
                                           batch_size=self.batch_size, window=max(1, self.prefetch) * self.batch_size,
                                           max_frames=max_frames, provenance=provenance, work=_Frames.n_forward):
            yield results
            if _MALLOC_TRIM is not None:
                _MALLOC_TRIM(0)

    def __call__(self, images: Sequence[ImageInput], progress: Progress | None = None,
                 hashes: bool = False, thumbnails: int = 0) -> FeatureBatch:
        """Features of frame 0 of every input that decodes (see :meth:`stream`), gathered in one batch."""
        return FeatureBatch.collect(r for results in self.stream(images, progress, hashes=hashes, thumbnails=thumbnails)
                                    for r in results)
