"""``python -m attribution batch`` (Ray Data): rows match ``predict --json``, and runs resume.

One local Ray cluster (1 CPU model worker) serves the whole module; a tiny head on
EfficientNet-Lite0 at 64 px keeps the model cheap on a shared 2-core CPU.
"""
import contextlib
import io
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from conftest import make_image

from attribution import cli
from attribution.batch import META_NAME, init_ray, iter_rows, list_inputs, read_done, require_ray, run_batch

N_IMAGES = 30
TOL = 1e-5


def ray_or_skip():
    try:
        return require_ray()
    except ImportError as exc:
        pytest.skip(f"Ray Data is not installed ({exc})")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = ray_or_skip()
    assert init_ray("local", num_cpus=2, object_store_memory=300 * 2**20)  # 1 model worker + decoding
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A small head (3 classes of synthetic images) fitted through the CLI's ``train``."""
    data = tmp_path_factory.mktemp("train")
    for c, label in enumerate(("real", "gen_a", "gen_b")):
        (data / label).mkdir()
        for i in range(8):
            make_image(data / label / f"{i}.png", seed=100 * c + i, size=80 + 8 * c)
    out = tmp_path_factory.mktemp("heads") / "tiny-head"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["train", "--data", str(data), "--out", str(out), "--backbone", "efficientnet_lite0:imagenet",
                         "--crops", "1", "--size", "64", "--n-components", "8", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch-inputs")
    (folder / "nested" / "deeper").mkdir(parents=True)
    for i in range(N_IMAGES):
        sub = ("", "nested", "nested/deeper")[i % 3]
        fmt, ext = (("JPEG", "jpg") if i % 4 == 0 else ("PNG", "png"))
        size = 48 if i % 7 == 0 else 80 if i == 1 else 96  # img01 has the pixels of the head's real/1.png
        make_image(folder / sub / f"img{i:02d}.{ext}", seed=i, size=size, fmt=fmt)
    good = (folder / "img03.png").read_bytes()
    (folder / "corrupt.png").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not an image: a skipped row when a folder is given")
    return folder


N_TOO_SMALL = len(range(0, N_IMAGES, 7))  # the 48 px images, below the 64 px minimum
N_ROWS = N_IMAGES + 2  # and the corrupt file and the text file


def batch_cli(*argv):
    """Run ``batch`` through the CLI's parser, in this process (the module's Ray cluster is reused)."""
    args = cli.build_parser().parse_args(["batch", *argv])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = args.func(args)
    return code, json.loads(stdout.getvalue().splitlines()[-1])


@pytest.fixture(scope="module")
def first_run(ray_cluster, head, images, tmp_path_factory):
    """The batch CLI run once on ``images``; tests that change the output work on a copy."""
    out = tmp_path_factory.mktemp("batch-out") / "results.parquet"
    code, summary = batch_cli("--zoo", str(head), "--input", str(images), "--output", str(out),
                              "--workers", "1", "--batch-size", "8", "--quiet", "--no-provenance")
    return out, code, summary


def copy_of(out: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(out, tmp_path / out.name))


def part_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.parquet"))


def test_batch_rows_match_predict_json(first_run, head, images, capsys):
    out, code, summary = first_run
    assert code == 1 and summary["errors"] == 1 + N_TOO_SMALL  # as with predict; the skipped text file is none
    assert summary["listed"] == summary["processed"] == summary["written"] == N_ROWS
    assert (head / "exemplar_hashes.json").is_file()  # train indexed its images: duplicates are looked up
    assert out.is_dir() and (out / META_NAME).is_file() and len(summary["part_files"]) == 1

    capsys.readouterr()
    # batch rows carry no provenance evidence (metadata beside the verdict): compare the attribution only
    assert cli.main(["predict", "--json", "--quiet", "--no-provenance", "--zoo", str(head), str(images)]) == 1
    expected = {row["file"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    got = {row["file"]: row for row in iter_rows(out)}
    assert sorted(got) == sorted(expected) and len(got) == N_ROWS

    corrupt = got[str((images / "corrupt.png").resolve())]
    assert set(corrupt) == {"file", "error", "error_code"} and corrupt == expected[corrupt["file"]]
    assert got[str((images / "notes.txt").resolve())]["skipped"] is True
    duplicates = 0
    for file, want in expected.items():
        row = got[file]
        assert set(row) == set(want), file
        if "error" in want:
            assert row == want
            continue
        assert (row["label"], row["known"], row["threshold"]) == (want["label"], want["known"], want["threshold"])
        assert list(row["scores"]) == list(want["scores"])
        assert all(abs(row["scores"][c] - p) <= TOL for c, p in want["scores"].items()), file
        assert abs(row["unknown_score"] - want["unknown_score"]) <= TOL
        facts = ("width", "height", "format", "frames", "has_alpha", "bit_depth", "grayscale",
                 "exif_orientation_applied", "pixel_sha256", "duplicate_of")
        assert {k: row.get(k) for k in facts} == {k: want.get(k) for k in facts}, file
        duplicates += "duplicate_of" in want
    assert duplicates == 1 and got[str((images / "nested" / "img01.png").resolve())]["duplicate_of"] == {
        "class": "real", "id": "real/1.png", "match": "exact", "distance": 0}
    assert sum(r.get("error_code") == "too_small" for r in got.values()) == N_TOO_SMALL


def test_output_schema_is_stable(first_run):
    import pyarrow.parquet as pq

    out, _, _ = first_run
    table = pq.read_table(out)
    assert table.column_names[:8] == ["file", "label", "known", "scores", "unknown_score", "threshold", "note", "error"]
    assert table.column_names[8:25] == ["error_code", "skipped", "width", "height", "format", "frames", "has_alpha",
                                        "bit_depth", "grayscale", "exif_orientation_applied", "pixel_sha256",
                                        "frames_judged", "duplicate_of", "reason", "synthetic_score",
                                        "synthetic_threshold", "real_threshold"]  # only ever appended
    assert table.column_names[25:] == ["nearest", "class_match", "disagreement", "provenance", "provenance_reason",
                                       "caveat", "distinct_colours"]
    assert str(table.schema.field("scores").type) == "string" and table.num_rows == N_ROWS
    errors = [r for r in table.to_pylist() if r["error"] and r["error_code"] != "too_small"]
    assert [r["file"].rsplit("/", 1)[1] for r in errors] == ["corrupt.png", "notes.txt"]
    assert errors[0]["label"] is None and "truncated" in errors[0]["error"] and errors[0]["error_code"] == "truncated"
    assert errors[1]["skipped"] and errors[1]["error_code"] == "not_an_image" and errors[1]["width"] is None


def test_parts_written_before_the_new_columns_still_read_and_resume(first_run, head, images, tmp_path):
    import pyarrow.parquet as pq

    out = copy_of(first_run[0], tmp_path)
    part = out / part_files(out)[0]
    old_columns = ["file", "label", "known", "scores", "unknown_score", "threshold", "note", "error"]
    table = pq.read_table(part)
    pq.write_table(table.select(old_columns).filter(table.column("error_code").is_null()), part)  # an older run
    rows = list(iter_rows(out))
    assert len(rows) == N_IMAGES - N_TOO_SMALL and all(set(r) <= set(old_columns) for r in rows)
    again = run_batch([str(images)], out, str(head), workers=1, batch_size=8)
    assert again.skipped == N_IMAGES - N_TOO_SMALL and again.processed == 2 + N_TOO_SMALL


def test_resume_skips_done_and_processes_only_new(first_run, head, images, tmp_path):
    out = copy_of(first_run[0], tmp_path)
    parts = part_files(out)

    again = run_batch([str(images)], out, str(head), workers=1, batch_size=8)
    # only the failed files are tried again: the corrupt one and the too small ones; the skipped text file is done
    assert again.skipped == N_IMAGES + 1 - N_TOO_SMALL and again.processed == 1 + N_TOO_SMALL
    assert again.written == 0 and again.part_files == [] and again.errors == 1 + N_TOO_SMALL
    assert part_files(out) == parts  # nothing recomputed, no new part file
    assert run_batch([str(images)], out, str(head), retry_errors=False).processed == 0

    extra = tmp_path / "extra"
    extra.mkdir()
    new = [make_image(extra / f"new{i}.png", seed=500 + i, size=96) for i in range(3)]
    third = run_batch([str(images), str(extra / "*.png")], out, str(head), workers=1, batch_size=8)
    assert third.skipped == N_IMAGES + 1 - N_TOO_SMALL and third.processed == 4 + N_TOO_SMALL and third.written == 3
    assert len(third.part_files) == 1 and part_files(out) == sorted(parts + third.part_files)
    rows = list(iter_rows(out))
    assert len(rows) == N_ROWS + 3
    ok = [r["file"] for r in rows if "error" not in r]
    assert len(ok) == len(set(ok)) == N_IMAGES - N_TOO_SMALL + 3 and {str(p.resolve()) for p in new} <= set(ok)
    done, failed = read_done(out)
    assert len(done) == N_IMAGES - N_TOO_SMALL + 3 + 1  # with the skipped text file
    assert str((images / "corrupt.png").resolve()) in failed and len(failed) == 1 + N_TOO_SMALL


def test_resume_refuses_another_head(first_run, head, images, tmp_path):
    out = copy_of(first_run[0], tmp_path)
    other = tmp_path / "other-head"
    shutil.copytree(head, other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    with pytest.raises(ValueError, match="another --output"):
        run_batch([str(images)], out, str(other))


def test_single_parquet_file_output_becomes_a_dataset_folder(first_run, head, images, tmp_path):
    import pyarrow.parquet as pq

    out = first_run[0]
    single = tmp_path / "single.parquet"
    pq.write_table(pq.read_table(out), single)
    summary = run_batch([str(images)], single, str(head), retry_errors=False)
    assert single.is_dir() and summary.skipped == N_ROWS and summary.processed == 0
    assert len(list(iter_rows(single))) == N_ROWS


def test_list_inputs_folder_glob_and_manifests(images, tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    in_folder = list_inputs([str(images)])
    assert len(in_folder) == N_ROWS and all(Path(f).is_absolute() for f in in_folder)  # every file, by content
    assert list_inputs([str(images / "**" / "*.jpg")]) == sorted(f for f in in_folder if f.endswith(".jpg"))
    monkeypatch.chdir(images)
    paths = ["img00.jpg", "nested/img01.png", "img00.jpg", "s3://bucket/a.png", "file:///tmp/x.png"]
    pq.write_table(pa.table({"path": paths, "other": list(range(5))}), tmp_path / "m.parquet")
    pacsv.write_csv(pa.table({"id": list(range(5)), "path": paths}), tmp_path / "m.csv")
    want = [str(images / "img00.jpg"), str(images / "nested" / "img01.png"), "s3://bucket/a.png", "/tmp/x.png"]
    assert list_inputs([str(tmp_path / "m.parquet")]) == list_inputs([str(tmp_path / "m.csv")]) == want
    pacsv.write_csv(pa.table({"file": ["a.png"]}), tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="'path' column"):
        list_inputs([str(tmp_path / "bad.csv")])


def test_an_unreadable_part_is_set_aside_with_a_warning_the_cli_shows(tmp_path, caplog, capsys):
    pytest.importorskip("pyarrow")
    (tmp_path / "part-broken.parquet").write_bytes(b"not parquet")
    with caplog.at_level("WARNING", logger="attribution.batch"):
        assert read_done(tmp_path) == (set(), {})
    assert "unreadable part file" in caplog.text and (tmp_path / ".part-broken.parquet.unreadable").is_file()
    capsys.readouterr()
    assert cli.main(["zoo", "list"]) == 0  # the CLI shows the library's warnings on stderr
    logging.getLogger("attribution.batch").warning("unreadable part file x")
    assert capsys.readouterr().err == "warning: unreadable part file x\n"


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match="pip install -r requirements-ray.txt"):
        require_ray()


def test_worker_keeps_a_failing_image_on_its_own_row(head, images):
    """The model stage, run in-process: a batch that raises is retried image by image."""
    pa = pytest.importorskip("pyarrow")
    from attribution.batch import BatchAttributor, _decode_batch, _head_files

    files = [str((images / name).resolve()) for name in ("img00.jpg", "img03.png", "corrupt.png", "img06.png")]
    decoded = _decode_batch(pa.table({"file": files, "walked": [False] * len(files)}))
    worker = BatchAttributor(_head_files(str(head))[1], device="cpu", batch_size=8)
    real = worker.attributor

    def flaky(batch, *args, **kwargs):
        if any(im.facts.height == 48 for im in batch):  # img00 is 48 px (i % 7 == 0)
            raise RuntimeError("boom")
        return real(batch, *args, **kwargs)

    worker.attributor = flaky
    rows = worker(decoded).to_pylist()
    assert [r["file"] for r in rows] == files
    assert rows[0]["error"] == "attribution failed: RuntimeError: boom" and rows[0]["label"] is None
    assert rows[2]["error"] and "truncated" in rows[2]["error"]
    assert all(rows[i]["error"] is None and json.loads(rows[i]["scores"]) for i in (1, 3))


def test_output_schema_has_a_column_for_every_json_field():
    """The schema is derived from ``AttributionOutput``: every ``predict --json`` field has its column."""
    pytest.importorskip("pyarrow")
    from dataclasses import fields

    from attribution.batch import output_schema
    from attribution.outputs import AttributionOutput, ImageFacts, columns

    facts = ImageFacts(96, 96, "PNG", 2, False, 8, False, False, "0" * 64)
    judged = AttributionOutput(
        "a.png", label="real", known=True, scores={"real": 0.9, "gen": 0.1}, unknown_score=0.2, threshold=0.7,
        note="small", facts=facts, frames_judged=[{"index": 0, "label": "real", "scores": {"real": 0.9}}],
        duplicate_of={"class": "real", "id": "real/1.png", "match": "exact", "distance": 0}, reason="r",
        synthetic_score=0.1, synthetic_threshold=0.6, real_threshold=0.3,
        nearest=[{"label": "real", "id": "real/1.png", "distance": 0.5}],
        class_match={"class": "gen", "score": 1.5, "threshold": 1.0, "false_match_rate_at_score": 0.01},
        disagreement={"evidence": ["frames"], "detail": "d"}, provenance={"summary": "s"}, provenance_reason="r",
        caveat={"text": "t", "rates": {"heldout_generator_called_real": 0.1}, "measured_on": "m"}, distinct_colours=12)
    failed = AttributionOutput("b.txt", error="not an image", error_code="not_an_image", skipped=True,
                               provenance_reason="no bytes")
    shown = set(judged.to_json()) | set(failed.to_json())
    assert {f.name for f in fields(AttributionOutput)} - {"facts"} <= shown  # the example sets every field
    names = output_schema().names
    assert shown <= set(names) and names == [name for name, _ in columns(AttributionOutput)]


def test_batch_rows_carry_provenance_as_predict_does(head, images, tmp_path, capsys):
    """The decode task reads each file's provenance from the bytes it decodes; the rows equal ``predict --json``."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from attribution.batch import BatchAttributor, _decode_batch, _head_files
    from attribution.provenance import ProvenanceReader

    files = [str((images / name).resolve()) for name in ("img00.jpg", "img03.png", "corrupt.png", "notes.txt")]
    decoded = _decode_batch(pa.table({"file": files, "walked": [False] * len(files)}), provenance=ProvenanceReader())
    pq.write_table(BatchAttributor(_head_files(str(head))[1], device="cpu", batch_size=8)(decoded),
                   tmp_path / "part.parquet")
    got = list(iter_rows(tmp_path / "part.parquet"))
    capsys.readouterr()
    assert cli.main(["predict", "--json", "--quiet", "--zoo", str(head), *files]) == 1
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in got] == files and all("provenance" in r for r in got)
    for row, want in zip(got, expected):
        assert set(row) == set(want) and row["provenance"] == want["provenance"], row["file"]
        if "error" in want:
            assert row == want
