"""Decode -> preprocess -> backbone features: streamed in batches, decoding a bounded window ahead on
threads, with a feature cache keyed by pixel content."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .backbones import Backbone
from .constants import MIN_IMAGE_SIZE
from .duplicates import perceptual_hash
from .outputs import ImageFacts
from .storage import atomic_path
from .transform import DecodedImage, ImageDecodeError, ImageInput, decode_image, read_file

Progress = Callable[[int, int], None]
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
class FeatureBatch:
    """Features (frame 0) of the inputs that decoded, ``(len(index), n_features)``; the dicts are keyed
    by input position: error text and code, notes, facts and perceptual hashes."""

    features: np.ndarray
    index: list[int]
    errors: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    error_codes: dict[int, str] = field(default_factory=dict)
    facts: dict[int, ImageFacts] = field(default_factory=dict)
    phashes: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def collect(cls, results: Iterable[Extracted]) -> "FeatureBatch":
        """Frame 0 of every result without an error, and the errors, by input position."""
        batch = cls(np.zeros((0, 0), np.float32), [])
        rows = []
        for r in results:
            if r.error is not None:
                batch.errors[r.position], batch.error_codes[r.position] = r.error, r.error_code or "unreadable"
                continue
            batch.index.append(r.position)
            rows.append(r.features[0])
            batch.facts[r.position] = r.facts
            if r.note:
                batch.notes[r.position] = r.note
            if r.phash:
                batch.phashes[r.position] = r.phash
        dim = rows[0].shape[0] if rows else 0
        batch.features = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
        return batch


@dataclass
class Extracted:
    """One input after decoding and the backbone, as :meth:`FeatureExtractor.stream` yields it.

    ``features`` is ``(len(frame_indices), n_features)`` float32, one row per judged frame (row 0 is
    frame 0), or ``None`` when ``error`` is set. ``skipped`` marks a walked file that is no image.
    """

    position: int
    facts: ImageFacts | None = None
    frame_indices: list[int] = field(default_factory=list)
    features: np.ndarray | None = None
    phash: str | None = None
    error: str | None = None
    error_code: str | None = None
    skipped: bool = False
    note: str | None = None


@dataclass
class _Job:
    """An input on its way: its result so far, and per frame a cache key and views awaiting the backbone."""

    result: Extracted
    walked: bool = False
    keys: list[str] = field(default_factory=list)
    views: list[torch.Tensor | None] = field(default_factory=list)
    rows: list[np.ndarray | None] = field(default_factory=list)
    same_as: int | None = None

    @property
    def n_forward(self) -> int:
        """Frames still waiting for the backbone."""
        return sum(v is not None for v in self.views)


def failed(position: int, exc: BaseException, walked: bool = False) -> Extracted:
    """The error result of an input that could not be read or decoded (any exception: a per-file failure
    never stops a run; ``ImageDecodeError`` keeps its code, anything else is ``unreadable``)."""
    if isinstance(exc, ImageDecodeError):
        message, code = str(exc), exc.code
    else:  # a per-file failure must never stop the run
        message, code = f"could not read image: {type(exc).__name__}: {exc}", "unreadable"
    return Extracted(position, error=message, error_code=code, skipped=walked and code == "not_an_image")


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
        self.num_workers = num_workers or min(4, os.cpu_count() or 1)
        self.prefetch = prefetch
        self.max_views = max_views
        self.min_size = min_size
        self._backbone_key = backbone_key(backbone)

    # ------------------------------------------------------------ one input
    def _prepare(self, position: int, image: ImageInput | DecodedImage, walked: bool, max_frames: int,
                 hashes: bool) -> _Job:
        """Decode, check the size, hash, look up the cache and cut the views of each judged frame."""
        try:
            return self._prepare_decoded(position, decode_image(image, max_frames), walked, hashes)
        except Exception as exc:  # noqa: BLE001 - ImageDecodeError, or anything a decoder raises
            return _Job(failed(position, exc, walked), walked)

    def _prepare_decoded(self, position: int, decoded: DecodedImage, walked: bool, hashes: bool) -> _Job:
        facts = decoded.facts
        result = Extracted(position, facts, decoded.frame_indices)
        job = _Job(result, walked)
        if min(facts.width, facts.height) < self.min_size:
            result.error_code = "too_small"
            result.error = (f"image too small to judge ({facts.width}x{facts.height} px; the minimum is "
                            f"{self.min_size} px on the short side)")
            return job
        size = self.backbone.preprocess_cfg.size
        if min(facts.width, facts.height) < size:
            result.note = (f"small image {facts.width}x{facts.height} upscaled to a {size} px window; "
                           "attribution is less reliable")
        if hashes:
            result.phash = perceptual_hash(decoded.frames[0])
        for i, frame in enumerate(decoded.frames):
            digest = facts.pixel_sha256 if i == 0 else hashlib.sha256(frame.tobytes()).hexdigest()
            key = f"{digest[:40]}-{frame.width}x{frame.height}-{self._backbone_key}"
            cached = self.cache.get(key)
            job.keys.append(key)
            job.rows.append(cached)
            job.views.append(self.backbone.transform(frame) if cached is None else None)
        return job

    def _encode(self, jobs: list[_Job]) -> None:
        """Backbone features of every frame of ``jobs`` still without them (cached afterwards), in calls of
        at most ``max_views`` views (a frame's views stay together): the forward's activations, not the
        batch size, set the peak memory."""
        todo = [(job, i) for job in jobs for i, v in enumerate(job.views) if v is not None]
        while todo:
            n, end = len(todo[0][0].views[todo[0][1]]), 1
            while end < len(todo) and n + len(todo[end][0].views[todo[end][1]]) <= self.max_views:
                n, end = n + len(todo[end][0].views[todo[end][1]]), end + 1
            chunk, todo = todo[:end], todo[end:]
            views = [job.views[i] for job, i in chunk]
            out = self.backbone.encode(torch.cat(views), n_views=[len(v) for v in views]).numpy()
            for (job, i), row in zip(chunk, out):
                self.cache.put(job.keys[i], row)
                job.rows[i], job.views[i] = row, None

    # ---------------------------------------------------------------- stream
    def stream(self, images: Sequence[ImageInput | DecodedImage], progress: Progress | None = None,
               max_frames: int = 1, hashes: bool = False) -> Iterator[list[Extracted]]:
        """Yield the :class:`Extracted` of every input, in input order, a list each time a batch is done.

        At most ``prefetch * batch_size`` inputs are decoded ahead of the model, so memory does not grow
        with ``len(images)``. ``max_frames`` evenly spaced frames of an animated input are judged;
        ``hashes`` adds each image's perceptual hash (for duplicate look-ups).
        """
        total = len(images)
        window = max(1, self.prefetch) * self.batch_size
        claims: dict[str, int] = {}  # file digest -> first position with those bytes
        wanted: dict[int, int] = {}  # position -> repeats of it still in flight
        held: dict[int, Extracted] = {}  # results of positions that repeats in flight will copy
        recent: OrderedDict[int, Extracted] = OrderedDict()  # the last results, for repeats further apart
        inflight: deque[Future | _Job] = deque()
        pending: list[_Job] = []
        state = {"next": 0, "done": 0}
        sources = iter(enumerate(images))
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 1 else None

        def submit() -> bool:
            item = next(sources, None)
            if item is None:
                return False
            position, image = item
            walked = bool(getattr(image, "walked", False))
            digest = None
            if isinstance(image, (str, os.PathLike, bytes, bytearray)):
                try:
                    data = image if isinstance(image, (bytes, bytearray)) else read_file(image)
                except ImageDecodeError as exc:
                    inflight.append(_Job(failed(position, exc, walked), walked))
                    return True
                digest = hashlib.sha256(data).hexdigest()
                image = data
                first = claims.setdefault(digest, position)
                if first != position:
                    if first >= state["next"]:  # still on its way: copy its result when it is done
                        wanted[first] = wanted.get(first, 0) + 1
                        inflight.append(_Job(Extracted(position), walked, same_as=first))
                        return True
                    if first in recent:
                        inflight.append(_Job(self._copy(recent[first], position, walked), walked))
                        return True
                    claims[digest] = position  # too long ago: decode it again
            args = (position, image, walked, max_frames, hashes)
            inflight.append(pool.submit(self._prepare, *args) if pool else self._prepare(*args))
            return True

        def finish() -> list[Extracted]:
            self._encode(pending)
            results = []
            for job in pending:
                result = job.result
                if job.same_as is not None:
                    result = self._copy(held[job.same_as], result.position, job.walked)
                    wanted[job.same_as] -= 1
                    if not wanted[job.same_as]:
                        del wanted[job.same_as], held[job.same_as]
                elif job.rows:
                    result.features = np.stack(job.rows)
                if wanted.get(result.position):
                    held[result.position] = result
                recent[result.position] = result
                if len(recent) > window:
                    recent.popitem(last=False)
                state["next"] = result.position + 1
                results.append(result)
            state["done"] += len(pending)
            pending.clear()
            if progress:
                progress(state["done"], total)
            return results

        try:
            while len(inflight) < window and submit():
                pass
            while inflight:
                head = inflight.popleft()
                job = head.result() if isinstance(head, Future) else head
                submit()
                pending.append(job)
                n_forward = sum(j.n_forward for j in pending)
                if n_forward >= self.batch_size or n_forward == 0:  # full, or all of it ready
                    yield finish()
                    if _MALLOC_TRIM is not None and n_forward:
                        _MALLOC_TRIM(0)
            if pending:
                yield finish()
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _copy(result: Extracted, position: int, walked: bool) -> Extracted:
        """``result`` for another input with the same bytes."""
        return replace(result, position=position, skipped=walked and result.error_code == "not_an_image")

    def __call__(self, images: Sequence[ImageInput], progress: Progress | None = None,
                 hashes: bool = False) -> FeatureBatch:
        """Features of frame 0 of every input that decodes (see :meth:`stream`), gathered in one batch."""
        return FeatureBatch.collect(r for results in self.stream(images, progress, hashes=hashes) for r in results)
