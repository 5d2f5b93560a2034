"""Speed of the CLI, enrollment and start-up against a raw batched forward of the same backbone.

    python benchmarks/speed.py [--n 48] [--data ../shared/data/dev] [--compare-zoo OLD_HEAD_FOLDER]

Prints one table measured in one run on the same images:
- CLI ``predict`` marginal cost per image (decode + preprocess + forward + head) / raw forward per image
  (target <= 1.5);
- enrollment of 10 new images vs their raw forwards + 0.5 s (target <= 1.2x);
- cold start of the CLI (one image, process start to exit) and its peak memory;
- app upload-to-verdict latency vs one raw forward (target <= 1.25), and 20 concurrent requests
  (via benchmarks/app_latency.py).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from attribution import Attributor  # noqa: E402
from attribution.constants import IMAGE_EXTENSIONS  # noqa: E402
from attribution.inputs import walk_files  # noqa: E402
from attribution.transform import load_image  # noqa: E402


def pick_images(data: Path, n: int) -> list[Path]:
    files = [f for f in walk_files(data) if f.suffix.lower() in IMAGE_EXTENSIONS] if data.is_dir() else []
    if len(files) < n:
        from PIL import Image

        out = Path(tempfile.mkdtemp(prefix="speed-"))
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(out / f"{i}.png")
        return sorted(out.glob("*.png"))
    rng = np.random.default_rng(0)
    return [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]


def raw_forward_per_image(attributor: Attributor, files: list[Path], batch_size: int = 16) -> float:
    """Seconds per image of the backbone alone on already decoded, preprocessed batches."""
    backbone = attributor.backbone
    views = [backbone.transform(load_image(f)) for f in files]
    import torch

    def encode(batch: list) -> None:
        backbone.encode(torch.cat(batch), n_views=[len(v) for v in batch])

    encode(views[:2])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(views), batch_size):
        encode(views[i:i + batch_size])
    return (time.perf_counter() - start) / len(views)


def cli_seconds(files: list[Path]) -> tuple[float, float]:
    """Wall time of ``predict --json`` on ``files`` in a fresh process, and its peak RSS in MiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "attribution", "predict", "--json", "--quiet", *map(str, files)],
                   cwd=REPO, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dev"))
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--compare-zoo", default=None,
                        help="another head (e.g. an earlier default): its raw forward on the same images, and the ratio")
    args = parser.parse_args(argv)
    files = pick_images(Path(args.data), args.n + 10)
    batch_files, enroll_files = files[: args.n], files[args.n:]

    start = time.perf_counter()
    attributor = Attributor.from_pretrained()
    load_s = time.perf_counter() - start
    raw = raw_forward_per_image(attributor, batch_files)

    compare = []
    if args.compare_zoo:
        other = Attributor.from_pretrained(args.compare_zoo)
        other_raw = raw_forward_per_image(other, batch_files)
        raw = (raw + raw_forward_per_image(attributor, batch_files)) / 2  # measured before and after the other
        compare = [(f"raw batched forward of {other.backbone.id}, s/image", other_raw,
                    f"this head costs {raw / other_raw:.2f}x (target <= 1.5)")]
    one_s, peak_one = cli_seconds(batch_files[:1])
    many_s, peak_many = cli_seconds(batch_files)
    marginal = (many_s - one_s) / (len(batch_files) - 1)

    enroll_raw = raw_forward_per_image(attributor, enroll_files) * len(enroll_files)
    start = time.perf_counter()
    attributor.enroll("speed_test_generator", enroll_files)
    enroll_s = time.perf_counter() - start

    rows = [("raw batched forward, s/image", raw, ""), *compare,
            ("CLI predict marginal, s/image", marginal, f"ratio {marginal / raw:.2f} (target <= 1.5)"),
            (f"enroll {len(enroll_files)} images, s", enroll_s,
             f"ratio {enroll_s / (enroll_raw + 0.5):.2f} of forwards + 0.5 s (target <= 1.2)"),
            ("CLI cold start, 1 image, s", one_s, f"peak RSS {peak_one:.0f} MiB"),
            (f"CLI {len(batch_files)} images, s", many_s, f"peak RSS {peak_many:.0f} MiB"),
            ("library load (backbone + head), s", load_s, "")]
    try:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from app_latency import burst, measure  # type: ignore

        app = measure(batch_files[0])
        load = burst(batch_files[0], n=20)
        rows += [("app upload-to-verdict, s", app["latency"], f"ratio {app['latency'] / app['raw']:.2f} (target <= 1.25)"),
                 ("app cold start, s", app.get("cold_start", float("nan")), ""),
                 ("app, 20 concurrent /attribute, s", load["seconds"],
                  f"{load['answered']:.0f} answered, {load['failed']:.0f} failed")]
    except ImportError as exc:
        rows.append(("app latency", float("nan"), f"skipped: {exc}"))
    print(f"\nbackbone {attributor.backbone.id}, up to {attributor.backbone.transform.n_views} views (distinct crops) of "
          f"{attributor.backbone.preprocess_cfg.size} px per image, {os.cpu_count()} CPU cores\n")
    print("| measurement | value | note |\n|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value:.3f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
