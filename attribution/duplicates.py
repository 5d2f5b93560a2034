"""Is an image one of a head's own training or enrolled images? Exact and near-duplicate look-ups.

A head's zoo folder may hold ``exemplar_hashes.json`` (:data:`~attribution.constants.HASHES_NAME`):
for every image the head was trained or enrolled on, its id, class, ``pixel_sha256`` and size (exact
duplicates: the same pixels in any container) and a 256-bit perceptual hash (near duplicates: a
re-encoded, resized or lightly edited copy). It is JSON only; heads without it report no duplicates.

Near-duplicate threshold (:data:`~attribution.constants.NEAR_DUPLICATE_DISTANCE`, 20 of 256 bits),
measured on the 1,031 images of the earlier dev set: re-saving 200 of them as JPEG 95 / 75 / 50 or halving
their size moves the hash by at most 6 / 10 / 12 / 10 bits for 99 % of them (one near-flat photo, pixel std 5,
moves 32-72 bits: such images are missed, not confused); the closest two different images are 32 bits
apart (two GLID-3-XL samples of one seed), two DALL-E 3 images of one day and prompt at least 98 (180
pairs), while the two true copies in the set (one camera photo under two names, one test photo in two
benchmark sets) are 0 and 10 bits apart.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import imagehash
import numpy as np
from PIL import Image

from .constants import MIN_IMAGE_SIZE, NEAR_DUPLICATE_DISTANCE
from .outputs import ImageFacts
from .transform import decode_image

HASHES_FORMAT = "attribution-exemplar-hashes/1"
PHASH_SIZE = 16  # a 16 x 16 DCT: 256 bits
PHASH_SHORT_SIDE = 128  # images are box-reduced to about this short side first (same hash, 10x faster)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def perceptual_hash(image: Image.Image) -> str:
    """256-bit DCT perceptual hash (``imagehash.phash``, hash size 16) of an RGB image, as 64 hex digits."""
    factor = min(image.size) // PHASH_SHORT_SIDE
    return str(imagehash.phash(image.reduce(factor) if factor > 1 else image, hash_size=PHASH_SIZE))


def _bits(hex_hashes: Iterable[str]) -> np.ndarray:
    """``(n, 32)`` uint8 rows of 64-hex-digit hashes."""
    rows = [bytes.fromhex(h) for h in hex_hashes]
    return np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), PHASH_SIZE * PHASH_SIZE // 8)


@dataclass
class ExemplarHashes:
    """Hashes of a head's training and enrolled images; :meth:`match` finds the one a query duplicates.

    Each entry is ``{"id", "class", "pixel_sha256", "width", "height", "phash"}``; ``id`` is the
    exemplar's path relative to the training data folder (or the head folder, for enrolled images).
    """

    entries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index()

    def _index(self) -> None:
        self._exact = {(e["pixel_sha256"], e["width"], e["height"]): i for i, e in enumerate(self.entries)}
        self._phash = _bits(e["phash"] for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def entry(exemplar_id: str, label: str, facts: ImageFacts, phash: str) -> dict[str, Any]:
        """One entry, from an image's facts and :func:`perceptual_hash`."""
        return {"id": exemplar_id, "class": label, "pixel_sha256": facts.pixel_sha256, "width": facts.width,
                "height": facts.height, "phash": phash}

    def extended(self, entries: Iterable[dict[str, Any]]) -> "ExemplarHashes":
        """A copy with ``entries`` added."""
        return ExemplarHashes([*self.entries, *entries])

    def without(self, label: str) -> "ExemplarHashes":
        """A copy without class ``label``'s entries."""
        return ExemplarHashes([e for e in self.entries if e["class"] != label])

    def match(self, facts: ImageFacts, phash: str | None,
              max_distance: int = NEAR_DUPLICATE_DISTANCE) -> dict[str, Any] | None:
        """``{"class", "id", "match": "exact" | "near", "distance"}`` of the exemplar this image duplicates
        (same pixels and size, else the nearest pHash within ``max_distance`` bits), or ``None``."""
        exact = self._exact.get((facts.pixel_sha256, facts.width, facts.height))
        if exact is not None:
            return self._found(exact, "exact", 0)
        if phash is None or not self.entries:
            return None
        distances = _POPCOUNT[self._phash ^ _bits([phash])].sum(axis=1, dtype=np.int32)
        best = int(distances.argmin())
        return self._found(best, "near", int(distances[best])) if distances[best] <= max_distance else None

    def _found(self, i: int, kind: str, distance: int) -> dict[str, Any]:
        e = self.entries[i]
        return {"class": e["class"], "id": e["id"], "match": kind, "distance": distance}

    def to_bytes(self) -> bytes:
        """The ``exemplar_hashes.json`` file: one entry per line."""
        head = {"format": HASHES_FORMAT, "phash": {"library": "imagehash", "function": "phash",
                                                   "hash_size": PHASH_SIZE, "reduce_to": PHASH_SHORT_SIDE}}
        lines = ",\n".join(json.dumps(e, sort_keys=True) for e in self.entries)
        return (json.dumps(head, sort_keys=True)[:-1] + ', "exemplars": [\n' + lines + "\n]}\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ExemplarHashes":
        """Parse ``exemplar_hashes.json``; raises ``ValueError`` for another format or a malformed entry."""
        obj = json.loads(data)
        if not isinstance(obj, dict) or obj.get("format") != HASHES_FORMAT:
            raise ValueError(f"not an {HASHES_FORMAT} file")
        entries = obj.get("exemplars")
        keys = {"id": str, "class": str, "pixel_sha256": str, "width": int, "height": int, "phash": str}
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in keys.items())
                and len(e["phash"]) == PHASH_SIZE * PHASH_SIZE // 4 for e in entries):
            raise ValueError("malformed exemplar entries")
        return cls([{k: e[k] for k in keys} for e in entries])


def index_files(files: Sequence[str | os.PathLike], labels: Sequence[str], root: str | os.PathLike,
                min_size: int = MIN_IMAGE_SIZE) -> tuple[ExemplarHashes, dict[str, str]]:
    """Duplicate index of image ``files`` (ids relative to ``root``) without any model, and the files
    skipped (path -> reason) as training skips them: no image, unreadable, or below ``min_size`` px."""
    def one(item: tuple[str | os.PathLike, str]) -> dict[str, Any] | str:
        path, label = item
        try:
            decoded = decode_image(path)
        except Exception as exc:  # noqa: BLE001 - ImageDecodeError, or anything a decoder raises
            return str(exc)
        facts = decoded.facts
        if min(facts.width, facts.height) < min_size:
            return f"image too small ({facts.width}x{facts.height} px)"
        return ExemplarHashes.entry(str(Path(path).relative_to(root)), label, facts, perceptual_hash(decoded.frames[0]))

    entries, skipped = [], {}
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        for path, result in zip(files, pool.map(one, zip(files, labels))):  # results are small dicts
            if isinstance(result, str):
                skipped[str(path)] = result
            else:
                entries.append(result)
    return ExemplarHashes(entries), skipped
