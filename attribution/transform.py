"""Image decoding (pixels only) and the preprocessing that travels with a backbone."""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .constants import IMAGE_EXTENSIONS, INCEPTION_MEAN, INCEPTION_STD, MAX_IMAGE_PIXELS

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


class ImageDecodeError(ValueError):
    """An input that cannot be turned into RGB pixels; the message says why."""


@dataclass
class PreprocessCfg:
    """How a backbone wants its pixels.

    ``resize_mode="crop"`` keeps native resolution: ``n_crops`` windows of ``size`` px are cut from
    the image (centre, corners, or an even grid) and their features are averaged, so the
    high-frequency traces of a generator are not blurred by resizing. ``"resize"`` scales the short
    side to ``size`` and takes the centre crop (the usual CLIP / ImageNet preprocessing).
    Images whose short side is below ``size`` are upscaled in both modes.
    """

    size: int = 256
    mean: tuple[float, float, float] = INCEPTION_MEAN
    std: tuple[float, float, float] = INCEPTION_STD
    interpolation: str = "bicubic"
    resize_mode: str = "crop"
    n_crops: int = 5

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if self.resize_mode not in ("crop", "resize"):
            raise ValueError(f"resize_mode must be 'crop' or 'resize', not {self.resize_mode!r}")
        if self.n_crops < 1 or (self.n_crops not in (1, 5) and math.isqrt(self.n_crops) ** 2 != self.n_crops):
            raise ValueError(f"n_crops must be 1, 5 or a square number, not {self.n_crops}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessCfg":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files (by extension) under ``folder``, recursively, in sorted order."""
    return sorted(f for f in Path(folder).rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; folders replaced by their :func:`image_files`."""
    found: list[Path] = []
    for p in map(Path, paths):
        found += image_files(p) if p.is_dir() else [p]
    return found


def file_name(image: ImageInput) -> str | None:
    """The absolute path of a path input, else the ``filename`` an image carries, else ``None``."""
    if isinstance(image, (str, os.PathLike)):
        return str(Path(image).resolve())
    return getattr(image, "filename", None) or None


def load_image(image: ImageInput) -> Image.Image:
    """Decode ``image`` to an RGB ``PIL.Image`` carrying no metadata.

    Accepts a path, raw bytes, a PIL image or an ``(H, W[, C])`` uint8/float array. EXIF orientation
    is applied (it is geometry, not provenance); every other chunk (EXIF, PNG text, ICC) is dropped.
    Multi-frame files give their first frame. Raises :class:`ImageDecodeError` with a clear reason.
    """
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_image(image)
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise ImageDecodeError("empty input (0 bytes)")
        return _open(io.BytesIO(image), "<bytes>")
    path = Path(image)
    if not path.is_file():
        raise ImageDecodeError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    with path.open("rb") as fh:
        return _open(fh, str(path))


def _open(fh: Any, name: str) -> Image.Image:
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ImageDecodeError(f"image too large ({w}x{h} px; limit {MAX_IMAGE_PIXELS:,} px)")
                im.seek(0)
                im.load()
                return _to_rgb(im)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large (decompression bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _to_rgb(im: Image.Image) -> Image.Image:
    im = ImageOps.exif_transpose(im) if "exif" in im.info or im.getexif() else im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    rgb = im.convert("RGB")
    out = Image.new("RGB", rgb.size)  # a fresh image: no info dict, no EXIF, no ICC profile
    out.paste(rgb)
    return out


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ImageDecodeError(f"array must be (H, W), (H, W, 3) or (H, W, 4); got {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return _to_rgb(Image.fromarray(arr))


def _crop_boxes(w: int, h: int, size: int, n: int) -> list[tuple[int, int, int, int]]:
    if n == 1:
        xs, ys = [(w - size) // 2], [(h - size) // 2]
        return [(x, y, x + size, y + size) for x in xs for y in ys]
    if n == 5:
        cx, cy, r, b = (w - size) // 2, (h - size) // 2, w - size, h - size
        return [(x, y, x + size, y + size) for x, y in ((cx, cy), (0, 0), (r, 0), (0, b), (r, b))]
    g = math.isqrt(n)
    xs = np.linspace(0, w - size, g).round().astype(int)
    ys = np.linspace(0, h - size, g).round().astype(int)
    return [(int(x), int(y), int(x) + size, int(y) + size) for y in ys for x in xs]


class ImageTransform:
    """Callable turning one RGB image into a ``(n_views, 3, size, size)`` float tensor of its distinct crops
    (at most ``n_crops``)."""

    def __init__(self, cfg: PreprocessCfg) -> None:
        self.cfg = cfg
        self._mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self._std = torch.tensor(cfg.std).view(3, 1, 1)
        self._resample = getattr(Image.Resampling, cfg.interpolation.upper())

    @property
    def n_views(self) -> int:
        """Views per image at most; an image too small for distinct crops gives fewer (one if it is
        exactly one window), so no forward pass is spent on a copy."""
        return self.cfg.n_crops if self.cfg.resize_mode == "crop" else 1

    def __call__(self, image: Image.Image) -> torch.Tensor:
        cfg = self.cfg
        w, h = image.size
        short = min(w, h)
        if cfg.resize_mode == "resize" or short < cfg.size:
            scale = cfg.size / short
            w, h = max(cfg.size, round(w * scale)), max(cfg.size, round(h * scale))
            image = image.resize((w, h), self._resample, reducing_gap=None)
        n = self.n_views
        crops = [image.crop(box) for box in dict.fromkeys(_crop_boxes(w, h, cfg.size, n))]
        arr = np.stack([np.asarray(c, dtype=np.uint8) for c in crops])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std


def image_transform(cfg: PreprocessCfg) -> ImageTransform:
    """Build the transform for ``cfg`` (open_clip's ``image_transform_v2`` counterpart)."""
    return ImageTransform(cfg)
