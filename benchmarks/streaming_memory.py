"""Memory and throughput of streaming ``predict --json`` over folders of many JPEGs.

    python benchmarks/streaming_memory.py                       # 2,000 and 10,000 images (~3 GB on disk at 10k)
    python benchmarks/streaming_memory.py --sizes 300 1200      # a quick run

For each size, ``n`` distinct JPEGs are generated in a scratch folder (short side 256-2048 px, 80 %
under 1024; several aspect ratios; smooth fields plus grain, so files have photo-like sizes), then
``python -m attribution predict --json --quiet FOLDER`` runs as a child process and reports:

- peak RSS of that process (``os.wait4``), against a target of 3 GiB whatever ``n``;
- time to first line (from process start, model load included), beside the time a run on one image
  takes to its line (the cold start: what the first line cannot beat);
- steady images/s (lines after the first / time from the first line to the last) against the sum of
  the stages measured separately in this process on a sample of the same images: decode + transform
  (one thread) and the forward (the extractor's calls of up to 32 crops, torch's threads). Target: >= 0.85 of
  ``1 / (decode + transform + forward)``, i.e. the pipeline adds at most 15 %.

The scratch folder is removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)


def generate(folder: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` distinct JPEGs (quality 90) to ``folder``; returns the bytes written."""
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        short = int(rng.uniform(256, 1024)) if rng.random() < 0.8 else int(rng.uniform(1024, 2048))
        long = int(short * ASPECTS[i % len(ASPECTS)])
        w, h = (long, short) if rng.random() < 0.5 else (short, long)
        field = rng.integers(0, 255, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
        image = Image.fromarray(field).resize((w, h), Image.Resampling.BICUBIC)
        grain = rng.integers(-6, 7, (h, w, 1), dtype=np.int16)
        pixels = np.clip(np.asarray(image, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        total += path.stat().st_size
    return total


def stage_costs(files: list[Path], zoo: str | None) -> dict[str, float]:
    """Seconds per image of each stage, measured alone: decode + transform (one thread), and the forward
    in calls of up to ``MAX_VIEWS`` crops, as the extractor makes them."""
    import torch

    from attribution import Attributor
    from attribution.features import MAX_VIEWS
    from attribution.transform import decode_image

    backbone = Attributor.from_pretrained(zoo).backbone
    start = time.perf_counter()
    views = [backbone.transform(decode_image(f).frames[0]) for f in files]
    decode = (time.perf_counter() - start) / len(files)
    backbone.encode(views[0], n_views=len(views[0]))  # warm-up
    calls: list[list[torch.Tensor]] = [[]]
    for v in views:
        if sum(map(len, calls[-1])) + len(v) > MAX_VIEWS:
            calls.append([])
        calls[-1].append(v)
    start = time.perf_counter()
    for call in calls:
        backbone.encode(torch.cat(call), n_views=[len(v) for v in call])
    forward = (time.perf_counter() - start) / len(files)
    return {"decode_transform_s": decode, "forward_s": forward}


def run_predict(folder: Path, n: int, zoo: str | None, batch_size: int) -> dict[str, float]:
    """Run the CLI on ``folder`` (or one file) expecting ``n`` lines; time every line; peak RSS of the child
    from ``os.wait4``."""
    cmd = [sys.executable, "-m", "attribution", "predict", "--json", "--quiet", "--batch-size", str(batch_size)]
    cmd += ["--zoo", zoo] if zoo else []
    start = time.perf_counter()
    proc = subprocess.Popen([*cmd, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    times, errors = [], 0
    for line in proc.stdout:
        times.append(time.perf_counter() - start)
        errors += "error" in json.loads(line)
    _, status, usage = os.wait4(proc.pid, 0)
    if len(times) != n or os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"predict wrote {len(times)} lines for {n} images (exit {status}, {errors} errors)")
    steady = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else float("nan")
    return {"peak_rss_gib": usage.ru_maxrss / 2**20, "first_line_s": times[0], "total_s": times[-1],
            "steady_img_s": steady}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--zoo", default=None, help="head (default: the shipped head)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sample", type=int, default=48, help="images whose stages are timed alone")
    parser.add_argument("--scratch", type=Path, default=None, help="where to generate (default: a temp folder)")
    args = parser.parse_args()

    rows = []
    for n in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"stream-bench-{n}-", dir=args.scratch))
        try:
            start = time.perf_counter()
            size = generate(folder, n)
            print(f"{n} JPEGs, {size / 2**30:.2f} GiB, generated in {time.perf_counter() - start:.0f} s", flush=True)
            cold = run_predict(sorted(folder.iterdir())[0], 1, args.zoo, args.batch_size)["first_line_s"]
            stages = stage_costs(sorted(folder.iterdir())[: args.sample], args.zoo)
            run = run_predict(folder, n, args.zoo, args.batch_size)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        bound = 1 / (stages["decode_transform_s"] + stages["forward_s"])
        rows.append((n, size, cold, stages, run, bound))
        print(json.dumps({"n": n, "cold_start_one_image_s": cold, **stages, **run, "stage_bound_img_s": bound}),
              flush=True)

    print()
    print("| images | on disk | peak RSS (target < 3 GiB) | first line (cold start of 1 image) | steady img/s "
          "| stages alone: decode + transform / forward (s/img) | bound img/s | ratio (target >= 0.85) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, size, cold, stages, run, bound in rows:
        print(f"| {n:,} | {size / 2**30:.2f} GiB | {run['peak_rss_gib']:.2f} GiB | {run['first_line_s']:.1f} s "
              f"({cold:.1f} s) | {run['steady_img_s']:.2f} | {stages['decode_transform_s']:.3f} / "
              f"{stages['forward_s']:.3f} | {bound:.2f} | {run['steady_img_s'] / bound:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
