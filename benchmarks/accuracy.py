"""Open-set accuracy on folds that hold out generators *and* kinds of real photo whole.

    python benchmarks/folds.py --minutes 3                      # once: the leak-free fold networks
    python benchmarks/accuracy.py                               # the shipped head's recipe, per fold + mean
    python benchmarks/accuracy.py --baseline                    # the head shipped before (ImageNet + spectra)
    python benchmarks/accuracy.py --write-zoo zoo/open-set-efficientnet-lite2   # after `attribution train`

Each fold (``benchmarks/folds.py``) holds out one generator and one or two collections of real photos.
Everything trained is trained without them: the residual CNN (a fold network, shorter budget), the
synthetic probe and the head (on 70 % of the remaining images; DALL-E 3 split by day, as its four
images a day share a prompt). The probe's thresholds of a fold come from the held-out scores of the
*other* folds (out-of-fold), so no figure of a fold uses its own held-out data; ``--write-zoo`` sets
the shipped head's thresholds from the held-out scores of all folds. Harmless changes are scored on
up to ``CHANGED_PER_SOURCE`` photos of each real collection. Only the autoencoders that make
the twins saw the held-out photos (their twins are left out of the fold), and the ImageNet weights
are not trained here. ``val_unseen`` is measured only, never used to set anything.

Reported per fold and as the mean: held-out generator called real (the headline) / unknown /
uncertain, held-out real photos called real / synthetic / uncertain, and the same after harmless
changes (flip, rot90, 0.8x and 1.25x resize, 90 % crop, JPEG 90, PNG -> JPEG) per change, val_unseen
called real / unknown / uncertain per generator, closed-set accuracy, AUROC known vs unknown
generator, real-vs-fake AUROC, OSCR, and 10-shot enrollment recall and verification AUC.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from sklearn.metrics import roc_auc_score, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution import zoo  # noqa: E402
from attribution.backbones import create_backbone  # noqa: E402
from attribution.constants import REAL, UNCERTAIN, UNKNOWN  # noqa: E402
from attribution.features import FeatureCache, backbone_key  # noqa: E402
from attribution.heads import OpenSetHead  # noqa: E402
from attribution.inputs import walk_files  # noqa: E402
from attribution.persistence import flat_backbone_config  # noqa: E402
from attribution.training import list_dataset, real_source  # noqa: E402
from attribution.transform import load_image  # noqa: E402
from folds import CACHE, DEFAULT_DATA, fold_network, make_folds  # noqa: E402

IMAGE_FEATURES = "efficientnet_lite2:imagenet+residual_spectra"  # the untrained part, shared by every fold
IMAGE_LAYERS = 10  # layers in IMAGE_FEATURES (8 EfficientNet stages + 2 spectra)
CNN_LAYERS = 2  # layers of a residual_cnn backbone
HARMLESS = ("flip", "rot90", "resize0.8", "resize1.25", "crop0.9", "jpeg90", "png_to_jpeg")
CHANGED_PER_SOURCE = 10  # real photos of each collection that are also scored after each harmless change
BING_LOGO_CROP = 0.12  # share of width/height cut from the left and bottom to drop Bing's logo


def harmless_change(image: Image.Image, kind: str, source_format: str) -> Image.Image:
    """``image`` after one change that must not alter a verdict."""
    w, h = image.size
    if kind == "flip":
        return ImageOps.mirror(image)
    if kind == "rot90":
        return image.transpose(Image.Transpose.ROTATE_90)
    if kind.startswith("resize"):
        f = float(kind[len("resize"):])
        return image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BICUBIC)
    if kind == "crop0.9":
        dw, dh = round(w * 0.05), round(h * 0.05)
        return image.crop((dw, dh, w - dw, h - dh))
    quality = 90 if kind == "jpeg90" else 95
    if kind == "png_to_jpeg" and source_format == "JPEG":
        return image  # already JPEG: PNG copies keep the pixels, and re-encoding is the jpeg90 row
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def without_logo(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((round(w * BING_LOGO_CROP), 0, w, round(h * (1 - BING_LOGO_CROP))))


def fuse(blocks: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """What one concatenating backbone would give: each block holds ``n`` L2-normalised layers scaled by
    ``1/sqrt(n)``; the concatenation scales every layer by ``1/sqrt(total)``."""
    total = sum(n for _, n in blocks)
    return np.hstack([X * np.sqrt(n / total) for X, n in blocks])


class Images:
    """Every image the benchmark scores, with what it is: dev files, harmless changes of real photos,
    val_unseen (and Bing without its logo). Changed images are made when scored, a chunk at a time."""

    def __init__(self, data: Path, val: Path | None) -> None:
        found, labels = list_dataset(data)
        files = [Path(f) for f in found]
        self.inputs: list[tuple[Path, str]] = [(f, "dev") for f in files]
        self.label = list(labels)
        self.kind = ["dev"] * len(files)
        self.source = [real_source(f.name) if l == REAL else l for f, l in zip(files, labels)]
        self.name = [f.name for f in files]
        by_source: dict[str, list[Path]] = {}
        for f, l in zip(files, labels):
            if l == REAL:
                by_source.setdefault(real_source(f.name), []).append(f)
        for source, photos in sorted(by_source.items()):
            for f in photos[:: max(1, len(photos) // CHANGED_PER_SOURCE)][:CHANGED_PER_SOURCE]:
                for change in HARMLESS:
                    self._add(f, REAL, change, source)
        if val is not None and val.is_dir():
            for folder in sorted(p for p in val.iterdir() if p.is_dir()):
                for f in walk_files(folder):
                    self._add(f, folder.name, "val", folder.name)
                    if folder.name.startswith("bing"):
                        self._add(f, folder.name, "val_nologo", folder.name)

    def _add(self, path: Path, label: str, kind: str, source: str) -> None:
        self.inputs.append((path, kind))
        self.label.append(label)
        self.kind.append(kind)
        self.source.append(source)
        self.name.append(path.name)

    @staticmethod
    def materialize(item: tuple[Path, str]) -> Path | Image.Image:
        """The file itself, or the changed image it stands for."""
        path, kind = item
        if kind in ("dev", "val"):
            return path
        if kind == "val_nologo":
            return without_logo(load_image(path))
        with Image.open(path) as im:
            fmt = im.format
        return harmless_change(load_image(path), kind, fmt)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(v, dtype=str) for v in (self.label, self.kind, self.source, self.name))


def pixel_key(image: Image.Image) -> str:
    """Cache key of an image's decoded pixels (mode, size and bytes; container and metadata do not count)."""
    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:40]


def extract(backbone_ids: list[str], images: Images, cache: FeatureCache, batch_size: int = 16) -> list[np.ndarray]:
    """Features of every benchmark image for each backbone, ``[(n_images, n_features)]`` in the order of
    ``backbone_ids``. Every image is made and cropped once for all of them (they share the preprocessing),
    a batch at a time (bounded memory); features already in ``cache`` are not computed again."""
    backbones = [create_backbone(b) for b in backbone_ids]
    keys = [backbone_key(b) for b in backbones]
    transform = backbones[0].transform
    out: list[list[np.ndarray]] = [[] for _ in backbones]
    for start in range(0, len(images.inputs), batch_size):
        pixels = [load_image(images.materialize(item)) for item in images.inputs[start:start + batch_size]]
        hashes = [pixel_key(im) for im in pixels]
        views: list | None = None
        for b, (backbone, key) in enumerate(zip(backbones, keys)):
            cached = [cache.get(f"{h}-{key}") for h in hashes]
            if any(c is None for c in cached):
                views = views or [transform(im) for im in pixels]
                feats = backbone.encode(torch.cat(views), n_views=[len(v) for v in views]).numpy()
                for h, f in zip(hashes, feats):
                    cache.put(f"{h}-{key}", f)
                cached = list(feats)
            out[b] += cached
        print(f"features: {min(start + batch_size, len(images.inputs))}/{len(images.inputs)}", file=sys.stderr)
    return [np.stack(o) for o in out]


def split_known(idx: np.ndarray, label: np.ndarray, name: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """70/30 split of ``idx`` per class; DALL-E 3 by day (file name prefix) so one prompt is on one side."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(label[idx]):
        rows = idx[label[idx] == c]
        keys = np.asarray([n.split("_")[0] for n in name[rows]]) if c == "dalle3" else rows.astype(str)
        unique = rng.permutation(np.unique(keys))
        test_keys = set(unique[: max(1, round(0.3 * len(unique)))])
        is_test = np.asarray([k in test_keys for k in keys])
        train.append(rows[~is_test])
        test.append(rows[is_test])
    return np.concatenate(train), np.concatenate(test)


def oscr(correct: np.ndarray, known_unknown_score: np.ndarray, unknown_score: np.ndarray) -> float:
    """Area under the correct-classification-rate vs false-positive-rate curve (Dhamija et al. 2018)."""
    thresholds = np.unique(np.concatenate([known_unknown_score, unknown_score]))
    ccr = [(correct & (known_unknown_score <= t)).mean() for t in thresholds]
    fpr = [(unknown_score <= t).mean() for t in thresholds]
    return float(np.trapezoid([0.0, *ccr], [0.0, *fpr]))


class Fold:
    """One fold's split, head and decisions."""

    def __init__(self, name: str, held: list[str], X: np.ndarray, meta: tuple[np.ndarray, ...], params: dict,
                 seed: int) -> None:
        label, kind, source, name_ = meta
        self.name, self.X, self.label, self.kind, self.source = name, X, label, kind, source
        held_sources = {h.split("/", 1)[1] for h in held if h.startswith(f"{REAL}/")}
        self.generator = next(h for h in held if not h.startswith(f"{REAL}/"))
        dev = kind == "dev"
        self.held_gen = np.flatnonzero(dev & (label == self.generator))
        is_held_real = (label == REAL) & np.isin(source, list(held_sources))
        self.held_real = np.flatnonzero(dev & is_held_real)
        self.held_real_changed = {c: np.flatnonzero((kind == c) & is_held_real) for c in HARMLESS}
        known = np.flatnonzero(dev & (label != self.generator) & ~is_held_real)
        self.train, self.test = split_known(known, label, name_, seed)
        groups = np.where(label[self.train] == REAL, source[self.train], "")
        self.head = OpenSetHead(**params).fit(X[self.train], label[self.train], groups=groups)

    def held_out_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Synthetic scores of this fold's held-out real photos and held-out generator images."""
        return self.head.synthetic_score(self.X[self.held_real]), self.head.synthetic_score(self.X[self.held_gen])

    def metrics(self, k_shot: int = 10, seed: int = 0) -> dict[str, float]:
        head, X, label = self.head, self.X, self.label
        m: dict[str, float] = {}

        def rates(prefix: str, rows: np.ndarray) -> None:
            pred = head.predict(X[rows])
            m[f"{prefix}_called_real"] = float((pred == REAL).mean())
            m[f"{prefix}_called_unknown"] = float((pred == UNKNOWN).mean())
            m[f"{prefix}_called_synthetic"] = float(((pred != REAL) & (pred != UNCERTAIN)).mean())
            m[f"{prefix}_uncertain"] = float((pred == UNCERTAIN).mean())

        rates("unseen_generator", self.held_gen)
        rates("unseen_real", self.held_real)
        for change, rows in self.held_real_changed.items():
            pred = head.predict(X[rows])
            m[f"unseen_real_{change}_called_real"] = float((pred == REAL).mean())
            m[f"unseen_real_{change}_called_synthetic"] = float(((pred != REAL) & (pred != UNCERTAIN)).mean())
        for val in sorted(set(label[np.isin(self.kind, ["val", "val_nologo"])])):
            for kind in ("val", "val_nologo"):
                rows = np.flatnonzero((self.kind == kind) & (label == val))
                if len(rows):
                    rates(f"{val}{'_nologo' if kind == 'val_nologo' else ''}", rows)
        test, unk = self.test, self.held_gen
        decision = head.decide(X[test])
        classes = np.asarray(head.classes_)
        correct = classes[decision.proba.argmax(1)] == label[test]
        m["closed_set_acc"] = float(correct.mean())
        m["known_test_uncertain"] = float((decision.labels == UNCERTAIN).mean())
        is_gen = label[test] != REAL
        gen_test = test[is_gen]
        s_known, s_unk = decision.unknown_score[is_gen], head.unknown_score(X[unk])
        m["auroc_known_vs_unknown_generator"] = float(roc_auc_score(np.r_[np.zeros(len(s_known)), np.ones(len(s_unk))],
                                                                    np.r_[s_known, s_unk]))
        gen_correct = correct[is_gen]
        m["oscr"] = oscr(gen_correct, s_known, s_unk)
        reals = np.r_[test[label[test] == REAL], self.held_real]
        fakes = np.r_[gen_test, unk]
        score = head.synthetic_score if head.has_probe else (lambda Z: 1 - head.predict_proba(Z)[:, head.classes_.index(REAL)])
        m["real_vs_fake_auroc"] = float(roc_auc_score(np.r_[np.zeros(len(reals)), np.ones(len(fakes))],
                                                      np.r_[score(X[reals]), score(X[fakes])]))
        rng = np.random.default_rng(seed)
        shots = rng.permutation(unk)
        enrolled = head.clone()
        enrolled.enroll(X[shots[:k_shot]], self.generator)
        rest = shots[k_shot:]
        m[f"enroll{k_shot}_recall"] = float((enrolled.predict(X[rest]) == self.generator).mean())
        ver = enrolled.class_log_odds(X[np.r_[rest, test]])[:, enrolled.classes_.index(self.generator)]
        m[f"verify{k_shot}_auc"] = float(roc_auc_score(np.r_[np.ones(len(rest)), np.zeros(len(test))], ver))
        self.roc = roc_curve(np.r_[np.zeros(len(s_known)), np.ones(len(s_unk))], np.r_[s_known, s_unk])[:2]
        return m


def print_table(columns: dict[str, dict[str, float]], mean: dict[str, float]) -> None:
    """A Markdown table: one row per metric, one column per fold, then the mean."""
    print(f"\n| metric | {' | '.join(columns)} | mean |\n|---|{'---|' * (len(columns) + 1)}")
    for k in mean:
        print(f"| {k} | " + " | ".join(f"{r[k]:.3f}" if k in r else "-" for r in columns.values()) + f" | {mean[k]:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--val", default=str(Path(DEFAULT_DATA).parent / "val_unseen"))
    parser.add_argument("--zoo", default=None, help="head whose parameters are measured (default: the shipped head)")
    parser.add_argument("--baseline", action="store_true",
                        help="measure the earlier recipe: ImageNet + spectra features, no probe, no fold networks")
    parser.add_argument("--cache-dir", default=str(CACHE / "features"))
    parser.add_argument("--write-zoo", default=None,
                        help="set this head's probe thresholds from the folds and write the metrics into it")
    parser.add_argument("--head-params", default="{}", help="JSON overriding the head's parameters")
    parser.add_argument("--json", default=None, help="also write the per-fold metrics to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold-network", default="residual_cnn", choices=["residual_cnn", "efficientnet_late"],
                        help="the trained network fused into each fold's features (benchmarks/folds.py --network)")
    args = parser.parse_args(argv)

    cache = FeatureCache(args.cache_dir)
    images = Images(Path(args.data), Path(args.val) if args.val else None)
    meta = images.arrays()
    folds = make_folds(Path(args.data))
    if args.baseline:
        base, = extract([IMAGE_FEATURES], images, cache)
        params = {"n_components": 384}
        fold_X = {f: base for f in folds}
    else:
        params = {**zoo.read_config(zoo.resolve(args.zoo or args.write_zoo))["head"]["params"]}
        network = args.fold_network
        missing = [f for f in folds if not (fold_network(f, network) / "model.safetensors").is_file()]
        if missing:
            raise SystemExit(f"fold networks missing for {missing}: run python benchmarks/folds.py first")
        base, *cnn = extract([IMAGE_FEATURES, *(f"{network}:{fold_network(f, network)}" for f in folds)], images, cache)
        fold_X = {f: fuse([(base, IMAGE_LAYERS), (c, CNN_LAYERS)]) for f, c in zip(folds, cnn)}
    print(f"{len(images.inputs)} images scored", file=sys.stderr)
    params.update(json.loads(args.head_params))
    runs = {f: Fold(f, held, fold_X[f], meta, params, args.seed) for f, held in folds.items()}
    held = None
    if runs[next(iter(runs))].head.has_probe:
        held = {f: run.held_out_scores() for f, run in runs.items()}
        for f, run in runs.items():  # thresholds from the other folds' held-out scores
            run.head.calibrate_synthetic(np.concatenate([held[g][0] for g in runs if g != f]),
                                         np.concatenate([held[g][1] for g in runs if g != f]))
    rows = {f: run.metrics(seed=args.seed) for f, run in runs.items()}
    for f, held_out in folds.items():
        print(f"fold {f}: held out {held_out}", file=sys.stderr)
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    mean = {k: float(np.mean([r[k] for r in rows.values() if k in r])) for k in keys}
    print_table(rows, mean)
    if args.json:
        Path(args.json).write_text(json.dumps({"folds": folds, "per_fold": rows, "mean": mean}, indent=2))
    if args.write_zoo:
        write_zoo(Path(args.write_zoo), runs, mean, rows, held)
    return 0


def write_zoo(folder: Path, runs: dict[str, Fold], mean: dict, rows: dict, held: dict | None) -> None:
    """Set the head's probe thresholds from every fold's held-out scores (images nothing under the fold's
    probe had seen), and store the metrics, the held-out confusion table and the ROC curves in its
    config and card."""
    head, config = zoo.load_head(folder)
    if held is not None and head.has_probe:
        head.calibrate_synthetic(np.concatenate([h[0] for h in held.values()]),
                                 np.concatenate([h[1] for h in held.values()]))
        config["probe_calibration"] = ("thresholds from the held-out scores of the leak-free folds of "
                                       "benchmarks/accuracy.py (unseen generators, unseen kinds of real photo)")
    files = figures(runs, rows)
    config["metrics"] = {**{k: round(v, 4) for k, v in mean.items()},
                         "protocol": "leak-free folds: each holds out one generator and one or two real-photo "
                                     "collections; fold networks, probe and head trained without them; probe "
                                     "thresholds from the other folds' held-out scores (benchmarks/accuracy.py)",
                         "per_fold": {f: {k: round(v, 4) for k, v in r.items()} for f, r in rows.items()}}
    config["figures"] = sorted(files)
    zoo.save_pretrained(folder, head, flat_backbone_config(config), files=files, **config)
    print(f"metrics written to {folder}", file=sys.stderr)


def figures(runs: dict[str, Fold], rows: dict) -> dict[str, bytes]:
    """Confusion matrix of the held-out units (labels given to held-out generators and real photos) and
    the known-vs-unknown ROC of every fold, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth, pred = [], []
    for run in runs.values():
        for rows_, name in ((run.held_gen, "unseen generator"), (run.held_real, "unseen real photos")):
            truth += [name] * len(rows_)
            labels = run.head.predict(run.X[rows_])
            pred += [p if p in (REAL, UNKNOWN, UNCERTAIN) else "known generator" for p in labels]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    cols = [REAL, UNCERTAIN, UNKNOWN, "known generator"]
    table = np.array([[np.mean([p == c for t, p in zip(truth, pred) if t == row]) for c in cols]
                      for row in ("unseen generator", "unseen real photos")])
    ax.imshow(table, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(2), ["unseen generator", "unseen real photos"])
    for (i, j), v in np.ndenumerate(table):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set_title("Labels given to held-out units (all folds)")
    fig.tight_layout()
    files = {"confusion_matrix.png": _png(fig)}
    fig, ax = plt.subplots(figsize=(6, 5))
    for f, run in runs.items():
        fpr, tpr = run.roc
        ax.plot(fpr, tpr, label=f"{f} (AUROC {rows[f]['auroc_known_vs_unknown_generator']:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="known generator taken for unknown (FPR)", ylabel="unseen generator called unknown (TPR)",
           title="Known vs unknown generator, per fold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["roc_unknown.png"] = _png(fig)
    return files


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
