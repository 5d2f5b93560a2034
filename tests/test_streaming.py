"""Streaming predict: bounded memory, input order, lines flushed batch by batch, repeats computed once.

A stub backbone (real decoding and crops, a trivial network) keeps these cheap on a shared CPU.
"""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, make_image, stub_attributor

import attribution.reading as reading
from attribution import cli


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts decode_image calls made by the extractor (from any thread)."""
    calls = {"n": 0}
    lock = threading.Lock()
    real = reading.decode_image

    def counting(*args, **kwargs):
        with lock:
            calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(reading, "decode_image", counting)
    return calls


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    for i in range(24):
        make_image(d / f"img{i:02d}.png", seed=i, size=96)
    return d


def test_images_in_flight_are_bounded_and_order_is_kept(folder, count_decodes):
    attributor = stub_attributor(batch_size=4, size=64, n_crops=1)
    extractor = attributor.extractor
    window = extractor.prefetch * extractor.batch_size
    files = sorted(folder.iterdir())
    inputs = [*files[:10], folder / "missing.png", *files[10:]]
    yielded, in_flight = 0, []
    for results in extractor.stream(inputs):
        assert [r.position for r in results] == list(range(yielded, yielded + len(results)))
        yielded += len(results)
        in_flight.append(count_decodes["n"] - yielded)
    assert yielded == len(inputs) and count_decodes["n"] == len(files)
    assert max(in_flight) <= window + extractor.batch_size  # decoded but not yet handed out
    assert in_flight[0] < len(files) - window  # the first batch came out long before the last decode

    outputs = attributor(inputs)
    assert [o.file for o in outputs] == [str(p.resolve()) for p in inputs]
    assert outputs[10].error_code == "not_found" and all(o.label for i, o in enumerate(outputs) if i != 10)


def test_cli_writes_each_batch_as_it_is_done(folder, count_decodes, monkeypatch):
    attributor = stub_attributor(batch_size=4, size=64, n_crops=1)
    monkeypatch.setattr(cli, "_load", lambda args: attributor)
    flushes = []

    class Recorder:
        def __init__(self):
            self.lines = []

        def write(self, text):
            self.lines += [line for line in text.splitlines() if line]

        def flush(self):
            flushes.append((len(self.lines), count_decodes["n"]))

    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["predict", "--json", "--quiet", str(folder)]) == 0
    rows = [json.loads(line) for line in out.lines]
    assert [r["file"] for r in rows] == [str(p.resolve()) for p in sorted(folder.iterdir())]
    first_line_decodes = next(d for n, d in flushes if n >= 1)
    assert first_line_decodes < len(rows)  # written and flushed before the folder was read to the end
    assert all(r["width"] == 96 and r["format"] == "PNG" for r in rows)


def test_a_repeated_file_is_read_decoded_and_judged_once(folder, tmp_path, count_decodes):
    attributor = stub_attributor(batch_size=4, size=64, n_crops=1)
    copy = tmp_path / "copy.bin"
    shutil.copy(folder / "img03.png", copy)
    files = sorted(folder.iterdir())[:6]
    inputs = [files[3], *files, files[3], copy]
    outputs = attributor(inputs)
    assert count_decodes["n"] == len(files)  # img03 three more times, decoded once
    same = [o.to_json() for o in (outputs[0], outputs[4], outputs[7], outputs[8])]
    assert len({json.dumps({k: v for k, v in o.items() if k != "file"}, sort_keys=True) for o in same}) == 1
    assert outputs[8].file == str(copy.resolve()) and outputs[8].label


RSS_SCRIPT = """
import resource, sys
sys.path.insert(0, {tests!r})
from conftest import stub_attributor
from pathlib import Path
files = sorted(Path(sys.argv[1]).iterdir())[: int(sys.argv[2])]
attributor = stub_attributor(batch_size=8)
n = sum(1 for o in attributor.stream(files) if o.label)
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """300 vs 60 JPEGs of 512 px (5 crops of 256 px each, 3.9 MB of views per image): holding every
    image's views, as a decode-everything-first pipeline does, would add about 1 GB."""
    rng = np.random.default_rng(0)
    for i in range(300):
        base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(base).resize((512, 512), Image.Resampling.BILINEAR).save(tmp_path / f"{i:03d}.jpg", quality=90)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    peaks = {}
    for n in (60, 300):
        proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT.format(tests=str(REPO / "tests")), str(tmp_path), str(n)],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        judged, peaks[n] = map(int, proc.stdout.split())
        assert judged == n
    assert peaks[300] - peaks[60] < 100, peaks  # MiB
