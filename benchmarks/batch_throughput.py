"""Throughput of ``python -m attribution batch`` (Ray Data) with 1 vs 2 CPU model workers.

    python benchmarks/batch_throughput.py --n 64                    # dev images if present, else synthetic
    (keep n >= 64: the steady-state rate is a difference of two timings and is noise for small n)
    python benchmarks/batch_throughput.py --n 256 --workers 1 2 4 --zoo /path/to/head

Measures, on one local Ray cluster started once:

- per worker count, a job on ``n`` images (wall clock, start-up included) and a job on as many
  images as workers (the fixed cost: actor start, model load, pipeline set-up); the difference
  gives the steady-state rate ``(n - w) / (t_n - t_w)``;
- the per-image cost in this process with one torch thread (what one CPU worker pays per image:
  decode, preprocessing, backbone and head), the decode share (Ray decode tasks: decoding, input facts
  and the pixel hash), the perceptual hashing and cropping share (done in the model worker, on its CPU
  threads even when the model is on a GPU),
  and the backbone's GFLOPs per image (torch's FLOP counter): the basis of the GPU estimate in
  ``docs/scale-out.md``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution import zoo  # noqa: E402
from attribution.batch import init_ray, list_inputs, require_ray, run_batch  # noqa: E402
from attribution.constants import IMAGE_EXTENSIONS  # noqa: E402

DEV_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev"


def pick_images(n: int, data: Path, scratch: Path) -> tuple[list[str], str]:
    """``n`` images, round-robin over the class folders of ``data``; synthetic 512 px PNGs if it is missing."""
    if data.is_dir():
        per_class = [sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
                     for d in sorted(data.iterdir()) if d.is_dir()]
        files, i = [], 0
        while len(files) < n and any(i < len(g) for g in per_class):
            files += [g[i] for g in per_class if i < len(g)]
            i += 1
        if len(files) >= n:
            return [str(f) for f in files[:n]], f"{data} (round-robin over classes)"
    import numpy as np
    from PIL import Image

    folder = scratch / "synthetic"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(small).resize((512, 512), Image.Resampling.BICUBIC).save(folder / f"{i:05d}.png")
    return list_inputs([str(folder)]), "synthetic 512x512 PNG"


def in_process_cost(files: list[str], head: str, batch_size: int) -> dict[str, float]:
    """Seconds per image with one torch thread: decode only, and the whole attribution."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attribution import Attributor, load_image
    from attribution.duplicates import perceptual_hash
    from attribution.transform import decode_image

    torch.set_num_threads(1)
    start = time.perf_counter()
    decoded = [decode_image(f).frames[0] for f in files]
    decode = (time.perf_counter() - start) / len(files)
    attributor = Attributor.from_pretrained(head, device="cpu", batch_size=batch_size)
    start = time.perf_counter()
    for image in decoded:  # the CPU work a model worker does per image before the backbone
        perceptual_hash(image)
        attributor.backbone.transform(image)
    prep = (time.perf_counter() - start) / len(files)
    del decoded
    attributor(files[:2])  # warm-up
    attributor.extractor.cache._memory.clear()
    start = time.perf_counter()
    attributor(files)
    total = (time.perf_counter() - start) / len(files)
    backbone = attributor.backbone
    views = backbone.transform(load_image(files[0]))
    with FlopCounterMode(display=False) as counter:
        backbone.encode(views, n_views=len(views))
    return {"decode_s": decode, "prep_s": prep, "total_s": total, "gflops": counter.get_total_flops() / 1e9,
            "n_views": len(views), "size": backbone.preprocess_cfg.size, "backbone": backbone.id}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images per timed job")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--zoo", default=None, help="head (default: the shipped head)")
    parser.add_argument("--data", type=Path, default=DEV_DATA)
    args = parser.parse_args()

    ray = require_ray()
    head = str(zoo.resolve(args.zoo))
    scratch = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    try:
        files, source = pick_images(args.n, args.data, scratch)
        print(f"images: {len(files)} from {source}; head: {head}; cores: {os.cpu_count()}", flush=True)
        cost = in_process_cost(files, head, args.batch_size)
        print(f"backbone {cost['backbone']}, {cost['n_views']} view(s) of {cost['size']} px: "
              f"{cost['gflops']:.2f} GFLOPs/image", flush=True)

        init_ray("local", num_cpus=max(os.cpu_count() or 1, max(args.workers) + 1))
        rows = []
        for w in args.workers:
            timings = {}
            for n in (w, len(files)):
                out = scratch / f"out-w{w}-n{n}.parquet"
                result = run_batch(files[:n], out, head, workers=w, batch_size=args.batch_size)
                assert result.processed == n, result
                timings[n] = result.seconds
            t_small, t_all = timings[w], timings[len(files)]
            steady = (len(files) - w) / (t_all - t_small) if t_all > t_small else float("nan")
            rows.append((w, t_all, len(files) / t_all, t_small, steady))
        ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(f"{'workers':>7}  {'wall s':>7}  {'img/s (wall)':>12}  {'fixed s':>7}  {'img/s (steady)':>14}  "
          f"{'img/s per worker':>16}")
    for w, t_all, wall, t_small, steady in rows:
        print(f"{w:>7}  {t_all:>7.1f}  {wall:>12.2f}  {t_small:>7.1f}  {steady:>14.2f}  {steady / w:>16.2f}")
    print()
    print(f"in-process, 1 torch thread: {cost['total_s'] * 1000:.0f} ms/image "
          f"({1 / cost['total_s']:.2f} img/s per core), of which decode {cost['decode_s'] * 1000:.1f} ms "
          f"({1 / cost['decode_s']:.0f} img/s per core), hashing + crops in the worker {cost['prep_s'] * 1000:.1f} ms "
          f"({1 / cost['prep_s']:.0f} img/s per core); backbone {cost['gflops']:.2f} GFLOPs/image "
          f"= {cost['gflops'] / cost['total_s']:.1f} GFLOP/s achieved per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
