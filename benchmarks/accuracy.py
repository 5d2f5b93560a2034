"""Leave-one-generator-out accuracy of a head recipe on a folder-per-class dataset.

Each generator in turn plays the unknown: the head is fitted on ``real`` + the other generators
(70 % of their images), then measured on the rest and on every image of the held-out generator.

    python benchmarks/accuracy.py --data ../shared/data/dev                       # print the table
    python benchmarks/accuracy.py --data ../shared/data/dev --write-zoo zoo/open-set-efficientnet-lite2

Metrics (averaged over the held-out generators): closed-set accuracy, AUROC known vs unknown, OSCR,
real-vs-fake AUROC, k-shot enrollment recall and known-accuracy drop, verification AUC and
true-match rate at 1 % false-match, closed-set accuracy after JPEG 75 and after 0.5x resize.
Then each collection of real photos in turn (file-name prefix) is held out: the share of those photos
still called ``real`` or ``unknown``, and real-vs-fake AUROC of them against the generators' test images.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution import zoo  # noqa: E402
from attribution.constants import REAL, UNKNOWN  # noqa: E402
from attribution.features import FeatureCache, FeatureExtractor  # noqa: E402
from attribution.heads import OpenSetHead  # noqa: E402
from attribution.pipeline import backbone_from_config  # noqa: E402
from attribution.training import list_dataset  # noqa: E402
from attribution.transform import load_image  # noqa: E402

PERTURBATIONS = ("jpeg75", "resize0.5")


def perturb(path: Path, kind: str) -> Image.Image:
    image = load_image(path)
    if kind == "jpeg75":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=75)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    w, h = image.size
    return image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC)


GENERATOR_SIZES = (256, 512)  # the square sizes of the dev generators


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """The centred square of ``image``, resized (bicubic) to ``size`` x ``size``."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)


def resized_real_features(extractor: FeatureExtractor, files: list[Path], y: np.ndarray) -> np.ndarray:
    """Features of every ``real`` photo as a centred square at a generator size (the sizes in turn);
    rows of other classes are NaN. The size-confound check: do these stay ``real``?"""
    rows = np.flatnonzero(y == REAL)
    images = [square_resize(load_image(files[r]), GENERATOR_SIZES[i % len(GENERATOR_SIZES)]) for i, r in enumerate(rows)]
    features = extractor(images).features
    out = np.full((len(y), features.shape[1]), np.nan)
    out[rows] = features
    return out


def oscr(correct: np.ndarray, known_unknown_score: np.ndarray, unknown_score: np.ndarray) -> float:
    """Area under the correct-classification-rate vs false-positive-rate curve (Dhamija et al. 2018)."""
    thresholds = np.unique(np.concatenate([known_unknown_score, unknown_score]))
    ccr = [(correct & (known_unknown_score <= t)).mean() for t in thresholds]
    fpr = [(unknown_score <= t).mean() for t in thresholds]
    return float(np.trapezoid([0.0, *ccr], [0.0, *fpr]))


def tmr_at(y_true: np.ndarray, score: np.ndarray, fmr: float = 0.01) -> float:
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(np.interp(fmr, fpr, tpr))


def evaluate_fold(held_out: str, X: np.ndarray, y: np.ndarray, Xp: dict[str, np.ndarray], resized: np.ndarray,
                  head_params: dict, seed: int = 0) -> tuple[dict[str, float], dict]:
    known = y != held_out
    idx = np.flatnonzero(known)
    train, test = train_test_split(idx, test_size=0.3, stratify=y[idx], random_state=seed)
    unk = np.flatnonzero(~known)
    head = OpenSetHead(**head_params).fit(X[train], y[train])
    classes = np.asarray(head.classes_)
    pred_closed = classes[head.predict_proba(X[test]).argmax(1)]
    correct = pred_closed == y[test]
    s_known, s_unk = head.unknown_score(X[test]), head.unknown_score(X[unk])
    m = {"closed_set_acc": float(correct.mean()),
         "auroc_unknown": float(roc_auc_score(np.r_[np.zeros(len(test)), np.ones(len(unk))], np.r_[s_known, s_unk])),
         "oscr": oscr(correct, s_known, s_unk),
         "unknown_rejected": float((s_unk > head.offset_).mean()),
         "known_accepted": float((s_known <= head.offset_).mean())}
    pred_unk = head.predict(X[unk])
    m["unknown_called_unknown"] = float((pred_unk == UNKNOWN).mean())
    m["unknown_called_real"] = float((pred_unk == REAL).mean())
    both = np.r_[test, unk]
    fake_score = 1.0 - head.predict_proba(X[both])[:, head.classes_.index(REAL)]
    m["real_vs_fake_auroc"] = float(roc_auc_score(y[both] != REAL, fake_score))
    real_test = test[y[test] == REAL]
    m["real_resized_called_real"] = float((head.predict(resized[real_test]) == REAL).mean())
    for kind, Xk in Xp.items():
        m[f"closed_set_acc_{kind}"] = float((classes[head.predict_proba(Xk[test]).argmax(1)] == y[test]).mean())
    open_before = head.predict(X[test])
    rng = np.random.default_rng(seed)
    curves = {"fpr_tpr": roc_curve(np.r_[np.zeros(len(test)), np.ones(len(unk))], np.r_[s_known, s_unk])[:2]}
    for k in (5, 10):
        shots = rng.permutation(unk)
        enroll_idx, rest = shots[:k], shots[k:]
        enrolled = OpenSetHead.from_state(head.get_params(), head.meta_dict(), head.state_dict())
        enrolled.enroll(X[enroll_idx], held_out)
        pred_rest = enrolled.predict(X[rest])
        m[f"enroll{k}_recall"] = float((pred_rest == held_out).mean())
        after = np.asarray(enrolled.classes_)[enrolled.predict_proba(X[test]).argmax(1)]
        m[f"enroll{k}_known_acc_drop"] = float(correct.mean() - (after == y[test]).mean())
        m[f"enroll{k}_open_acc_drop"] = float((open_before == y[test]).mean() - (enrolled.predict(X[test]) == y[test]).mean())
        ver_y = np.r_[np.ones(len(rest)), np.zeros(len(test))]
        ver_s = enrolled.score_samples(X[np.r_[rest, test]], held_out)
        m[f"verify{k}_auc"] = float(roc_auc_score(ver_y, ver_s))
        m[f"verify{k}_tmr_at_1pct_fmr"] = tmr_at(ver_y, ver_s)
        m[f"verify{k}_match_rate"] = float((enrolled.verification_score(X[rest], held_out) > 0).mean())
        m[f"verify{k}_false_match_rate"] = float((enrolled.verification_score(X[test], held_out) > 0).mean())
    return m, curves


def real_source(path: Path) -> str:
    """The collection a dev ``real`` photo comes from: its file-name prefix (``sun_hays80__...``)."""
    return path.name.split("__")[0]


def evaluate_novel_real(source: str, X: np.ndarray, y: np.ndarray, sources: np.ndarray, head_params: dict,
                        seed: int = 0) -> dict[str, float]:
    """Hold out one collection of real photos: are photos of a kind never seen still called ``real``?"""
    held = (y == REAL) & (sources == source)
    idx = np.flatnonzero(~held)
    train, test = train_test_split(idx, test_size=0.3, stratify=y[idx], random_state=seed)
    head = OpenSetHead(**head_params).fit(X[train], y[train])
    fakes = test[y[test] != REAL]
    real_col = head.classes_.index(REAL)
    fake_score = 1.0 - head.predict_proba(X[np.r_[np.flatnonzero(held), fakes]])[:, real_col]
    pred = head.predict(X[held])
    return {"novel_real_called_real": float((pred == REAL).mean()),
            "novel_real_called_unknown": float((pred == UNKNOWN).mean()),
            "novel_real_vs_fake_auroc": float(roc_auc_score(np.r_[np.zeros(held.sum()), np.ones(len(fakes))],
                                                            fake_score))}


def print_table(columns: dict[str, dict[str, float]], mean: dict[str, float]) -> None:
    """A Markdown table: one row per metric, one column per fold, then the mean."""
    print(f"\n| metric | {' | '.join(columns)} | mean |\n|---|{'---|' * (len(columns) + 1)}")
    for k in next(iter(columns.values())):
        print(f"| {k} | " + " | ".join(f"{r[k]:.3f}" for r in columns.values()) + f" | {mean[k]:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/dev"))
    parser.add_argument("--zoo", default=None, help="head whose backbone config and head params are measured")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache/attribution/features"))
    parser.add_argument("--write-zoo", default=None, help="write the metrics into this head's config and card")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refit", action="store_true",
                        help="with --write-zoo: refit that head on all the data with the measured head parameters")
    parser.add_argument("--head-params", default="{}", help="JSON overriding the head's parameters")
    parser.add_argument("--no-perturb", action="store_true", help="skip the JPEG / resize robustness rows")
    args = parser.parse_args(argv)

    folder = zoo.resolve(args.zoo or args.write_zoo)
    config = zoo.read_config(folder)
    backbone = backbone_from_config(config)
    extractor = FeatureExtractor(backbone, FeatureCache(args.cache_dir))
    files, labels = list_dataset(args.data)
    batch = extractor(files)
    X, y = batch.features, np.asarray(labels)[batch.index]
    kept = [files[i] for i in batch.index]
    resized = resized_real_features(extractor, kept, y)
    Xp = {} if args.no_perturb else {kind: extractor([perturb(f, kind) for f in kept]).features for kind in PERTURBATIONS}
    head_params = {**config["head_params"], **json.loads(args.head_params)}
    generators = sorted(set(y) - {REAL})
    rows, curves = {}, {}
    for g in generators:
        rows[g], curves[g] = evaluate_fold(g, X, y, Xp, resized, head_params, args.seed)
        print(f"held out {g:<22} " + "  ".join(f"{k}={v:.3f}" for k, v in rows[g].items()
                                                   if k in ("closed_set_acc", "auroc_unknown", "oscr")), file=sys.stderr)
    names = list(next(iter(rows.values())))
    mean = {k: float(np.mean([rows[g][k] for g in generators])) for k in names}
    sources = np.asarray([real_source(f) if label == REAL else "" for f, label in zip(kept, y)])
    novel = {s: evaluate_novel_real(s, X, y, sources, head_params, args.seed) for s in sorted(set(sources) - {""})}
    for k in next(iter(novel.values())):
        mean[k] = float(np.mean([r[k] for r in novel.values()]))
    print_table(rows, mean)
    print("\nLeave-one-real-source-out (real photos of a kind the head never saw)")
    print_table(novel, mean)
    if args.write_zoo:
        if args.refit:
            ids = [str(f.relative_to(Path(args.data))) for f in kept]
            head = OpenSetHead(**head_params).fit(X, y, ids=ids)
            training = {**config.get("training", {}), "n_images": int(len(y)),
                        "class_counts": {str(c): int((y == c).sum()) for c in np.unique(y)}}
            zoo.save_pretrained(args.write_zoo, head, backbone.config(), name=Path(args.write_zoo).name, training=training)
        write_metrics(Path(args.write_zoo), mean, rows, curves, X, y, head_params)
    return 0


def write_metrics(folder: Path, mean: dict, rows: dict, curves: dict, X: np.ndarray, y: np.ndarray, params: dict) -> None:
    """Store the LOGO metrics in the head's config and card, with a confusion matrix and ROC plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay
    from sklearn.model_selection import StratifiedKFold

    head, config = zoo.load_head(folder)
    classes = np.unique(y)
    pred = np.empty(len(y), dtype=object)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        pred[test] = OpenSetHead(**params).fit(X[train], y[train]).predict(X[test])
    files = {}
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay.from_predictions(y, pred.astype(str), labels=[*classes, UNKNOWN], ax=ax,
                                            xticks_rotation=45, colorbar=False)
    ax.set_title("5-fold CV on dev (rows: true, cols: predicted)")
    fig.tight_layout()
    files["confusion_matrix.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6, 5))
    for g, c in curves.items():
        fpr, tpr = c["fpr_tpr"]
        ax.plot(fpr, tpr, label=f"{g} (AUROC {rows[g]['auroc_unknown']:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="known accepted as unknown (FPR)", ylabel="unknown rejected (TPR)",
           title="Leave-one-generator-out: known vs unknown")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["roc_unknown.png"] = _png(fig)
    config["metrics"] = {**{("" if k.startswith("novel_real") else "logo_") + k: round(v, 4) for k, v in mean.items()},
                         "protocol": "leave-one-generator-out on the dev set, 70/30 split of known classes; "
                                     "novel_real_*: leave-one-real-source-out",
                         "per_generator": {g: {k: round(v, 4) for k, v in r.items()} for g, r in rows.items()}}
    config["figures"] = sorted(files)
    zoo.save_head(folder, head, config, card=zoo.model_card(config), extra_files=files)
    print(f"metrics written to {folder}", file=sys.stderr)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
