"""Leak-free folds of the dev set: each holds out one generator and one or two real-photo sources whole.

Everything trained (the residual CNN included) is trained per fold without what the fold holds out,
so the held-out generator plays a generator nobody has seen and the held-out photos a kind of camera
photo nobody has seen. Fold networks are cached in ``~/.cache/attribution/folds/<fold>``.

    python benchmarks/folds.py --steps 300          # train the fold networks that are not cached yet
    python benchmarks/folds.py --network efficientnet_late   # the fine-tuned EfficientNet alternative
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.constants import REAL  # noqa: E402
from attribution.recipes.residual_cnn import RecipeCfg, load_dataset, save_network, train_residual_cnn  # noqa: E402
from attribution.training import real_source  # noqa: E402

CACHE = Path.home() / ".cache" / "attribution"
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev"


def make_folds(data: Path) -> dict[str, list[str]]:
    """``{fold name: held-out names}``: generator ``i`` (sorted) with the ``i``-th group of real sources;
    sources are dealt largest first onto the folds with the fewest photos, so each fold holds some."""
    classes = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    generators = [c for c in classes if c != REAL]
    counts: dict[str, int] = {}
    for f in (data / REAL).iterdir():
        counts[real_source(f.name)] = counts.get(real_source(f.name), 0) + 1
    groups: list[list[str]] = [[] for _ in generators]
    sizes = [0] * len(generators)
    for source in sorted(counts, key=lambda s: (-counts[s], s)):
        i = sizes.index(min(sizes))
        groups[i].append(source)
        sizes[i] += counts[source]
    return {g: [g, *(f"{REAL}/{s}" for s in sorted(group))] for g, group in zip(generators, groups)}


def fold_network(fold: str, network: str = "residual_cnn") -> Path:
    """Where the fold's network is cached (``~/.cache/attribution/folds[-<network>]/<fold>``)."""
    return CACHE / ("folds" if network == "residual_cnn" else f"folds-{network}") / fold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--steps", type=int, default=300, help="training steps per fold network")
    parser.add_argument("--minutes", type=float, default=30.0, help="time cap per fold network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--network", default="residual_cnn", choices=["residual_cnn", "efficientnet_late"])
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's; 5e-4 "
                        "for efficientnet_late)")
    args = parser.parse_args(argv)
    lr = args.lr or (5e-4 if args.network == "efficientnet_late" else RecipeCfg.lr)
    folds = make_folds(Path(args.data))
    decoded = load_dataset(args.data)
    for fold, held in folds.items():
        if (fold_network(fold, args.network) / "model.safetensors").is_file():
            continue
        start = time.perf_counter()
        steps = args.steps + (100 if fold == "dalle3" else 0)  # its 80 JPEGs, split by day, learn slower
        cfg = RecipeCfg(minutes=args.minutes, steps=steps, seed=args.seed, exclude=held, network=args.network, lr=lr)
        model, config = train_residual_cnn(args.data, cfg, cache=CACHE / "recipe", decoded=decoded)
        save_network(fold_network(fold, args.network), model, config)
        print(f"fold {fold} (held out {held}): {config['recipe']['steps_done']} steps in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
