"""``python -m attribution batch`` (Ray Data): rows match ``predict --json``, and runs resume.

One local Ray cluster (1 CPU model worker) serves the whole module; a tiny head on
EfficientNet-Lite0 at 64 px keeps the model cheap on a shared 2-core CPU.
"""
import argparse
import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import make_image

from attribution import cli
from attribution.batch import (META_NAME, add_batch_parser, init_ray, iter_rows, list_inputs, read_done, require_ray,
                               run_batch)

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
        make_image(folder / sub / f"img{i:02d}.{ext}", seed=i, size=48 if i % 7 == 0 else 96, fmt=fmt)
    good = (folder / "img03.png").read_bytes()
    (folder / "corrupt.png").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not an image: ignored when a folder is given")
    return folder


def batch_cli(*argv):
    """Run ``batch`` through the parser ``add_batch_parser`` builds (as ``cli.build_parser`` will)."""
    parser = argparse.ArgumentParser(prog="python -m attribution")
    add_batch_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["batch", *argv])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = args.func(args)
    return code, json.loads(stdout.getvalue().splitlines()[-1])


@pytest.fixture(scope="module")
def first_run(ray_cluster, head, images, tmp_path_factory):
    """The batch CLI run once on ``images``; tests that change the output work on a copy."""
    out = tmp_path_factory.mktemp("batch-out") / "results.parquet"
    code, summary = batch_cli("--zoo", str(head), "--input", str(images), "--output", str(out),
                              "--workers", "1", "--batch-size", "8", "--quiet")
    return out, code, summary


def copy_of(out: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(out, tmp_path / out.name))


def part_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.parquet"))


def test_batch_rows_match_predict_json(first_run, head, images, capsys):
    out, code, summary = first_run
    assert code == 1 and summary["errors"] == 1  # the corrupt file, as with predict
    assert summary["listed"] == summary["processed"] == summary["written"] == N_IMAGES + 1
    assert out.is_dir() and (out / META_NAME).is_file() and len(summary["part_files"]) == 1

    capsys.readouterr()
    # batch rows carry no provenance evidence (metadata beside the verdict): compare the attribution only
    assert cli.main(["predict", "--json", "--quiet", "--no-provenance", "--zoo", str(head), str(images)]) == 1
    expected = {row["file"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    got = {row["file"]: row for row in iter_rows(out)}
    assert sorted(got) == sorted(expected) and len(got) == N_IMAGES + 1

    corrupt = got[str((images / "corrupt.png").resolve())]
    assert set(corrupt) == {"file", "error"} and corrupt == expected[corrupt["file"]]
    notes = 0
    for file, want in expected.items():
        row = got[file]
        assert set(row) == set(want), file
        if "error" in want:
            continue
        assert (row["label"], row["known"], row["threshold"]) == (want["label"], want["known"], want["threshold"])
        assert list(row["scores"]) == list(want["scores"])
        assert all(abs(row["scores"][c] - p) <= TOL for c, p in want["scores"].items()), file
        assert abs(row["unknown_score"] - want["unknown_score"]) <= TOL
        assert row.get("note") == want.get("note")
        notes += "note" in want
    assert notes > 0  # the 48 px images carry the small-image note in both


def test_output_schema_is_stable(first_run):
    import pyarrow.parquet as pq

    out, _, _ = first_run
    table = pq.read_table(out)
    assert table.column_names == ["file", "label", "known", "scores", "unknown_score", "threshold", "note", "error"]
    assert str(table.schema.field("scores").type) == "string" and table.num_rows == N_IMAGES + 1
    errors = [r for r in table.to_pylist() if r["error"]]
    assert len(errors) == 1 and errors[0]["label"] is None and errors[0]["file"].endswith("corrupt.png")
    assert "truncated" in errors[0]["error"]


def test_resume_skips_done_and_processes_only_new(first_run, head, images, tmp_path):
    out = copy_of(first_run[0], tmp_path)
    parts = part_files(out)

    again = run_batch([str(images)], out, str(head), workers=1, batch_size=8)
    assert again.skipped == N_IMAGES and again.processed == 1  # only the corrupt file is tried again
    assert again.written == 0 and again.part_files == [] and again.errors == 1
    assert part_files(out) == parts  # nothing recomputed, no new part file
    assert run_batch([str(images)], out, str(head), retry_errors=False).processed == 0

    extra = tmp_path / "extra"
    extra.mkdir()
    new = [make_image(extra / f"new{i}.png", seed=500 + i, size=96) for i in range(3)]
    third = run_batch([str(images), str(extra / "*.png")], out, str(head), workers=1, batch_size=8)
    assert third.skipped == N_IMAGES and third.processed == 4 and third.written == 3
    assert len(third.part_files) == 1 and part_files(out) == sorted(parts + third.part_files)
    rows = list(iter_rows(out))
    assert len(rows) == N_IMAGES + 1 + 3
    ok = [r["file"] for r in rows if "error" not in r]
    assert len(ok) == len(set(ok)) == N_IMAGES + 3 and {str(p.resolve()) for p in new} <= set(ok)
    done, failed = read_done(out)
    assert len(done) == N_IMAGES + 3 and list(failed) == [str((images / "corrupt.png").resolve())]


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
    assert single.is_dir() and summary.skipped == N_IMAGES + 1 and summary.processed == 0
    assert len(list(iter_rows(single))) == N_IMAGES + 1


def test_list_inputs_folder_glob_and_manifests(images, tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    in_folder = list_inputs([str(images)])
    assert len(in_folder) == N_IMAGES + 1 and all(Path(f).is_absolute() for f in in_folder)
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


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match="pip install -r requirements-ray.txt"):
        require_ray()


def test_worker_keeps_a_failing_image_on_its_own_row(head, images):
    """The model stage, run in-process: a batch that raises is retried image by image."""
    pa = pytest.importorskip("pyarrow")
    from attribution.batch import BatchAttributor, _decode_batch, _head_files

    files = [str((images / name).resolve()) for name in ("img00.jpg", "img03.png", "corrupt.png", "img06.png")]
    decoded = _decode_batch(pa.table({"file": files}))
    worker = BatchAttributor(_head_files(str(head))[1], device="cpu", batch_size=8)
    real = worker.attributor

    def flaky(batch, *args, **kwargs):
        if any(im.shape[0] == 48 for im in batch):  # img00 is 48 px (i % 7 == 0)
            raise RuntimeError("boom")
        return real(batch, *args, **kwargs)

    worker.attributor = flaky
    rows = worker(decoded).to_pylist()
    assert [r["file"] for r in rows] == files
    assert rows[0]["error"] == "attribution failed: RuntimeError: boom" and rows[0]["label"] is None
    assert rows[2]["error"] and "truncated" in rows[2]["error"]
    assert all(rows[i]["error"] is None and json.loads(rows[i]["scores"]) for i in (1, 3))
