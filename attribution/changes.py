"""Harmless changes: what happens to an image on its way (re-encoding, resizing, cropping, rotation).

A verdict must survive them, so the training recipe fits the head and its probe on changed copies too
(:func:`random_change`), and the benchmarks score images after each named change
(:func:`harmless_change`, :data:`HARMLESS`). Every change returns a new RGB image decoded from the
bytes it would travel as.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

HARMLESS = ("flip", "rot90", "resize0.5", "resize0.8", "resize1.25", "crop0.9", "jpeg90", "jpeg75", "webp80",
            "png_to_jpeg")


def encode(image: Image.Image, fmt: str, quality: int) -> Image.Image:
    """``image`` saved as ``fmt`` (``JPEG``, ``WEBP``) at ``quality`` and decoded again."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return im.convert("RGB")


def resize(image: Image.Image, factor: float) -> Image.Image:
    """``image`` scaled by ``factor`` (bicubic up, Lanczos down)."""
    w, h = image.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return image.resize(size, Image.Resampling.BICUBIC if factor > 1 else Image.Resampling.LANCZOS)


def harmless_change(image: Image.Image, kind: str, source_format: str | None = None) -> Image.Image:
    """``image`` after the change ``kind`` (one of :data:`HARMLESS`); ``png_to_jpeg`` leaves a file that was a
    JPEG as it is (``source_format``: the format it came in). Raises ``ValueError`` for an unknown kind."""
    w, h = image.size
    if kind == "flip":
        return ImageOps.mirror(image)
    if kind == "rot90":
        return image.transpose(Image.Transpose.ROTATE_90)
    if kind.startswith("resize"):
        return resize(image, float(kind[len("resize"):]))
    if kind == "crop0.9":
        dw, dh = round(w * 0.05), round(h * 0.05)
        return image.crop((dw, dh, w - dw, h - dh))
    if kind.startswith("jpeg"):
        return encode(image, "JPEG", int(kind[len("jpeg"):]))
    if kind.startswith("webp"):
        return encode(image, "WEBP", int(kind[len("webp"):]))
    if kind == "png_to_jpeg":
        return image if source_format == "JPEG" else encode(image, "JPEG", 95)
    raise ValueError(f"unknown change {kind!r}; choose from {HARMLESS}")


def random_change(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random way an image travels: a re-encode (JPEG 65-95 or WebP 70-90), after a resize by 0.5-1.0 half
    of the time, or a crop of 80-95 % of each side."""
    if rng.random() < 0.5:
        image = resize(image, float(rng.uniform(0.5, 1.0)))
    elif rng.random() < 0.3:
        w, h = image.size
        f = float(rng.uniform(0.8, 0.95))
        left, top = int(rng.integers(0, w - round(w * f) + 1)), int(rng.integers(0, h - round(h * f) + 1))
        image = image.crop((left, top, left + round(w * f), top + round(h * f)))
    if rng.random() < 0.7:
        return encode(image, "JPEG", int(rng.integers(65, 96)))
    return encode(image, "WEBP", int(rng.integers(70, 91)))
