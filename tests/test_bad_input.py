"""Odd but valid images are attributed; invalid ones get a clear per-file error and the batch goes on."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from attribution import Attributor
from attribution.constants import UNCERTAIN
from attribution.transform import ImageDecodeError, load_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size (a decompression bomb) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def textured(h=96, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("odd")
    rgb = Image.fromarray(textured())
    good = {}
    rgb.convert("CMYK").save(d / "cmyk.jpg"); good["cmyk"] = d / "cmyk.jpg"
    rgba = rgb.convert("RGBA"); rgba.putalpha(128); rgba.save(d / "rgba.png"); good["rgba"] = d / "rgba.png"
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png"); good["palette"] = d / "palette.png"
    rgb.convert("L").save(d / "gray.png"); good["gray"] = d / "gray.png"
    Image.fromarray((textured()[..., 0].astype(np.uint16) * 257)).save(d / "16bit.png"); good["16bit"] = d / "16bit.png"
    rgb.save(d / "img.webp", format="WEBP"); good["webp"] = d / "img.webp"
    frames = [Image.fromarray(textured(seed=s)).convert("P") for s in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50); good["gif"] = d / "anim.gif"
    exif = Image.Exif(); exif[0x0112] = 6  # rotate 90 on display
    rgb.save(d / "rotated.jpg", exif=exif); good["exif"] = d / "rotated.jpg"
    Image.fromarray(textured(80, 120)).save(d / "small.png"); good["small"] = d / "small.png"
    Image.fromarray(textured(3000, 4500)).save(d / "large.jpg", quality=90); good["large"] = d / "large.jpg"
    bad = {}
    (d / "empty.png").write_bytes(b""); bad["empty"] = (d / "empty.png", "empty file", "empty_file")
    full = (d / "gray.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    bad["truncated"] = (d / "truncated.png", "truncated", "truncated")
    (d / "text.jpg").write_text("definitely not a JPEG")
    bad["text"] = (d / "text.jpg", "not a recognised image", "not_an_image")
    (d / "bomb.png").write_bytes(png_header_only(40000, 40000)); bad["bomb"] = (d / "bomb.png", "too large", "too_large")
    (d / "doc.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n")
    bad["pdf"] = (d / "doc.pdf", "not a recognised image", "not_an_image")
    bad["missing"] = (d / "missing.png", "no such file", "not_found")
    Image.fromarray(textured(8, 8)).save(d / "tiny.png"); bad["tiny"] = (d / "tiny.png", "too small", "too_small")
    return good, bad


def test_exif_rotation_and_first_frame(files):
    good, _ = files
    assert load_image(good["exif"]).size == (96, 128)  # rotated 90 degrees
    assert load_image(good["gif"]).size == (128, 96)
    assert load_image(good["16bit"]).mode == "RGB"


def test_bomb_is_refused_before_decoding(files):
    _, bad = files
    with pytest.raises(ImageDecodeError, match="too large"):
        load_image(bad["bomb"][0])


def test_batch_with_every_case(files):
    good, bad = files
    attributor = Attributor.from_pretrained()
    inputs = [*good.values(), *(p for p, _, _ in bad.values())]
    outputs = attributor(inputs)
    assert len(outputs) == len(inputs)
    for name, out in zip(good, outputs):
        assert out.error is None, (name, out.error)
        assert out.label in [*attributor.classes, "unknown", UNCERTAIN] and abs(sum(out.scores.values()) - 1) < 1e-3
    assert "upscaled" in outputs[list(good).index("small")].note
    for (name, (_, message, code)), out in zip(bad.items(), outputs[len(good):]):
        assert out.error and message in out.error and out.error_code == code, (name, out.error, out.error_code)
        assert out.to_json() == {"file": out.file, "error": out.error, "error_code": code}  # explicit files: no skip

    facts = {name: out.to_json() for name, out in zip(good, outputs)}
    assert facts["exif"]["exif_orientation_applied"] and (facts["exif"]["width"], facts["exif"]["height"]) == (96, 128)
    assert facts["rgba"]["has_alpha"] and facts["palette"]["frames"] == 1 and not facts["cmyk"]["has_alpha"]
    assert facts["gray"]["grayscale"] and facts["16bit"]["grayscale"] and not facts["webp"]["grayscale"]
    assert facts["16bit"]["bit_depth"] == 16 and facts["gray"]["bit_depth"] == 8
    assert facts["gif"]["frames"] == 3 and [f["index"] for f in facts["gif"]["frames_judged"]] == [0, 1, 2]
    assert facts["webp"]["format"] == "WEBP" and facts["large"]["format"] == "JPEG" and facts["large"]["frames"] == 1
    assert all(len(f["pixel_sha256"]) == 64 and "frames_judged" not in f for n, f in facts.items() if n != "gif")
