"""The networks of the accuracy benchmark: the shipped recipe run inside each of its own folds (nested).

The shipped recipe (``attribution train-forensic --folds 5``) trains one network per fold, each without
its fold; the head is fitted on out-of-fold outputs. To measure that recipe on sources it never saw,
``accuracy.py`` runs it inside each outer fold ``o``: the inner networks are trained without fold ``o``
and one other fold ``j``, one network per pair ``{o, j}`` (shared by the outer folds ``o`` and ``j``),
and without the closed-set test split (30 % of each class's prompt groups), so 10 networks serve the 5
outer folds. The networks of the recipe shipped before (one network per outer fold, 300 steps, no
tiling: the "before" column) are trained here too. All are cached in
``~/.cache/attribution/crossfit/``; the pair networks are also bundled as one ensemble folder
(``pairs/``) so the benchmark reads every pair network in one pass over the images.

    python benchmarks/folds.py                # what is not cached yet (about 50 min on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.backbones.residual_cnn import load_network  # noqa: E402
from attribution.dataset import list_samples  # noqa: E402
from attribution.recipes.crossfit import crossfit_folds, ensemble_from, save_ensemble  # noqa: E402
from attribution.recipes.residual_cnn import (RecipeCfg, load_dataset, save_network, train_residual_cnn,  # noqa: E402
                                              with_twins)

CACHE = Path.home() / ".cache" / "attribution"
NETWORKS = CACHE / "crossfit"
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev"
TILES = {"flux1_dev": 2}  # as the shipped recipe: the FLUX files are 2x2 grids
TOGETHER = {"ffhq": "stylegan2_faces"}  # real faces held out with the face generator
N_FOLDS = 5
TEST_FRACTION = 0.3  # closed-set test split: share of each class's prompt groups no benchmark network sees
STEPS = 1200  # as the shipped recipe (README: "The default head")
BEFORE_STEPS = 300  # the fold networks of the recipe shipped before


def outer_folds(data: Path) -> list[list[str]]:
    """The recipe's folds of ``data`` (the outer folds of the benchmark)."""
    return crossfit_folds(list_samples(data, TILES), N_FOLDS, TOGETHER)


def pairs(n_folds: int = N_FOLDS) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``: one network each, trained without folds ``i`` and ``j``."""
    return list(itertools.combinations(range(n_folds), 2))


def pair_network(i: int, j: int) -> Path:
    return NETWORKS / f"pair-{i}-{j}"


def before_network(o: int) -> Path:
    return NETWORKS / f"before-{o}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--minutes", type=float, default=20.0, help="time cap per network")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folds = outer_folds(Path(args.data))
    cfg = RecipeCfg(minutes=args.minutes, steps=args.steps, seed=args.seed, tiles=TILES,
                    holdout_fraction=TEST_FRACTION, holdout_seed=args.seed)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    todo = [(i, j) for i, j in pairs() if not (pair_network(i, j) / "model.safetensors").is_file()]
    if todo:
        decoded = with_twins(load_dataset(args.data, log, TILES), cfg, "cpu", CACHE / "recipe", log)
        for k, (i, j) in enumerate(todo):
            start = time.perf_counter()
            member = replace(cfg, exclude=[*folds[i], *folds[j]], seed=args.seed + 10 * i + j)
            model, config = train_residual_cnn(args.data, member, cache=CACHE / "recipe", log=log, decoded=decoded)
            save_network(pair_network(i, j), model, {**config, "held_out": [*folds[i], *folds[j]]})
            log(f"pair {i}-{j}: {config['recipe']['steps_done']} steps in {time.perf_counter() - start:.0f} s")
    bundle = NETWORKS / "pairs"
    if todo or not (bundle / "model.safetensors").is_file():
        members, specs = [], []
        for i, j in pairs():
            model, config = load_network(str(pair_network(i, j)))
            members.append(model)
            specs.append({"classes": config["classes"], "held_out": config["held_out"], "recipe": config["recipe"]})
        save_ensemble(bundle, *ensemble_from(members, specs))
    old = RecipeCfg(minutes=args.minutes, steps=BEFORE_STEPS, seed=args.seed, holdout_fraction=TEST_FRACTION,
                    holdout_seed=args.seed)
    todo = [o for o in range(N_FOLDS) if not (before_network(o) / "model.safetensors").is_file()]
    if todo:
        decoded = with_twins(load_dataset(args.data, log), old, "cpu", CACHE / "recipe", log)
        for o in todo:
            model, config = train_residual_cnn(args.data, replace(old, exclude=folds[o]), cache=CACHE / "recipe",
                                               log=log, decoded=decoded)
            save_network(before_network(o), model, config)
            log(f"before {o}: {config['recipe']['steps_done']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
