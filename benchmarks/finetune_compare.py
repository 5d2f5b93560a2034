"""Residual CNN vs fine-tuned EfficientNet-Lite late blocks, on the same leak-free folds and patches.

Issue 11 asked for both feature networks to be measured: the residual CNN (NPR + high-pass residuals,
trained from scratch; shipped) and EfficientNet-Lite2 (ImageNet) with its last two stages fine-tuned
by the very same recipe (data, aligned twins, augmentation, class-balanced batches, loss, steps).

    python benchmarks/folds.py                        # once: the residual CNN fold networks
    python benchmarks/finetune_compare.py             # trains the EfficientNet fold networks, compares

Per fold, each network is trained without the fold's held-out generator and real sources (the residual
CNN networks are those of ``benchmarks/folds.py``; the EfficientNet ones get as many steps) and scores
the centre 128 px of each image with its synthetic head alone (no attribution head, no fusion). Reported per fold and as the mean: AUROC of held-out real photos vs
the held-out generator, the held-out generator's images above the threshold that lets 5 % of the
held-out real photos through (TPR at 5 % FPR), and the same two against ``val_unseen`` (measured only).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.backbones.residual_cnn import load_network  # noqa: E402
from attribution.constants import IMAGE_EXTENSIONS, REAL  # noqa: E402
from attribution.recipes.residual_cnn import RecipeCfg, load_dataset, train_residual_cnn  # noqa: E402
from attribution.dataset import real_source  # noqa: E402
from attribution.transform import load_image  # noqa: E402
from folds import CACHE, DEFAULT_DATA, fold_network, make_folds  # noqa: E402

WINDOW = 128
DEFAULT_VAL = DEFAULT_DATA.parent / "val_unseen"


@torch.inference_mode()
def synthetic_scores(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    """Synthetic logit ``(n,)`` of the centre ``WINDOW`` px (even sides) of each image ``(H, W, 3)`` uint8."""
    scores = []
    for image in images:
        side = min(WINDOW, *image.shape[:2]) // 2 * 2
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        crop = np.ascontiguousarray(image[top:top + side, left:left + side])
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
        scores.append(float(model(x)[2][0]))
    return np.asarray(scores)


def rates(real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """AUROC real vs fake and the share of fakes above the 95th percentile of the real scores."""
    auroc = roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(fake))], np.r_[real, fake])
    return float(auroc), float((fake > np.quantile(real, 0.95)).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--val", default=str(DEFAULT_VAL))
    parser.add_argument("--folds", default=None, help="comma-separated fold names (default: all)")
    parser.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate of the EfficientNet")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    folds = make_folds(Path(args.data))
    chosen = args.folds.split(",") if args.folds else list(folds)
    decoded = load_dataset(args.data)
    val_images = [np.asarray(load_image(f)) for f in sorted(Path(args.val).glob("*/*"))
                  if f.suffix.lower() in IMAGE_EXTENSIONS]
    rows: dict[str, dict[str, float]] = {}
    for fold in chosen:
        held = folds[fold]
        residual, residual_config = load_network(str(fold_network(fold)))
        steps = residual_config["recipe"]["steps_done"]
        start = time.perf_counter()
        finetuned, _ = train_residual_cnn(args.data, RecipeCfg(steps=steps, lr=args.lr, exclude=held,
                                                               network="efficientnet_late"),
                                          cache=CACHE / "recipe", decoded=decoded, log=lambda m: print(m, file=sys.stderr))
        seconds = time.perf_counter() - start
        sources = {h.split("/", 1)[1] for h in held if h.startswith(f"{REAL}/")}
        real = [im for name, im in decoded[REAL].items() if real_source(name) in sources]
        generator = list(decoded[held[0]].values())
        row: dict[str, float] = {"finetune_steps": steps, "finetune_seconds": round(seconds, 1)}
        for name, model in (("residual_cnn", residual), ("efficientnet_late", finetuned.eval())):
            r = synthetic_scores(model, real)
            row[f"{name}_auroc"], row[f"{name}_tpr5"] = rates(r, synthetic_scores(model, generator))
            row[f"{name}_val_auroc"], row[f"{name}_val_tpr5"] = rates(r, synthetic_scores(model, val_images))
        rows[fold] = row
        print(f"fold {fold}: {json.dumps(row)}", file=sys.stderr)
    keys = list(next(iter(rows.values())))
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    print("| metric | " + " | ".join(rows) + " | mean |\n|---|" + "---|" * (len(rows) + 1))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{r[k]:.3f}" for r in rows.values()) + f" | {mean[k]:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"folds": {f: folds[f] for f in chosen}, "per_fold": rows,
                                               "mean": mean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
