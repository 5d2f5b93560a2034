"""Real photos after ordinary handling that detectors have been reported to call generated.

Each case is built from photos that are not in the dev set (scikit-image, scikit-learn and matplotlib
ship them; none is a dev image) and must come back ``real`` or ``uncertain`` for every photo:

- ``crop64``: a 64 x 64 px crop of the photo's centre (thumbnails, avatars);
- ``text_page``: scikit-image's scanned page (``page()``) and text image, at several scales and crops;
- ``grid2x2``: four copies of one photo, each at half size, in a 2 x 2 grid (contact sheets, collages);
- ``cel_shaded``: a cartoon filter (median smoothing, 3-bit posterisation, dark edge lines);
- ``screen_moire``: a photo of a screen showing the photo. Simulated: the photo upscaled 3x onto an
  RGB sub-pixel stripe mask (each pixel becomes a red, a green and a blue column, with dark gaps between
  rows), rotated by 1.5 degrees, blurred as by a camera lens (Gaussian, radius 1.2), shrunk back to the
  photo's size (the sub-pixel grid aliases into moire), with sensor noise (sigma 3) and saved as JPEG 90;
- ``upscale2x_sharp``: a 2x bicubic upscale followed by an unsharp mask (radius 2, 150 %, threshold 2).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter, ImageOps

CASES = ("crop64", "text_page", "grid2x2", "cel_shaded", "screen_moire", "upscale2x_sharp")


def photos() -> dict[str, Image.Image]:
    """Colour photos that are no dev image: scikit-image's rocket and motorcycle pair (its astronaut, coffee and
    chelsea are in dev), scikit-learn's china and flower, matplotlib's Grace Hopper."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    left, right, _ = skimage.data.stereo_motorcycle()
    out = {"skimage_rocket": skimage.data.rocket(), "skimage_motorcycle_left": left,
           "skimage_motorcycle_right": right}
    samples = load_sample_images()
    out.update({f"sklearn_{name.rsplit('/', 1)[-1].split('.')[0]}": im for name, im in zip(samples.filenames, samples.images)})
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        out["matplotlib_grace_hopper"] = np.asarray(Image.open(fh).convert("RGB"))
    return {name: Image.fromarray(np.asarray(a)).convert("RGB") for name, a in out.items()}


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def crop64(photo: Image.Image) -> Image.Image:
    w, h = photo.size
    return photo.crop(((w - 64) // 2, (h - 64) // 2, (w + 64) // 2, (h + 64) // 2))


def grid2x2(photo: Image.Image) -> Image.Image:
    w, h = photo.size
    half = photo.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (half.width * 2, half.height * 2))
    for x in (0, half.width):
        for y in (0, half.height):
            out.paste(half, (x, y))
    return out


def cel_shaded(photo: Image.Image) -> Image.Image:
    smooth = photo.filter(ImageFilter.MedianFilter(5)).filter(ImageFilter.MedianFilter(5))
    flat = ImageOps.posterize(smooth, 3)
    edges = np.asarray(photo.convert("L").filter(ImageFilter.FIND_EDGES)) > 40
    out = np.asarray(flat).copy()
    out[edges] = (out[edges] * 0.2).astype(np.uint8)
    return Image.fromarray(out)


def screen_moire(photo: Image.Image, seed: int = 0) -> Image.Image:
    w, h = photo.size
    big = np.asarray(photo.resize((w * 3, h * 3), Image.Resampling.NEAREST), dtype=np.float32)
    mask = np.zeros((3, 3, 3), np.float32)
    for c in range(3):
        mask[:2, c, c] = 1.0  # one sub-pixel column per colour, a dark gap under each row
    screen = big * np.tile(mask, (h, w, 1))
    shot = Image.fromarray(np.clip(screen * 2.2, 0, 255).astype(np.uint8)).rotate(1.5, Image.Resampling.BILINEAR)
    shot = shot.filter(ImageFilter.GaussianBlur(1.2)).resize((w, h), Image.Resampling.BILINEAR)
    noisy = np.asarray(shot, np.float32) + np.random.default_rng(seed).normal(0, 3, (h, w, 3))
    return _jpeg(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), 90)


def upscale2x_sharp(photo: Image.Image) -> Image.Image:
    w, h = photo.size
    big = photo.resize((w * 2, h * 2), Image.Resampling.BICUBIC)
    return big.filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=2))


def text_pages() -> dict[str, Image.Image]:
    """Five scanned-text images from scikit-image's ``page()`` and ``text()``."""
    import skimage.data

    page = Image.fromarray(skimage.data.page()).convert("RGB")
    text = Image.fromarray(skimage.data.text()).convert("RGB")
    w, h = page.size
    return {"page_x1": page, "page_x2": page.resize((w * 2, h * 2), Image.Resampling.BICUBIC),
            "page_x2_rotated": page.resize((w * 2, h * 2), Image.Resampling.BICUBIC).rotate(2, fillcolor="white"),
            "page_jpeg75": _jpeg(page.resize((w * 3 // 2, h * 3 // 2), Image.Resampling.BICUBIC), 75),
            "text_x2": text.resize((text.width * 2, text.height * 2), Image.Resampling.BICUBIC)}


def field_cases() -> dict[str, dict[str, Image.Image]]:
    """``{case: {photo name: image}}`` for every case of :data:`CASES`."""
    base = photos()
    made = {"crop64": crop64, "grid2x2": grid2x2, "cel_shaded": cel_shaded, "upscale2x_sharp": upscale2x_sharp,
            "screen_moire": screen_moire}
    out = {case: {name: make(p) for name, p in base.items()} for case, make in made.items()}
    out["text_page"] = text_pages()
    return {case: out[case] for case in CASES}
