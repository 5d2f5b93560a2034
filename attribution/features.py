"""Decode -> preprocess -> backbone features, batched, with parallel decoding and a feature cache."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import Backbone
from .transform import ImageDecodeError, ImageInput, load_image

Progress = Callable[[int, int], None]


def pixel_key(image: Image.Image) -> str:
    """Content hash of decoded pixels (metadata and container format do not change it)."""
    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:40]


def backbone_key(backbone: Backbone) -> str:
    """Hash of everything that changes a backbone's features (id, layers, preprocessing, options)."""
    return hashlib.sha256(json.dumps(backbone.config(), sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """Features keyed by pixel hash + backbone key: an in-memory LRU, optionally backed by a folder of ``.npy``."""

    def __init__(self, directory: str | os.PathLike | None = None, max_items: int = 50_000) -> None:
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
        self._remember(key, value)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
            os.replace(tmp, self.directory / f"{key}.npy")

    def _remember(self, key: str, value: np.ndarray) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        return len(self._memory)


@dataclass
class FeatureBatch:
    """Features of the inputs that decoded; ``errors`` and ``notes`` are keyed by input position."""

    features: np.ndarray
    index: list[int]
    errors: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class _Decoded:
    position: int
    key: str | None = None
    views: torch.Tensor | None = None
    cached: np.ndarray | None = None
    error: str | None = None
    note: str | None = None


class FeatureExtractor:
    """Turns images into backbone features: parallel decoding, batching, the model run once per batch."""

    def __init__(self, backbone: Backbone, cache: FeatureCache | None = None, batch_size: int = 16,
                 num_workers: int | None = None) -> None:
        self.backbone = backbone
        self.cache = cache if cache is not None else FeatureCache()
        self.batch_size = batch_size
        self.num_workers = num_workers or min(4, os.cpu_count() or 1)
        self._backbone_key = backbone_key(backbone)

    def _decode(self, position: int, image: ImageInput) -> _Decoded:
        try:
            pil = load_image(image)
        except ImageDecodeError as exc:
            return _Decoded(position, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a per-file failure must never stop the batch
            return _Decoded(position, error=f"could not read image: {type(exc).__name__}: {exc}")
        key = f"{pixel_key(pil)}-{self._backbone_key}"
        note = None
        size = self.backbone.preprocess_cfg.size
        if min(pil.size) < size:
            note = f"small image {pil.size[0]}x{pil.size[1]} upscaled to a {size} px window; attribution is less reliable"
        cached = self.cache.get(key)
        if cached is not None:
            return _Decoded(position, key=key, cached=cached, note=note)
        return _Decoded(position, key=key, views=self.backbone.transform(pil), note=note)

    def _decoded(self, images: Sequence[ImageInput]) -> Iterator[_Decoded]:
        if self.num_workers <= 1 or len(images) <= 1:
            yield from (self._decode(i, im) for i, im in enumerate(images))
            return
        with ThreadPoolExecutor(self.num_workers) as pool:
            yield from pool.map(self._decode, range(len(images)), images)

    def __call__(self, images: Sequence[ImageInput], progress: Progress | None = None) -> FeatureBatch:
        feats: dict[int, np.ndarray] = {}
        batch = FeatureBatch(np.zeros((0, 0), np.float32), [])
        pending: list[_Decoded] = []
        done = 0

        def flush() -> None:
            nonlocal done
            if not pending:
                return
            x = torch.cat([d.views for d in pending])
            out = self.backbone.encode(x, n_views=[len(d.views) for d in pending]).numpy()
            for d, f in zip(pending, out):
                self.cache.put(d.key, f)
                feats[d.position] = f
            done += len(pending)
            pending.clear()
            if progress:
                progress(done, len(images))

        for d in self._decoded(images):
            if d.error is not None:
                batch.errors[d.position] = d.error
                done += 1
                continue
            if d.note:
                batch.notes[d.position] = d.note
            if d.cached is not None:
                feats[d.position] = d.cached
                done += 1
                continue
            pending.append(d)
            if len(pending) >= self.batch_size:
                flush()
        flush()
        batch.index = sorted(feats)
        dim = next(iter(feats.values())).shape[0] if feats else 0
        batch.features = np.stack([feats[i] for i in batch.index]) if feats else np.zeros((0, dim), np.float32)
        if progress:
            progress(len(images), len(images))
        return batch
