"""The one input stage: every image that is judged, encoded or verified is read, decoded and checked here.

A path is read once, on the caller's thread; the same bytes given again (under any name) are decoded
once, the repeat copying the first's result. Decoding runs on ``num_workers`` threads at most ``window``
inputs ahead of the consumer, then the size check (``too_small``) and the consumer's ``prepare`` (a
backbone's crops, a verifier's tensors) on the same thread; the file's provenance evidence is read from the
same bytes. A per-input failure never stops a run: it becomes the input's ``error`` and ``error_code``
(:data:`attribution.transform.ERROR_CODES`). Needs Pillow and NumPy, not torch.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .constants import MIN_IMAGE_SIZE
from .outputs import AttributionOutput, ImageFacts
from .transform import DecodedImage, ImageDecodeError, ImageInput, decode_image, read_file

Progress = Callable[[int, int], None]
# Reads a file's provenance evidence, as :class:`attribution.provenance.ProvenanceReader` does (this stage only
# calls it, so decoding never imports provenance): called with the bytes read for decoding, or with the
# input itself when there are none, it returns a report with ``to_json()`` and ``reason``, and never raises.
Provenance = Callable[[Any], Any]


@dataclass
class Extracted:
    """One input after the input stage and, once its consumer encoded it, its features.

    ``features`` is ``(len(frame_indices), n_features)`` float32, one row per judged frame (row 0 is
    frame 0), or ``None`` when ``error`` is set. ``skipped`` marks a walked file that is no image.
    ``provenance`` and ``provenance_reason`` are the file's provenance fields
    (:meth:`~attribution.provenance.ProvenanceReport.fields`) when they were asked for; ``thumbnail`` the JPEG
    bytes of a small copy of frame 0 when asked for (an enrolled image's exemplar thumbnail); ``colours`` the
    number of distinct colours of frame 0 when it has few (a palette or posterised image).
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
    provenance: dict[str, Any] | None = None
    provenance_reason: str | None = None
    thumbnail: bytes | None = None
    colours: int | None = None

    def fail(self, exc: BaseException, walked: bool = False) -> "Extracted":
        """Record why this input cannot be judged and return it: an ``ImageDecodeError`` keeps its code, any
        other exception is ``unreadable`` (a per-file failure never stops a run)."""
        if isinstance(exc, ImageDecodeError):
            self.error, self.error_code = str(exc), exc.code
        else:
            self.error, self.error_code = f"could not read image: {type(exc).__name__}: {exc}", "unreadable"
        self.skipped = walked and self.error_code == "not_an_image"
        return self

    def copy_for(self, position: int, walked: bool) -> "Extracted":
        """This result for another input with the same bytes."""
        return replace(self, position=position, skipped=walked and self.error_code == "not_an_image")

    def row(self, file: str | None) -> AttributionOutput:
        """The output row of this input as the input stage left it (its error, note and provenance); the
        head's decision fills the rest of a judged row."""
        return AttributionOutput(file, note=self.note, error=self.error, error_code=self.error_code,
                                 skipped=self.skipped, provenance=self.provenance,
                                 provenance_reason=self.provenance_reason, distinct_colours=self.colours)


@dataclass
class FeatureBatch:
    """Features (frame 0) of the inputs that decoded, ``(len(index), n_features)``; the dicts are keyed
    by input position: error text and code, notes, facts, perceptual hashes and thumbnails."""

    features: np.ndarray
    index: list[int]
    errors: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    error_codes: dict[int, str] = field(default_factory=dict)
    facts: dict[int, ImageFacts] = field(default_factory=dict)
    phashes: dict[int, str] = field(default_factory=dict)
    thumbnails: dict[int, bytes] = field(default_factory=dict)

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
            if r.thumbnail:
                batch.thumbnails[r.position] = r.thumbnail
        dim = rows[0].shape[0] if rows else 0
        batch.features = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
        return batch


@dataclass
class Read:
    """An input as :meth:`ImageReader.stream` hands it on.

    ``result`` holds its facts or its error; ``prepared`` is what the stream's ``prepare`` made of it
    (``None`` after an error and for a repeat); a stream without ``prepare`` keeps the frames in ``decoded``
    instead. A repeat of an earlier input's bytes (``first``) is not decoded: :meth:`finished` copies the
    first's result. A ``Read`` with ``decoded`` given to a stream (e.g. read in another process) passes
    through: it is checked and prepared, not read again.
    """

    result: Extracted
    walked: bool = False
    decoded: DecodedImage | None = None
    prepared: Any = None
    first: Read | None = None

    @property
    def facts(self) -> ImageFacts | None:
        """The input's facts (``None`` when it could not be decoded)."""
        return self.result.facts

    def finished(self) -> Extracted:
        """The input's result: its own, or a repeat's copy of its first's (complete once the first's is)."""
        return self.result if self.first is None else self.first.result.copy_for(self.result.position, self.walked)


Prepare = Callable[[DecodedImage, Extracted], Any]


class ImageReader:
    """The input stage (see the module docstring).

    Parameters
    ----------
    num_workers : int, optional
        Decode threads (default: up to 4, one per CPU); 1 decodes on the caller's thread.
    min_size : int
        Images whose short side is below it, in px, get a ``too_small`` error.
    read : callable
        Reads a path's bytes; raises :class:`~attribution.transform.ImageDecodeError` (or anything, then
        ``unreadable``) when it cannot. Default :func:`~attribution.transform.read_file`.
    """

    def __init__(self, num_workers: int | None = None, *, min_size: int = MIN_IMAGE_SIZE,
                 read: Callable[[str | os.PathLike], bytes] = read_file) -> None:
        self.num_workers = num_workers or min(4, os.cpu_count() or 1)
        self.min_size = min_size
        self.read = read

    def stream(self, images: Sequence[ImageInput | DecodedImage | Read], prepare: Prepare | None = None, *,
               batch_size: int = 1, window: int | None = None, max_frames: int = 1,
               provenance: Provenance | None = None,
               work: Callable[[Any], int] | None = None) -> Iterator[list[Read]]:
        """Yield every input's :class:`Read`, in input order, in lists holding ``batch_size`` units of ``work``
        or more (``work(prepared)``, default 1 per prepared input), or none at all (errors, repeats: handed on
        at once).

        At most ``window`` inputs (default ``2 * batch_size``) are read ahead of the consumer, so memory does
        not grow with ``len(images)``. ``max_frames`` evenly spaced frames of an animated input are decoded.
        ``prepare(decoded, result)`` runs on the decode thread (it may set ``result.note`` or raise to refuse
        the input); ``provenance`` reads each file's provenance evidence from the bytes read here.
        """
        window = max(1, window or 2 * batch_size)
        weigh = work or (lambda prepared: 1)
        claims: dict[str, int] = {}  # file digest -> position of the first input with those bytes
        recent: OrderedDict[int, Read] = OrderedDict()  # the inputs of the last ``window`` positions that claimed bytes
        inflight: deque[Future | Read] = deque()
        sources = iter(enumerate(images))
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 1 else None

        def submit() -> bool:
            item = next(sources, None)
            if item is None:
                return False
            position, image = item
            while recent and next(iter(recent)) < position - window:
                recent.popitem(last=False)
            read, source = self._take(position, image, provenance)
            if read.result.error is not None:
                inflight.append(read)
                return True
            if isinstance(source, bytes):
                digest = hashlib.sha256(source).hexdigest()
                first = claims.setdefault(digest, position)
                if first in recent:  # the same bytes a moment ago: copy that input's result
                    read.first = recent[first]
                    inflight.append(read)
                    return True
                claims[digest] = position  # new bytes, or seen too long ago: decode
                recent[position] = read
            args = (read, source, prepare, max_frames, None if isinstance(image, Read) else provenance)
            inflight.append(pool.submit(self._decode, *args) if pool else self._decode(*args))
            return True

        try:
            while len(inflight) < window and submit():
                pass
            pending: list[Read] = []
            units = 0
            while inflight:
                head = inflight.popleft()
                read = head.result() if isinstance(head, Future) else head
                submit()
                pending.append(read)
                units += 0 if read.prepared is None else weigh(read.prepared)
                if units >= batch_size or units == 0:  # full, or nothing in it to wait for
                    yield pending
                    pending, units = [], 0
            if pending:
                yield pending
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)

    def extract(self, images: Sequence[ImageInput | DecodedImage | Read], prepare: Prepare,
                encode: Callable[[list[Any]], Iterable[np.ndarray]], progress: Progress | None = None, *,
                batch_size: int, window: int | None = None, max_frames: int = 1,
                provenance: Provenance | None = None,
                work: Callable[[Any], int] | None = None) -> Iterator[list[Extracted]]:
        """:meth:`stream`, then ``encode`` per batch: yield the batch's :class:`Extracted`, in input order, each
        prepared input with the features ``encode`` gave it (one ``(n_frames, n_features)`` array per
        prepared input); ``progress(done, total)`` after each batch."""
        total, done = len(images), 0
        with closing(self.stream(images, prepare, batch_size=batch_size, window=window, max_frames=max_frames,
                                 provenance=provenance, work=work)) as batches:
            for batch in batches:
                judged = [read for read in batch if read.prepared is not None]
                if judged:
                    for read, features in zip(judged, encode([read.prepared for read in judged])):
                        read.result.features, read.prepared = features, None
                done += len(batch)
                if progress is not None:
                    progress(done, total)
                yield [read.finished() for read in batch]

    def _take(self, position: int, image: ImageInput | DecodedImage | Read,
              provenance: Provenance | None) -> tuple[Read, Any]:
        """On the caller's thread: the input's :class:`Read` and what to decode (a path's bytes, read here once;
        the input itself; a passed-through read's frames). A file that cannot be read gets its error."""
        if isinstance(image, Read):  # read elsewhere
            return Read(replace(image.result, position=position), image.walked, image.decoded), image.decoded
        read = Read(Extracted(position), bool(getattr(image, "walked", False)))
        if not isinstance(image, (str, os.PathLike, bytes, bytearray)):
            return read, image
        try:
            return read, bytes(image) if isinstance(image, (bytes, bytearray)) else self.read(image)
        except Exception as exc:  # noqa: BLE001 - a per-file failure never stops a run
            read.result.fail(exc, read.walked)
            if provenance is not None:  # the provenance reader says itself why there are no bytes
                _set_provenance(read.result, provenance, image)
            return read, None

    def _decode(self, read: Read, source: Any, prepare: Prepare | None, max_frames: int,
                provenance: Provenance | None) -> Read:
        """Decode ``source`` (bytes, an image, or a :class:`~attribution.transform.DecodedImage`), check its size
        and prepare it; never raises (a failure becomes the result's error)."""
        result = read.result
        try:
            if provenance is not None:
                _set_provenance(result, provenance, source)
            decoded = decode_image(source, max_frames)
            result.facts, result.frame_indices = decoded.facts, decoded.frame_indices
            if min(decoded.facts.width, decoded.facts.height) < self.min_size:
                result.error_code = "too_small"
                result.error = (f"image too small to judge ({decoded.facts.width}x{decoded.facts.height} px; the "
                                f"minimum is {self.min_size} px on the short side)")
            elif prepare is None:
                read.decoded = decoded
            else:
                read.prepared = prepare(decoded, result)
        except Exception as exc:  # noqa: BLE001 - ImageDecodeError, or anything a decoder or prepare raises
            result.fail(exc, read.walked)
        return read


def _set_provenance(result: Extracted, provenance: Provenance, source: Any) -> None:
    report = provenance(source)
    result.provenance, result.provenance_reason = report.to_json(), report.reason


def as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """``images`` as a list; one path, bytes, PIL image or ``(H, W[, C])`` array is a list of one."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
        return [images]
    return list(images)
