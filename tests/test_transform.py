
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from attribution.backbones.base import average_views
from attribution.constants import MAX_IMAGE_PIXELS
from attribution.transform import ImageDecodeError, PreprocessCfg, decode_image, image_transform, load_image
from conftest import make_image, png_chunk


def test_metadata_is_dropped_and_pixels_kept(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Stable Diffusion v1, steps 50")
    Image.fromarray(arr).save(tmp_path / "a.png", pnginfo=info)
    im = load_image(tmp_path / "a.png")
    assert im.mode == "RGB" and im.size == (50, 40)
    assert im.info == {} and not im.getexif()
    assert np.array_equal(np.asarray(im), arr)


def test_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background
    g16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert load_image(g16).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((5, 6), np.uint8)).size == (6, 5)


@pytest.mark.parametrize("data,reason", [(b"", "empty"), (b"hello, not an image", "not a recognised image")])
def test_bad_bytes(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(data)


def test_truncated_png(tmp_path):
    path = make_image(tmp_path / "x.png", size=128)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        load_image(path)


def test_crop_views_keep_native_pixels():
    arr = np.random.default_rng(1).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    cfg = PreprocessCfg(size=256, mean=(0, 0, 0), std=(1, 1, 1), n_crops=5)
    views = image_transform(cfg)(Image.fromarray(arr))
    assert views.shape == (5, 3, 256, 256)
    centre = arr[128:384, 128:384].transpose(2, 0, 1) / 255.0
    assert np.allclose(views[0].numpy(), centre, atol=1e-6)  # no resampling in crop mode


def test_only_distinct_crops_are_views():
    """An image exactly one window large gives one view, not five copies (no forward pass is wasted);
    averaging the views of a batch of mixed counts equals averaging each image alone."""
    cfg = PreprocessCfg(size=256, n_crops=5)
    rng = np.random.default_rng(2)
    sizes = [(256, 256), (300, 256), (512, 384)]
    views = [image_transform(cfg)(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))) for w, h in sizes]
    assert [len(v) for v in views] == [1, 3, 5]  # 300x256: centre, left and right windows
    feats = [torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(len(v), 8))), dim=1) for v in views]
    together = average_views(torch.cat(feats), [len(v) for v in views])
    alone = torch.cat([average_views(f, len(f)) for f in feats])
    assert torch.allclose(together, alone) and torch.allclose(together[0], feats[0][0])
    assert torch.allclose(together.norm(dim=1), torch.ones(3, dtype=together.dtype))


def test_small_images_are_upscaled():
    views = image_transform(PreprocessCfg(size=64, n_crops=1))(Image.new("RGB", (8, 8)))
    assert views.shape == (1, 3, 64, 64)


def test_bad_cfg():
    with pytest.raises(ValueError):
        PreprocessCfg(n_crops=3)
    with pytest.raises(ValueError):
        PreprocessCfg(resize_mode="squash")


def header_only_png(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` px with almost no data (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + png_chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, for "just_over"
def test_decoding_threads_refuse_every_bomb_and_change_no_process_wide_setting(tmp_path):
    """Bombs are ``too_large`` and normal images decode, every time, while other threads decode too; no thread
    sets Pillow's limit or the warning filters (both process-wide) meanwhile."""
    inputs = {"bomb": header_only_png(40_000, 40_000),  # beyond twice the limit: Pillow's own error
              "just_over": header_only_png(10_001, MAX_IMAGE_PIXELS // 10_001 + 1),  # only the size check sees it
              "png": make_image(tmp_path / "a.png").read_bytes(),
              "jpeg": make_image(tmp_path / "b.jpg", fmt="JPEG").read_bytes()}
    expected = {"bomb": "too_large", "just_over": "too_large", "png": "ok", "jpeg": "ok"}
    rounds = 200
    barrier = threading.Barrier(len(inputs))
    results: dict[str, list[str]] = {name: [] for name in inputs}
    settings = {(Image.MAX_IMAGE_PIXELS, len(warnings.filters))}
    done = threading.Event()

    def decode(name: str, data: bytes) -> None:
        for _ in range(rounds):
            barrier.wait()
            try:
                decode_image(data)
                results[name].append("ok")
            except ImageDecodeError as exc:
                results[name].append(exc.code)

    def watch() -> None:
        while not done.is_set():
            settings.add((Image.MAX_IMAGE_PIXELS, len(warnings.filters)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=decode, args=item) for item in inputs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    settings.add((Image.MAX_IMAGE_PIXELS, len(warnings.filters)))
    wrong = {name: sorted({r for r in got if r != expected[name]}) for name, got in results.items()}
    assert all(len(got) == rounds for got in results.values())
    assert not any(wrong.values()), f"wrong results: {wrong}"
    assert len(settings) == 1, f"Pillow's limit / warning filters seen: {sorted(settings, key=str)}"
