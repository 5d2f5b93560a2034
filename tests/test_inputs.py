"""Every path gets a row: folders walked by content, stable error codes, HEIC / AVIF, tiny and animated inputs."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import make_image

from attribution import Attributor
from attribution.constants import UNCERTAIN, UNKNOWN
from attribution.inputs import InputFile, find_inputs, walk_files
from attribution.transform import ERROR_CODES, ImageDecodeError, decode_image


def photo(h=120, w=160, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def attributor():
    return Attributor.from_pretrained()


def test_walk_by_content_skips_dotfiles_and_follows_links_once(tmp_path):
    make_image(tmp_path / "a.png")
    (tmp_path / "b.weird").write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "notes.txt").write_text("text")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / ".git").mkdir()
    make_image(tmp_path / ".git" / "hidden.png")
    (tmp_path / "sub").mkdir()
    make_image(tmp_path / "sub" / "c.jpg", fmt="JPEG")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # a loop back to the top
    os.symlink(tmp_path / "sub", tmp_path / "again")  # a second way into sub/
    os.symlink(tmp_path / "a.png", tmp_path / "also_a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    make_image(outside / "d.png")
    os.symlink(outside, tmp_path / "linked")
    found = [p.relative_to(tmp_path).as_posix() for p in walk_files(tmp_path)]
    # sub/ and a.png once, under their real paths; the linked folder is followed; the dangling link gets a row
    assert found == ["a.png", "b.weird", "dangling.png", "linked/d.png", "notes.txt", "sub/c.jpg"]
    inputs = find_inputs([tmp_path, tmp_path / "a.png"])
    assert all(f.walked for f in inputs[:-1]) and inputs[-1] == InputFile(tmp_path / "a.png", walked=False)


@pytest.mark.parametrize("data,code", [
    (b"", "empty_file"),
    (b"hello, not an image", "not_an_image"),
    (b"%PDF-1.4\n", "not_an_image"),
    (b"\x89PNG\r\n\x1a\n", "truncated"),
    (b"\xff\x0a" + b"\0" * 40, "unsupported_format"),  # JPEG XL
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"),
])
def test_error_codes_of_bytes(data, code):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert info.value.code == code and code in ERROR_CODES


def test_error_codes_of_paths(tmp_path):
    for path, code in ((tmp_path / "missing.png", "not_found"), (tmp_path, "unreadable")):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(path)
        assert info.value.code == code


@pytest.mark.parametrize("fmt,ext", [("HEIF", "heic"), ("AVIF", "avif")])
def test_heic_and_avif_round_trip(tmp_path, fmt, ext):
    image = photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    path = tmp_path / f"photo.{ext}"
    image.save(path, format=fmt, quality=95, exif=exif.tobytes())
    decoded = decode_image(path)
    facts = decoded.facts
    assert (facts.format, facts.width, facts.height, facts.frames) == (fmt, 120, 160, 1)  # rotated once, not twice
    assert facts.exif_orientation_applied and facts.bit_depth == 8 and not facts.has_alpha
    original = np.asarray(image, dtype=np.int16)

    def error(turn):
        return np.abs(np.asarray(decoded.frames[0].transpose(turn), dtype=np.int16) - original).mean()

    right, wrong = error(Image.Transpose.ROTATE_90), error(Image.Transpose.ROTATE_270)
    assert right < 12 and wrong > 3 * right  # lossy (chroma subsampling), but the same picture, turned right


def test_every_file_of_a_folder_gets_a_row(attributor, tmp_path):
    photo(seed=1).save(tmp_path / "iphone.heic", format="HEIF", quality=90)
    photo(seed=2).save(tmp_path / "photo.avif", format="AVIF", quality=90)
    photo(seed=3).save(tmp_path / "png_named.heic", format="PNG")
    photo(seed=4).save(tmp_path / "scan.unknownext", format="JPEG")
    (tmp_path / "notes.txt").write_text("shopping list")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    photo(1, 1).save(tmp_path / "one_px.png")
    photo(16, 16).save(tmp_path / "icon.png")
    rows = {os.path.basename(o.file): o.to_json() for o in attributor(find_inputs([tmp_path]))}
    assert sorted(rows) == ["icon.png", "iphone.heic", "notes.txt", "one_px.png", "photo.avif", "png_named.heic",
                            "scan.unknownext"]
    formats = {name: rows[name].get("format") for name in ("iphone.heic", "photo.avif", "png_named.heic",
                                                           "scan.unknownext")}
    assert formats == {"iphone.heic": "HEIF", "photo.avif": "AVIF", "png_named.heic": "PNG", "scan.unknownext": "JPEG"}
    # decoded and answered: 120 px high is below the small-input floor, so the answer is "cannot tell" and says why
    assert all(rows[name]["label"] == UNCERTAIN and rows[name]["reason"] == "small_input" for name in formats)
    assert rows["notes.txt"] == {"file": rows["notes.txt"]["file"], "error": "not a recognised image format",
                                 "error_code": "not_an_image", "skipped": True}
    for name, size in (("one_px.png", "1x1"), ("icon.png", "16x16")):
        assert rows[name]["error_code"] == "too_small" and size in rows[name]["error"] and "label" not in rows[name]
        assert "skipped" not in rows[name]


def test_min_size_is_a_setting(attributor, tmp_path):
    photo(16, 16).save(tmp_path / "icon.png")
    lenient = Attributor(attributor.backbone, attributor.head, attributor.config, min_size=8)
    out = lenient([tmp_path / "icon.png"])[0]
    assert out.error is None and out.label and "upscaled" in out.note


def test_animated_gif_from_three_sources_gets_no_confident_label(attributor, dev_data, tmp_path):
    sources = [sorted((dev_data / c).iterdir())[3] for c in ("real", "dalle_mini", "vqgan_clip")]
    frames = [decode_image(s).frames[0].crop((0, 0, 256, 256)) for s in sources]
    frames[0].save(tmp_path / "mix.gif", save_all=True, append_images=frames[1:], duration=100)
    out = attributor([tmp_path / "mix.gif"])[0].to_json()
    assert out["frames"] == 3 and [f["index"] for f in out["frames_judged"]] == [0, 1, 2]
    frame_labels = {f["label"] for f in out["frames_judged"]}
    assert out["label"] in (UNCERTAIN, UNKNOWN) and out["known"] is False
    assert (out["label"] == UNCERTAIN) == (len(frame_labels) > 1)
    assert abs(sum(out["scores"].values()) - 1) < 1e-3


def test_frames_are_evenly_spaced(tmp_path):
    frames = [Image.new("RGB", (64, 64), (10 * i, 0, 0)) for i in range(10)]
    frames[0].save(tmp_path / "ten.webp", save_all=True, append_images=frames[1:], lossless=True)
    decoded = decode_image(tmp_path / "ten.webp", max_frames=4)
    assert decoded.frame_indices == [0, 3, 6, 9] and decoded.facts.frames == 10
    assert [f.getpixel((0, 0))[0] for f in decoded.frames] == [0, 30, 60, 90]


def test_enroll_walks_folders_and_reports_error_codes(attributor, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for i in range(3):
        make_image(shots / f"s{i}.png", seed=700 + i, size=256)
    (shots / "readme.md").write_text("# my generator")
    shutil.copy(shots / "s0.png", shots / "s0_copy.dat")
    worker = Attributor(attributor.backbone, attributor.head, attributor.config)
    result = worker.enroll("walked gen", find_inputs([shots, tmp_path / "missing.png"]))
    readme, missing = str((shots / "readme.md").resolve()), str((tmp_path / "missing.png").resolve())
    assert result.n_images == 4 and set(result.errors) == {readme, missing}
    assert result.error_codes == {readme: "not_an_image", missing: "not_found"}
    assert isinstance(result.to_json()["errors"], dict) and result.to_json()["error_codes"] == result.error_codes


def test_app_takes_heic_and_avif_uploads_with_a_png_preview(tmp_path):
    from attribution_app import model as ops
    from attribution_app.render import verdict_markdown
    from attribution_app.settings import UPLOAD_TYPES
    from attribution_app.state import VisitorState
    from attribution_app.tabs.attribute import _preview

    assert {".heic", ".heif", ".avif"} <= set(UPLOAD_TYPES)
    photo(256, 320, seed=5).save(tmp_path / "iphone.heic", format="HEIF", quality=90)
    _, rows = ops.attribute(VisitorState(), [("iphone.heic", str(tmp_path / "iphone.heic"))])
    assert "error" not in rows[0] and rows[0]["format"] == "HEIF" and rows[0]["file"] == "iphone.heic"
    assert _preview(str(tmp_path / "iphone.heic")).size == (320, 256)
    frames = [{"index": 0, "label": "real", "scores": {}}, {"index": 2, "label": "dalle_mini", "scores": {}}]
    row = {"file": "a.gif", "label": UNCERTAIN, "known": False, "scores": {"real": 0.5, "dalle_mini": 0.5},
           "unknown_score": 0.1, "threshold": 0.7, "reason": "frames_disagree", "frames_judged": frames}
    text = verdict_markdown(row, {}).replace("\\", "")  # the page's text, without Markdown escapes
    assert "Uncertain (cannot tell)" in text and "frame 2: dalle_mini" in text
