"""Image decoding (pixels only) and the preprocessing that travels with a backbone.

Decoding needs only Pillow and NumPy; torch is imported when an :class:`ImageTransform` is built.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .constants import INCEPTION_MEAN, INCEPTION_STD, MAX_FILE_BYTES, MAX_IMAGE_PIXELS
from .outputs import ImageFacts

if TYPE_CHECKING:  # pragma: no cover
    import torch

try:  # HEIC / HEIF (iPhone photos); AVIF is Pillow's own (>= 11.3)
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - then HEIC files get an unsupported_format error
    pass
else:
    register_heif_opener()

# Pillow's own guard agrees with ours, set once here (the setting is process-wide: never changed per image).
# Pillow errors beyond twice its limit and only warns between; :func:`_open` checks the header size itself.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


ERROR_CODES = ("not_an_image", "unsupported_format", "truncated", "empty_file", "too_large", "too_small",
               "not_found", "unreadable")


class ImageDecodeError(ValueError):
    """An input that cannot be turned into RGB pixels; the message says why, ``code`` (one of
    :data:`ERROR_CODES`) says it in a stable word."""

    def __init__(self, message: str, code: str = "unreadable") -> None:
        super().__init__(message)
        self.code = code


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


@dataclass
class DecodedImage:
    """An input decoded: RGB ``frames`` (metadata dropped) at ``frame_indices`` of the file, and its facts."""

    frames: list[Image.Image]
    frame_indices: list[int]
    facts: ImageFacts


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``; raises :class:`ImageDecodeError` (``not_found``, ``empty_file``,
    ``too_large``, ``unreadable``) before reading anything that cannot be an image we judge."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageDecodeError(f"no such file: {path}", "not_found") from None
    except OSError as exc:
        raise ImageDecodeError(f"could not read file: {type(exc).__name__}: {exc}", "unreadable") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError(f"not a regular file: {path}", "unreadable")
    if st.st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)", "empty_file")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageDecodeError(f"file too large ({st.st_size:,} bytes; limit {MAX_FILE_BYTES:,})", "too_large")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"could not read file: {type(exc).__name__}: {exc}", "unreadable") from None


def load_image(image: ImageInput) -> Image.Image:
    """Decode ``image`` to an RGB ``PIL.Image`` carrying no metadata.

    Accepts a path, raw bytes, a PIL image or an ``(H, W[, C])`` uint8/float array. EXIF orientation
    is applied (it is geometry, not provenance); every other chunk (EXIF, PNG text, ICC) is dropped.
    Multi-frame files give their first frame. Raises :class:`ImageDecodeError` with a clear reason.
    """
    return decode_image(image).frames[0]


def decode_image(image: ImageInput | DecodedImage, max_frames: int = 1) -> DecodedImage:
    """Decode ``image`` (as :func:`load_image` takes it) to up to ``max_frames`` evenly spaced RGB frames
    (first and last included) plus its :class:`~attribution.outputs.ImageFacts`.

    Raises :class:`ImageDecodeError`; its ``code`` is one of :data:`ERROR_CODES`.
    """
    if isinstance(image, DecodedImage):
        return image
    if isinstance(image, Image.Image):
        return _decode(image, max_frames)
    if isinstance(image, np.ndarray):
        return _decode(_array_to_image(image), max_frames)
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise ImageDecodeError("empty input (0 bytes)", "empty_file")
        return _open(bytes(image), max_frames)
    return _open(read_file(image), max_frames)


def frame_indices(n_frames: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` evenly spaced frame indices of ``n_frames``, first and last included."""
    k = max(1, min(n_frames, max_frames))
    return sorted({round(i * (n_frames - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def _sniff(data: bytes) -> tuple[str, str]:
    """``(error code, format name)`` for bytes Pillow could not identify: an image format it cannot
    decode (``unsupported_format``), a format it knows cut short (``truncated``), or no image at all."""
    head = data[:64]
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "unsupported_format", "HEIF/AVIF (needs pillow-heif and Pillow >= 11.3)"
    for sig, name in _UNSUPPORTED_SIGNATURES:
        if head.startswith(sig):
            return "unsupported_format", name
    if b"<svg" in data[:1024].lower():
        return "unsupported_format", "SVG (vector)"
    if head.startswith(_SUPPORTED_SIGNATURES):
        return "truncated", ""
    return "not_an_image", ""


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_UNSUPPORTED_SIGNATURES = ((b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
                           (b"\x00\x00\x00\x18ftypcrx ", "Canon CR3 raw"), (b"FUJIFILMCCD-RAW", "Fujifilm raw"),
                           (b"IIRO", "Olympus raw"), (b"IIU\x00", "Panasonic raw"), (b"\x76\x2f\x31\x01", "OpenEXR"),
                           (b"#?RADIANCE", "Radiance HDR"))
_SUPPORTED_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")


def _open(data: bytes, max_frames: int) -> DecodedImage:
    """Decode encoded bytes, refusing an image larger than ``MAX_IMAGE_PIXELS`` from its header size, before its
    pixels are decoded. Changes no process-wide setting (Pillow's limit, warning filters): safe in threads."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(f"image too large ({w}x{h} px; limit {MAX_IMAGE_PIXELS:,} px)", "too_large")
            return _decode(im, max_frames)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning: under -W error
        raise ImageDecodeError(f"image too large (decompression bomb guard): {exc}", "too_large") from None
    except UnidentifiedImageError:
        code, name = _sniff(data)
        if code == "unsupported_format":
            raise ImageDecodeError(f"image format not supported: {name}", code) from None
        if code == "truncated":
            raise ImageDecodeError("corrupt or truncated image: its header cannot be read", code) from None
        raise ImageDecodeError("not a recognised image format", code) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}", "truncated") from None


_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ROTATED = range(2, 9)  # EXIF orientations other than "as stored"


def _decode(im: Image.Image, max_frames: int) -> DecodedImage:
    """Frames and facts of an open image (pixels are decoded here)."""
    n_frames = int(getattr(im, "n_frames", 1) or 1)
    mode = im.mode
    has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
    rotate = im.getexif().get(0x0112, 1) in _ROTATED
    rotated_by_decoder = im.info.get("original_orientation") in _ROTATED  # pillow-heif applies it itself
    bit_depth = _bit_depth(im)
    indices = frame_indices(n_frames, max_frames)
    frames = []
    for index in indices:
        if n_frames > 1:
            im.seek(index)
        im.load()
        frames.append(_to_rgb(ImageOps.exif_transpose(im) if rotate else im))
    first = frames[0]
    facts = ImageFacts(width=first.width, height=first.height, format=im.format, frames=n_frames,
                       has_alpha=has_alpha, bit_depth=bit_depth, grayscale=mode in _GRAY_MODES or is_grayscale(first),
                       exif_orientation_applied=rotate or rotated_by_decoder,
                       pixel_sha256=hashlib.sha256(first.tobytes()).hexdigest())
    return DecodedImage(frames, indices, facts)


def _bit_depth(im: Image.Image) -> int:
    """Bits per channel: the decoder's own figure (HEIF, AVIF) or the raw mode's (``RGB;16B`` is 16)."""
    if isinstance(im.info.get("bit_depth"), int):
        return im.info["bit_depth"]
    if im.mode == "1":
        return 1
    if im.mode in ("I", "F"):
        return 32
    raw = [t.args for t in getattr(im, "tile", None) or [] if isinstance(getattr(t, "args", None), str)]
    return 16 if im.mode.startswith("I;16") or any(";16" in r for r in raw) else 8


def thumbnail_jpeg(image: Image.Image, size: int, max_bytes: int | None = None, quality: int = 85) -> bytes:
    """JPEG bytes of ``image`` scaled down to fit ``size`` x ``size`` px at ``quality``; with ``max_bytes``, at
    most that many bytes (lower quality, down to 40, then smaller, until it fits)."""
    small = image.convert("RGB")
    small.thumbnail((size, size))
    while True:
        for q in range(quality, 39, -15) if max_bytes else (quality,):
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=q)
            if max_bytes is None or buf.tell() <= max_bytes:
                return buf.getvalue()
        small.thumbnail((max(1, small.width * 3 // 4), max(1, small.height * 3 // 4)))


FEW_COLOURS = 1024  # at most this many distinct colours: a palette or posterised image


def distinct_colours(image: Image.Image, limit: int = FEW_COLOURS) -> int | None:
    """How many distinct colours ``image`` has when it has at most ``limit`` (a palette or posterised image),
    else ``None`` (Pillow's ``getcolors`` stops counting past the limit)."""
    found = image.getcolors(limit)
    return None if found is None else len(found)


def is_grayscale(rgb: Image.Image) -> bool:
    """Whether every pixel has R = G = B (a sparse grid is checked first, so colour images exit early)."""
    a = np.asarray(rgb)
    for view in (a[::16, ::16], a):
        if not ((view[..., 0] == view[..., 1]).all() and (view[..., 1] == view[..., 2]).all()):
            return False
    return True


def _to_rgb(im: Image.Image) -> Image.Image:
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
        raise ImageDecodeError(f"array must be (H, W), (H, W, 3) or (H, W, 4); got {arr.shape}", "unsupported_format")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


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
        import torch

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
        import torch

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
