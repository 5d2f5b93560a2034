"""Harmless changes: what happens to an image on its way (re-encoding, resizing, cropping, rotation) and
ordinary processing that does not make a photo generated (collages, upscaling with sharpening, a photo of
a screen, a cartoon filter, a small crop).

A verdict must survive them, so the training recipe fits the head and its probe on changed copies of
every class (:func:`random_change`: the probe can then use none of them as evidence either way), and the
benchmarks score images after each named change (:func:`harmless_change`, :data:`HARMLESS`; the field
cases of ``benchmarks/field_cases.py`` apply the processing functions below to photos that are not in
the dev set). Every change returns a new RGB image.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter, ImageOps

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


def grid(image: Image.Image, n: int = 2) -> Image.Image:
    """``n x n`` copies of ``image``, each shrunk by ``n``, in a grid of about the image's size (a contact sheet)."""
    w, h = image.size
    small = image.resize((max(1, w // n), max(1, h // n)), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (small.width * n, small.height * n))
    for i in range(n * n):
        out.paste(small, ((i % n) * small.width, (i // n) * small.height))
    return out


def upscale_sharpen(image: Image.Image, factor: float = 2.0, percent: int = 150) -> Image.Image:
    """A bicubic upscale by ``factor`` followed by an unsharp mask (radius 2, ``percent``, threshold 2)."""
    return resize(image, factor).filter(ImageFilter.UnsharpMask(radius=2, percent=percent, threshold=2))


def cartoon(image: Image.Image, bits: int = 3, edge: int = 40) -> Image.Image:
    """A cel-shading filter: two 5x5 median filters, ``bits``-bit posterisation, dark lines where the edge
    filter of the grey image passes ``edge``."""
    flat = np.asarray(ImageOps.posterize(image.filter(ImageFilter.MedianFilter(5)).filter(ImageFilter.MedianFilter(5)),
                                         bits)).copy()
    lines = np.asarray(image.convert("L").filter(ImageFilter.FIND_EDGES)) > edge
    flat[lines] = (flat[lines] * 0.2).astype(np.uint8)
    return Image.fromarray(flat)


def screen_photo(image: Image.Image, angle: float = 1.5, blur: float = 1.2, noise: float = 3.0,
                 seed: int = 0) -> Image.Image:
    """A photo of a screen showing ``image``: upscaled 3x onto an RGB sub-pixel stripe mask (one red, green and
    blue column per pixel, a dark gap under each row), rotated by ``angle`` degrees, blurred as by a lens
    (Gaussian, radius ``blur``), shrunk back (the sub-pixel grid aliases into moire), sensor noise of sigma
    ``noise``, saved as JPEG 90."""
    w, h = image.size
    big = np.asarray(image.resize((w * 3, h * 3), Image.Resampling.NEAREST), dtype=np.float32)
    mask = np.zeros((3, 3, 3), np.float32)
    for c in range(3):
        mask[:2, c, c] = 1.0
    lit = Image.fromarray(np.clip(big * np.tile(mask, (h, w, 1)) * 2.2, 0, 255).astype(np.uint8))
    shot = lit.rotate(angle, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(blur))
    shot = np.asarray(shot.resize((w, h), Image.Resampling.BILINEAR), np.float32)
    noisy = shot + np.random.default_rng(seed).normal(0, noise, shot.shape)
    return encode(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "JPEG", 90)


def small_crop(image: Image.Image, side: int, left: float = 0.5, top: float = 0.5) -> Image.Image:
    """A ``side`` px square cut at relative position (``left``, ``top``) (0.5, 0.5: the centre)."""
    w, h = image.size
    side = min(side, w, h)
    x, y = round((w - side) * left), round((h - side) * top)
    return image.crop((x, y, x + side, y + side))


def random_processing(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One of the processing changes at random strength: a grid of 2 or 3, an upscale by 1.5-2 with sharpening,
    a screen photo, a cartoon filter or a 64-128 px crop."""
    kind = int(rng.integers(5))
    if kind == 0:
        return grid(image, int(rng.integers(2, 4)))
    if kind == 1:
        return upscale_sharpen(image, float(rng.uniform(1.5, 2.0)), int(rng.integers(80, 200)))
    if kind == 2:
        return screen_photo(image, float(rng.uniform(-3, 3)), float(rng.uniform(0.8, 1.6)), float(rng.uniform(1, 5)),
                            int(rng.integers(2**31)))
    if kind == 3:
        return cartoon(image, int(rng.integers(2, 5)), int(rng.integers(25, 60)))
    return small_crop(image, int(rng.integers(64, 129)), float(rng.random()), float(rng.random()))


def random_change(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random way an image travels: a re-encode (JPEG 65-95 or WebP 70-90), after a resize by 0.5-1.0 half
    of the time, or a crop of 80-95 % of each side; 40 % of the time, after a :func:`random_processing`."""
    if rng.random() < 0.4:
        image = random_processing(image, rng)
    elif rng.random() < 0.5:
        image = resize(image, float(rng.uniform(0.5, 1.0)))
    elif rng.random() < 0.3:
        w, h = image.size
        f = float(rng.uniform(0.8, 0.95))
        left, top = int(rng.integers(0, w - round(w * f) + 1)), int(rng.integers(0, h - round(h * f) + 1))
        image = image.crop((left, top, left + round(w * f), top + round(h * f)))
    if rng.random() < 0.7:
        return encode(image, "JPEG", int(rng.integers(65, 96)))
    return encode(image, "WEBP", int(rng.integers(70, 91)))
