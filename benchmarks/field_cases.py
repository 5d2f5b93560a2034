"""Real photos after ordinary handling that detectors have been reported to call generated.

Each case is built from photos that are not in the dev set (scikit-image, scikit-learn and matplotlib
ship them; none is a dev image) and must come back ``real`` or ``uncertain`` for every photo:

- ``crop64``: a 64 x 64 px crop of the photo's centre (thumbnails, avatars);
- ``text_page``: scikit-image's scanned page (``page()``) and text image, at several scales and crops;
- ``grid2x2``: four copies of one photo, each at half size, in a 2 x 2 grid (contact sheets, collages);
- ``cel_shaded``: a cartoon filter (median smoothing, 3-bit posterisation, dark edge lines);
- ``screen_moire``: a photo of a screen showing the photo, simulated (``attribution.changes.screen_photo``:
  the photo upscaled 3x onto an RGB sub-pixel stripe mask, each pixel a red, a green and a blue column
  with a dark gap under each row, rotated by 1.5 degrees, blurred as by a lens (Gaussian, radius 1.2),
  shrunk back to its size so the sub-pixel grid aliases into moire, sensor noise of sigma 3, JPEG 90);
- ``upscale2x_sharp``: a 2x bicubic upscale followed by an unsharp mask (radius 2, 150 %, threshold 2).

The recipe fits the head on dev images after the same kinds of processing at random strengths
(``attribution.changes.random_processing``, every class alike), so these cases test that invariance on
photos it never saw; the text pages are of a kind no dev class has.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.changes import cartoon, encode, grid, screen_photo, small_crop, upscale_sharpen  # noqa: E402

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


def crop64(photo: Image.Image) -> Image.Image:
    return small_crop(photo, 64)


def text_pages() -> dict[str, Image.Image]:
    """Five scanned-text images from scikit-image's ``page()`` and ``text()``."""
    import skimage.data

    page = Image.fromarray(skimage.data.page()).convert("RGB")
    text = Image.fromarray(skimage.data.text()).convert("RGB")
    w, h = page.size
    return {"page_x1": page, "page_x2": page.resize((w * 2, h * 2), Image.Resampling.BICUBIC),
            "page_x2_rotated": page.resize((w * 2, h * 2), Image.Resampling.BICUBIC).rotate(2, fillcolor="white"),
            "page_jpeg75": encode(page.resize((w * 3 // 2, h * 3 // 2), Image.Resampling.BICUBIC), "JPEG", 75),
            "text_x2": text.resize((text.width * 2, text.height * 2), Image.Resampling.BICUBIC)}


def field_cases() -> dict[str, dict[str, Image.Image]]:
    """``{case: {photo name: image}}`` for every case of :data:`CASES`."""
    base = photos()
    made = {"crop64": crop64, "grid2x2": grid, "cel_shaded": cartoon, "upscale2x_sharp": upscale_sharpen,
            "screen_moire": screen_photo}
    out = {case: {name: make(p) for name, p in base.items()} for case, make in made.items()}
    out["text_page"] = text_pages()
    return {case: out[case] for case in CASES}
