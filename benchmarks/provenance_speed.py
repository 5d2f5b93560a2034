"""Per-image cost of reading provenance evidence (what ``predict --json`` adds unless ``--no-provenance``).

    python benchmarks/provenance_speed.py [--n 48] [--data ../shared/data/dev] [--repeat 3]

Reads, from the file bytes only: the same random sample of dev images as ``benchmarks/speed.py`` (most
carry no metadata; some real photos carry EXIF/XMP), then the dev set's DALL-E 3 images, each of which
carries a C2PA manifest that is parsed and validated. Prints a Markdown table of seconds per image
(best of ``--repeat`` passes, files already in the page cache).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from attribution.provenance import ProvenanceReader  # noqa: E402
from speed import pick_images  # noqa: E402


def seconds_per_image(reader: ProvenanceReader, files: list[Path], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for f in files:
            reader(f)
        best = min(best, time.perf_counter() - start)
    return best / max(len(files), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dev"))
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    reader = ProvenanceReader()
    sample = pick_images(Path(args.data), args.n)
    signed = sorted((Path(args.data) / "dalle3").glob("*"))[: args.n]
    for f in signed[:1] + sample[:1]:
        reader(f)  # warm-up: the C2PA library is imported when the first manifest is met
    rows = [(f"{len(sample)} dev images (as in speed.py)", seconds_per_image(reader, sample, args.repeat),
             f"{sum(bool(reader(f).records) for f in sample)} with any record")]
    if signed:
        rows.append((f"{len(signed)} DALL-E 3 images with a C2PA manifest",
                     seconds_per_image(reader, signed, args.repeat),
                     f"validation: {reader(signed[0]).c2pa.validation}"))
    print("| files | s/image | note |\n|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value:.4f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
