"""The one input stage: every command that reads images reads each file once and gives the same rows for
inputs it cannot judge (predict, white-box verification)."""
import json
import pathlib
import shutil
import threading

import numpy as np
import pytest

from conftest import make_image, png_chunk, stub_attributor, tiny_vae, with_png_chunks

from attribution import cli
from attribution.inputs import InputFile
from attribution.provenance import read_provenance


@pytest.fixture
def count_opens(monkeypatch):
    """Counts the times each file is opened through ``pathlib`` (how the input stage and the provenance reader
    read a path), from any thread."""
    counts: dict[str, int] = {}
    lock = threading.Lock()
    real = pathlib.Path.open

    def counting(self, *args, **kwargs):
        with lock:
            key = str(self.resolve())
            counts[key] = counts.get(key, 0) + 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", counting)
    return counts


def test_predict_with_provenance_reads_each_file_once(tmp_path, count_opens, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "a.png", seed=1, size=96)
    parameters = png_chunk(b"tEXt", b"parameters\x00a cat\nSteps: 20, Model: v1-5-pruned-emaonly")
    (folder / "b.png").write_bytes(with_png_chunks(make_image(tmp_path / "b.png", seed=2, size=96).read_bytes(),
                                                   parameters))
    make_image(folder / "c.jpg", seed=3, size=96, fmt="JPEG")
    shutil.copy(folder / "a.png", folder / "copy_of_a.bin")  # the same bytes: read, then copied
    (folder / "notes.txt").write_text("no image")
    files = sorted(folder.iterdir())
    expected = {str(f): read_provenance(f).fields() for f in files}
    count_opens.clear()
    monkeypatch.setattr(cli, "_load", lambda args: stub_attributor(batch_size=2, size=64, n_crops=1))
    assert cli.main(["predict", "--json", "--quiet", str(folder)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(f) for f in files]
    opened = {f: n for f, n in count_opens.items() if f.startswith(str(folder))}
    assert opened == {str(f): 1 for f in files}  # decoding and provenance share one read
    for row in rows:
        assert {k: row.get(k) for k in expected[row["file"]]} == expected[row["file"]]
    assert rows[1]["provenance"]["indication"] == "generated" and rows[4]["skipped"]


@pytest.fixture(scope="module")
def whitebox():
    from attribution.verification import WhiteBoxVerifier

    verifier = WhiteBoxVerifier(tiny_vae(0), steps=1, device="cpu").fit(np.array([[0.01, 1.0]] * 2))
    verifier.min_size = 64  # as predict's default
    return verifier


def test_whitebox_verification_refuses_inputs_as_predict_does(whitebox, tmp_path):
    folder = tmp_path / "walked"
    folder.mkdir()
    (folder / "notes.txt").write_text("found by walking: skipped")
    good = make_image(tmp_path / "good.png", seed=1, size=64)
    shutil.copy(good, tmp_path / "again.png")
    (tmp_path / "named.txt").write_text("named: an error")
    inputs = [make_image(tmp_path / "small.png", seed=2, size=48), tmp_path / "named.txt",
              InputFile(folder / "notes.txt", walked=True), tmp_path / "missing.png", tmp_path / "empty.png", good,
              tmp_path / "again.png"]
    (tmp_path / "empty.png").write_bytes(b"")
    predicted = [o.to_json() for o in stub_attributor(size=64, n_crops=1)(inputs)]
    verified = [o.to_json() for o in whitebox.verify(inputs)]
    error_fields = ("file", "error", "error_code", "skipped")
    assert [p.get("error_code") for p in predicted] == ["too_small", "not_an_image", "not_an_image", "not_found",
                                                        "empty_file", None, None]
    for p, v in zip(predicted[:5], verified[:5]):
        assert {k: v.get(k) for k in error_fields} == {k: p.get(k) for k in error_fields}
    assert predicted[2]["skipped"] and "skipped" not in predicted[1]
    # a repeated file: read, then its first's row (one decode, one inversion)
    assert {**verified[6], "file": None} == {**verified[5], "file": None} and verified[5]["score"] is not None
    assert {**predicted[6], "file": None} == {**predicted[5], "file": None}


def test_verifier_reads_a_repeat_once(whitebox, tmp_path):
    good = make_image(tmp_path / "good.png", seed=1, size=64)
    shutil.copy(good, tmp_path / "again.png")
    seen = []
    encode = whitebox.encode
    whitebox.encode = lambda prepared: seen.append(len(prepared)) or encode(prepared)
    try:
        whitebox.verify([good, tmp_path / "again.png", good])
    finally:
        del whitebox.encode
    assert seen == [1]


def test_enroll_reads_each_image_once(tmp_path, count_opens):
    """Enrollment takes features, hashes and the exemplar thumbnails from one pass of the input stage."""
    images = [make_image(tmp_path / f"e{i}.png", seed=40 + i, size=96) for i in range(4)]
    att = stub_attributor(batch_size=2, size=64, n_crops=1)
    count_opens.clear()
    out = att.enroll("mine", images)
    opened = {f: n for f, n in count_opens.items() if f.startswith(str(tmp_path))}
    assert out.n_images == 4 and opened == {str(p): 1 for p in images}
    assert len(att.head_folder.thumbnails) == 4 and all(t[:2] == b"\xff\xd8" for t in att.head_folder.thumbnails.values())
