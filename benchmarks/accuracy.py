"""Open-set accuracy of the shipped recipe, run inside folds that hold generators and kinds of real photo out whole.

    python benchmarks/folds.py        # once: the networks (10 pair networks, 5 'before' networks; cached)
    python benchmarks/accuracy.py     # every outer fold: table on stdout, JSON in benchmarks/results_accuracy.json
    python benchmarks/accuracy.py --write-zoo zoo/open-set-efficientnet-lite2   # the metrics into the shipped card

Outer folds are the recipe's own folds (``attribution.recipes.crossfit.crossfit_folds``: two generators
and one to three real-photo collections each). For outer fold ``o`` the shipped recipe is run as it
ships, without fold ``o`` (nested): its cross-fitted networks are the pair networks ``{o, j}``
(``benchmarks/folds.py``), the head and its probe are fitted on the other folds' images and their
changed copies, each image's network features from the one network that never saw it, and the head
sets its own thresholds. Then, with the mean of those networks as at inference:

- the held-out generators and real photos of fold ``o`` (and after each harmless change), the
  ``val_unseen`` generators (measured only) and the field cases (real photos after ordinary handling,
  ``field_cases.py``) are labelled;
- the closed-set test split (30 % of each class's prompt groups, seen by no benchmark network and no
  head) gives closed-set accuracy, also after JPEG 90 / 75, WebP 80 and a 0.5x resize, per class;
- each held-out and ``val_unseen`` generator is enrolled from 5 and 10 of its images (prompt groups
  kept apart) and its other images attributed through the full decision;
- the rates the inner head states (``real_false_rate``, ``synthetic_miss_rate``) are checked on the
  held-out sources: pooled over the folds, a one-sided binomial test at 5 %.

"Before" is the recipe shipped when this work started (ImageNet + spectra + one residual CNN trained
without the fold, 300 steps; probe fitted on that network's own training images; thresholds from the
other folds' held-out scores; no class matches), rerun on the same folds.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import binom
from sklearn.metrics import roc_auc_score, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attribution import zoo  # noqa: E402
from attribution.backbones import create_backbone  # noqa: E402
from attribution.backbones.base import pool_layers  # noqa: E402
from attribution.backbones.concat import fuse  # noqa: E402
from attribution.backbones.ensemble import ensemble_layers  # noqa: E402
from attribution.changes import HARMLESS, harmless_change  # noqa: E402
from attribution.constants import REAL, UNCERTAIN, UNKNOWN  # noqa: E402
from attribution.dataset import Sample, list_samples, split_groups  # noqa: E402
from attribution.features import FeatureBatch, FeatureCache, backbone_key  # noqa: E402
from attribution.heads import OpenSetHead  # noqa: E402
from attribution.heads.decision import input_limit  # noqa: E402
from attribution.inputs import walk_files  # noqa: E402
from attribution.persistence import flat_backbone_config  # noqa: E402
from attribution.training import ChangedImages, fit_head  # noqa: E402
from attribution.transform import distinct_colours, is_grayscale, load_image  # noqa: E402
from field_cases import CASES, field_cases  # noqa: E402
from folds import (CACHE, DEFAULT_DATA, N_FOLDS, NETWORKS, TEST_FRACTION, TILES, before_network, outer_folds,  # noqa: E402
                   pairs)

BASE = "efficientnet_lite2:imagenet+residual_spectra"  # the frozen part of the shipped backbone
BASE_LAYERS, NETWORK_LAYERS = 10, 2  # layers of BASE, and of the ensemble / the old residual CNN
AUGMENT = 2  # changed copies per training image, as `attribution train` (default --augment)
CLOSED_CHANGES = ("jpeg90", "jpeg75", "webp80", "resize0.5")
CHANGED_PER_UNIT = 8  # images of each held-out generator / real source scored after each harmless change
CLOSED_CHANGED_PER_CLASS = 12  # closed-set test images of each class scored after each closed-set change
SHOTS = (5, 10)
WINDOW = 256  # the judged window of the shipped preprocessing (px)
BING_LOGO_CROP = 0.12  # share of width/height cut from the left and bottom to drop Bing's logo
ALPHA = 0.05  # one-sided binomial test of a stated rate


@dataclass
class Item:
    """One image the benchmark scores: a dev sample (``dev``), a training copy (``copy``, ``change`` its
    number), a dev sample after a harmless change (``change``), a ``val_unseen`` image (``val``, ``val_nologo``)
    or a field case (``field``, ``change`` the case)."""

    kind: str
    label: str
    sample: int = -1
    change: str = ""
    path: Path | None = None
    image: Image.Image | None = None


class Benchmark:
    """The images, their features from every network, and the folds."""

    def __init__(self, data: Path, val: Path | None, seed: int) -> None:
        self.samples: list[Sample] = list_samples(data, TILES)
        self.folds = outer_folds(data)
        units = {unit: k for k, fold in enumerate(self.folds) for unit in fold}
        self.fold = np.asarray([units[f"{REAL}/{s.source}" if s.label == REAL else s.label] for s in self.samples])
        self.test = split_groups(self.samples, TEST_FRACTION, seed)
        self.label = np.asarray([s.label for s in self.samples])
        self.seed = seed
        items = [Item("dev", s.label, i) for i, s in enumerate(self.samples)]
        items += [Item("copy", self.samples[i].label, i, str(c)) for c in range(AUGMENT)
                  for i in np.flatnonzero(~self.test)]
        rng = np.random.default_rng(seed)
        changed: set[tuple[int, str]] = set()
        for unit in sorted(units):  # held-out units after every harmless change
            rows = np.flatnonzero(np.asarray([(f"{REAL}/{s.source}" if s.label == REAL else s.label) == unit
                                              for s in self.samples]))
            changed |= {(int(i), c) for i in rng.permutation(rows)[:CHANGED_PER_UNIT] for c in HARMLESS}
        for label in sorted(set(self.label)):  # closed-set test images after the closed-set changes
            rows = np.flatnonzero(self.test & (self.label == label))
            changed |= {(int(i), c) for i in rng.permutation(rows)[:CLOSED_CHANGED_PER_CLASS] for c in CLOSED_CHANGES}
        items += [Item("change", self.samples[i].label, i, c) for i, c in sorted(changed)]
        if val is not None and val.is_dir():
            for folder in sorted(p for p in val.iterdir() if p.is_dir()):
                for f in walk_files(folder):
                    items.append(Item("val", folder.name, path=f))
                    if folder.name.startswith("bing"):
                        items.append(Item("val_nologo", folder.name, path=f))
        for case, photos in field_cases().items():
            items += [Item("field", REAL, change=case, image=im) for im in photos.values()]
        self.items = items
        self.kind = np.asarray([it.kind for it in items])
        self.item_label = np.asarray([it.label for it in items])
        self.item_sample = np.asarray([it.sample for it in items])
        self.item_change = np.asarray([it.change for it in items])
        self.item_fold = np.where(self.item_sample >= 0, self.fold[self.item_sample], -1)
        self.item_test = np.where(self.item_sample >= 0, self.test[self.item_sample], False)
        self.grayscale: list[bool] = []  # input facts, filled by extract
        self.short_side: list[int] = []
        self.colours: list[int | None] = []
        self.item_unit = np.asarray([
            "" if it.sample < 0 else (f"{REAL}/{self.samples[it.sample].source}" if it.label == REAL else it.label)
            for it in items])

    def materialize(self, item: Item) -> Image.Image:
        """The pixels of ``item``."""
        if item.kind == "field":
            return item.image
        if item.kind in ("val", "val_nologo"):
            image = load_image(item.path)
            if item.kind == "val":
                return image
            w, h = image.size
            return image.crop((round(w * BING_LOGO_CROP), 0, w, round(h * (1 - BING_LOGO_CROP))))
        sample = self.samples[item.sample]
        if item.kind == "copy":
            return ChangedImages(self.samples, int(item.change), self.seed)[item.sample]
        image = sample.image()
        image = image if isinstance(image, Image.Image) else load_image(image)
        if item.kind == "dev":
            return image
        with Image.open(sample.path) as im:
            fmt = im.format
        return harmless_change(image, item.change, fmt)


def pixel_key(image: Image.Image) -> str:
    """Cache key of an image's decoded pixels (mode, size and bytes)."""
    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:40]


def needed_pairs(bench: Benchmark, i: int) -> list[int]:
    """The pair networks item ``i`` is ever read through: a training image of fold ``j`` (or its copy) only
    through the networks that held ``j`` out (out of fold for the other outer folds, the inner ensemble of
    outer fold ``j``); every other item through all of them."""
    if bench.kind[i] in ("dev", "copy") and not bench.item_test[i]:
        j = int(bench.item_fold[i])
        return [k for k, pair in enumerate(pairs()) if j in pair]
    return list(range(len(pairs())))


def extract(bench: Benchmark, cache: FeatureCache, before: bool, batch_size: int = 16
            ) -> tuple[np.ndarray, list[np.ndarray], dict[int, np.ndarray]]:
    """``(base features (n_items, d), raw outputs of the pair networks per item ((n_pairs, n_views, 2) each; NaN
    for a network the item is never read through, :func:`needed_pairs`), {outer fold: the 'before' network's
    features (n_items, d'), zeros for copies and changes, which its column does not score}``, and each item's
    input facts into ``bench.grayscale`` / ``bench.short_side``. Every image is made and cropped once for all
    networks, a batch at a time; what the cache holds is not computed again."""
    base = create_backbone(BASE)
    bundle = create_backbone(f"forensic_ensemble:{NETWORKS / 'pairs'}")
    olds = {o: create_backbone(f"residual_cnn:{before_network(o)}") for o in range(N_FOLDS)} if before else {}
    base_key, pair_key = backbone_key(base), backbone_key(bundle)
    old_keys = {o: backbone_key(b) for o, b in olds.items()}
    n, n_pairs = len(bench.items), len(pairs())
    features, raw = [], []
    old: dict[int, list] = {o: [] for o in olds}
    for start in range(0, n, batch_size):
        rows = range(start, min(start + batch_size, n))
        pixels = [bench.materialize(bench.items[i]) for i in rows]
        hashes = [pixel_key(im) for im in pixels]
        bench.grayscale += [is_grayscale(im) for im in pixels]
        bench.short_side += [min(im.size) for im in pixels]
        bench.colours += [distinct_colours(im) for im in pixels]
        views: list | None = None

        def run(todo: list[int], forward) -> list[np.ndarray]:
            nonlocal views
            views = views or [base.transform(im) for im in pixels]
            with torch.inference_mode():
                return forward(torch.cat([views[t] for t in todo]), [len(views[t]) for t in todo])

        got = [cache.get(f"{h}-{base_key}") for h in hashes]
        todo = [t for t, g in enumerate(got) if g is None]
        if todo:
            for t, row in zip(todo, run(todo, lambda x, c: list(base.encode(x, c).numpy()))):
                cache.put(f"{hashes[t]}-{base_key}", row)
                got[t] = row
        features += got
        outs = [np.full((n_pairs, 0, 2), np.nan) for _ in rows]  # widened to the views of the first network read
        for k in range(n_pairs):
            want = [t for t, i in enumerate(rows) if k in needed_pairs(bench, i)]
            part = {t: cache.get(f"{hashes[t]}-{pair_key}-m{k}") for t in want}
            todo = [t for t in want if part[t] is None]
            if todo:
                def member(x, counts, k=k):
                    return [r.numpy()[0] for r in torch.split(bundle.model(bundle.centre_window(x), [k]).float().cpu(),
                                                             counts, dim=1)]
                for t, row in zip(todo, run(todo, member)):
                    cache.put(f"{hashes[t]}-{pair_key}-m{k}", row)
                    part[t] = row
            for t, row in part.items():
                if outs[t].shape[1] != len(row):
                    outs[t] = np.full((n_pairs, len(row), 2), np.nan)
                outs[t][k] = row
        raw += outs
        for o, b in olds.items():
            want = [t for t, i in enumerate(rows) if bench.kind[i] in ("dev", "val", "val_nologo", "field")]
            part = {t: cache.get(f"{hashes[t]}-{old_keys[o]}") for t in want}
            todo = [t for t in want if part[t] is None]
            if todo:
                for t, row in zip(todo, run(todo, lambda x, c, b=b: list(b.encode(x, c).numpy()))):
                    cache.put(f"{hashes[t]}-{old_keys[o]}", row)
                    part[t] = row
            old[o] += [part.get(t) for t in range(len(rows))]
        print(f"features: {rows.stop}/{n}", file=sys.stderr, flush=True)
    dim = {o: next(len(r) for r in v if r is not None) for o, v in old.items()}
    stacked = {o: np.stack([r if r is not None else np.zeros(dim[o], np.float32) for r in v]) for o, v in old.items()}
    return np.stack(features), raw, stacked


def ensemble_features(raw: list[np.ndarray], members: list[list[int]]) -> np.ndarray:
    """The ensemble part's features of each item from its members' raw outputs (as ``EnsembleBackbone.encode``
    computes them), ``members[i]`` the networks averaged for item ``i``."""
    return np.concatenate([pool_layers(ensemble_layers(torch.from_numpy(r[m])), r.shape[1]).numpy()
                           for r, m in zip(raw, members)])


def binomial_check(count: int, n: int, stated: float) -> dict[str, float]:
    """Observed rate and the one-sided p-value of seeing ``count`` or more of ``n`` if the rate were ``stated``."""
    return {"observed": count / max(n, 1), "count": count, "n": n, "stated": stated,
            "p_value": float(binom.sf(count - 1, n, stated)) if n else 1.0}


def oscr(correct: np.ndarray, known_unknown_score: np.ndarray, unknown_score: np.ndarray) -> float:
    """Area under the correct-classification-rate vs false-positive-rate curve (Dhamija et al. 2018)."""
    thresholds = np.unique(np.concatenate([known_unknown_score, unknown_score]))
    ccr = [(correct & (known_unknown_score <= t)).mean() for t in thresholds]
    fpr = [(unknown_score <= t).mean() for t in thresholds]
    return float(np.trapezoid([0.0, *ccr], [0.0, *fpr]))


def shares(labels: np.ndarray, known: list[str]) -> dict[str, float]:
    """Shares of ``labels``: flagged (a generator or ``unknown``), real, uncertain, unknown, a known generator."""
    if not len(labels):
        return {}
    generators = [c for c in known if c != REAL]
    return {"flagged": float(((labels != REAL) & (labels != UNCERTAIN)).mean()),
            "called_real": float((labels == REAL).mean()), "uncertain": float((labels == UNCERTAIN).mean()),
            "called_unknown": float((labels == UNKNOWN).mean()),
            "known_label": float(np.isin(labels, generators).mean())}


def real_shares(labels: np.ndarray) -> dict[str, float]:
    if not len(labels):
        return {}
    return {"kept_real": float((labels == REAL).mean()), "uncertain": float((labels == UNCERTAIN).mean()),
            "called_synthetic": float(((labels != REAL) & (labels != UNCERTAIN)).mean())}


class Fold:
    """One outer fold: the recipe's head fitted without it, and what it says on what it never saw."""

    def __init__(self, bench: Benchmark, o: int, features: np.ndarray, head: OpenSetHead,
                 train_features: tuple[FeatureBatch, list[FeatureBatch]], by_fold: bool = True,
                 changes: bool = True) -> None:
        self.bench, self.o, self.X = bench, o, features
        b = bench
        self.generators = [u for u in b.folds[o] if not u.startswith(f"{REAL}/")]
        dev = b.kind == "dev"
        self.held = dev & (b.item_fold == o)
        self.held_gen = np.flatnonzero(self.held & (b.item_label != REAL))
        self.held_real = np.flatnonzero(self.held & (b.item_label == REAL))
        self.closed = np.flatnonzero(dev & b.item_test & (b.item_fold != o))
        self.head = fit_head(head, b.samples, *train_features, folds=list(b.fold) if by_fold else None)
        self.changes = changes  # whether the changed images have features (the 'before' column has none)
        self.enrolled: dict[str, dict[str, float]] = {}

    def labels(self, rows: np.ndarray) -> np.ndarray:
        """The full decision's labels: the head's, then an input that cannot be called generated (grayscale, or
        too small for the window) is ``uncertain`` instead (the pipeline's rule)."""
        if not len(rows):
            return np.zeros(0, object)
        labels = self.head.predict(self.X[rows])
        limited = np.asarray([input_limit(self.bench.grayscale[r], self.bench.short_side[r], WINDOW,
                                          self.bench.colours[r]) is not None for r in rows])
        labels[limited & ~np.isin(labels, [REAL, UNCERTAIN])] = UNCERTAIN
        return labels

    def metrics(self, enroll: bool = True) -> tuple[dict[str, float], dict[str, dict], dict[str, dict]]:
        """``(metrics, per held-out unit, closed-set accuracy per class and change)``."""
        b, head, X = self.bench, self.head, self.X
        m: dict[str, float] = {}
        for k, v in shares(self.labels(self.held_gen), head.classes_).items():
            m[f"heldout_generator_{k}"] = v
        for k, v in real_shares(self.labels(self.held_real)).items():
            m[f"heldout_real_{k}"] = v
        units: dict[str, dict] = {}
        for unit in b.folds[self.o]:
            rows = np.flatnonzero(self.held & (b.item_unit == unit))
            units[unit] = (real_shares if unit.startswith(f"{REAL}/") else
                           lambda labels: shares(labels, head.classes_))(self.labels(rows))
        changed = (b.kind == "change") & (b.item_fold == self.o) & self.changes
        for change in HARMLESS:
            rows = np.flatnonzero(changed & (b.item_change == change))
            real, gen = rows[b.item_label[rows] == REAL], rows[b.item_label[rows] != REAL]
            for k, v in real_shares(self.labels(real)).items():
                m[f"heldout_real_after_{change}_{k}"] = v
            for k, v in shares(self.labels(gen), head.classes_).items():
                if k in ("flagged", "called_real", "uncertain"):
                    m[f"heldout_generator_after_{change}_{k}"] = v
        for kind in ("val", "val_nologo"):
            for name in sorted(set(b.item_label[b.kind == kind])):
                rows = np.flatnonzero((b.kind == kind) & (b.item_label == name))
                for k, v in shares(self.labels(rows), head.classes_).items():
                    m[f"{name}{'_nologo' if kind == 'val_nologo' else ''}_{k}"] = v
        for case in CASES:
            rows = np.flatnonzero((b.kind == "field") & (b.item_change == case))
            m[f"field_{case}_real_or_uncertain"] = float(np.isin(self.labels(rows), [REAL, UNCERTAIN]).mean())
        per_class = self._closed_set(m)
        self._open_set(m)
        if head.has_probe:
            m["real_threshold"], m["synthetic_threshold"] = head.real_offset_, head.synthetic_offset_
            m["uncertain_band"] = head.synthetic_offset_ - head.real_offset_
        if enroll:
            self._enrollment(m)
        return m, units, per_class

    def _closed_set(self, m: dict[str, float]) -> dict[str, dict]:
        b, head, X = self.bench, self.head, self.X
        classes = np.asarray(head.classes_)
        per_class: dict[str, dict] = {}

        def accuracy(rows: np.ndarray, key: str) -> None:
            decision = head.decide(X[rows])
            correct = classes[decision.proba.argmax(1)] == b.item_label[rows]
            m[key] = float(correct.mean())
            for c in sorted(set(b.item_label[rows])):
                per_class.setdefault(c, {})[key] = float(correct[b.item_label[rows] == c].mean())
            return decision

        decision = accuracy(self.closed, "closed_set_acc")
        is_gen = b.item_label[self.closed] != REAL
        m["known_test_uncertain"] = float((decision.labels == UNCERTAIN).mean())
        m["known_test_called_unknown"] = float((decision.labels[is_gen] == UNKNOWN).mean())
        m["known_test_generator_called_real"] = float((decision.labels[is_gen] == REAL).mean())
        m["known_test_real_kept_real"] = float((decision.labels[~is_gen] == REAL).mean())
        for change in CLOSED_CHANGES if self.changes else ():
            rows = np.flatnonzero((b.kind == "change") & b.item_test & (b.item_fold != self.o) & (b.item_change == change))
            if len(rows):
                accuracy(rows, f"closed_set_acc_after_{change}")
        return per_class

    def _open_set(self, m: dict[str, float]) -> None:
        b, head, X = self.bench, self.head, self.X
        closed, unk = self.closed, self.held_gen
        is_gen = b.item_label[closed] != REAL
        decision = head.decide(X[closed])
        s_known, s_unk = decision.unknown_score[is_gen], head.unknown_score(X[unk])
        y = np.r_[np.zeros(len(s_known)), np.ones(len(s_unk))]
        m["auroc_known_vs_unknown_generator"] = float(roc_auc_score(y, np.r_[s_known, s_unk]))
        correct = np.asarray(head.classes_)[decision.proba.argmax(1)][is_gen] == b.item_label[closed][is_gen]
        m["oscr"] = oscr(correct, s_known, s_unk)
        self.roc = roc_curve(y, np.r_[s_known, s_unk])[:2]
        if head.has_probe:
            reals = np.r_[closed[~is_gen], self.held_real]
            fakes = np.r_[closed[is_gen], unk]
            m["real_vs_fake_auroc"] = float(roc_auc_score(np.r_[np.zeros(len(reals)), np.ones(len(fakes))],
                                                          head.synthetic_score(X[np.r_[reals, fakes]])))

    def _enrollment(self, m: dict[str, float]) -> None:
        """Each held-out generator and each val_unseen generator enrolled from 5 and 10 of its images."""
        b, head, X = self.bench, self.head, self.X
        rng = np.random.default_rng(self.o)
        reals = np.r_[self.held_real, self.closed[b.item_label[self.closed] == REAL]]
        targets = [(g, self.held_gen[b.item_label[self.held_gen] == g], "enroll") for g in self.generators]
        targets += [(g, np.flatnonzero((b.kind == "val") & (b.item_label == g)), "val_enroll")
                    for g in sorted(set(b.item_label[b.kind == "val"]))]
        classes = np.asarray(head.classes_)
        before = classes[head.decide(X[self.closed]).proba.argmax(1)] == b.item_label[self.closed]
        results: dict[str, list[float]] = {}
        for g, rows, prefix in targets:
            groups = np.asarray([b.samples[b.item_sample[r]].group if b.item_sample[r] >= 0 else str(r) for r in rows])
            order = rng.permutation(np.unique(groups))
            for k in SHOTS:
                shots, count = [], 0
                for group in order:  # whole prompt groups, until k images
                    take = rows[groups == group][: k - count]
                    shots += list(take)
                    count += len(take)
                    if count >= k:
                        break
                rest = rows[~np.isin(groups, groups[np.isin(rows, shots)])]
                if len(rest) < 2:
                    continue
                enrolled = head.clone().enroll(X[shots], f"new_{g}")
                labels = enrolled.predict(X[rest])
                after = enrolled.decide(X[self.closed])
                values = {"recall": float((labels == f"new_{g}").mean()),
                          "real_or_uncertain": float(np.isin(labels, [REAL, UNCERTAIN]).mean()),
                          "real_pulled_in": float((enrolled.predict(X[reals]) == f"new_{g}").mean()),
                          "closed_set_acc_before": float(before.mean()),
                          "closed_set_acc_after": float((np.asarray(enrolled.classes_)[after.proba.argmax(1)]
                                                         == b.item_label[self.closed]).mean())}
                negatives = np.r_[self.closed, reals]
                score = enrolled.class_log_odds(X[np.r_[rest, negatives]])[:, enrolled.classes_.index(f"new_{g}")]
                values["verify_auc"] = float(roc_auc_score(np.r_[np.ones(len(rest)), np.zeros(len(negatives))], score))
                for key, v in values.items():
                    results.setdefault(f"{prefix}{k}_{key}", []).append(v)
                    self.enrolled.setdefault(g, {})[f"{k}_shots_{key}"] = v
        m.update({key: float(np.mean(v)) for key, v in results.items()})


def rate_checks(runs: dict[int, Fold]) -> dict[str, dict[str, float]]:
    """The inner heads' stated rates against what they did on the held-out sources, pooled over the folds."""
    real_false = sum(int(np.sum(~np.isin(f.labels(f.held_real), [REAL, UNCERTAIN]))) for f in runs.values())
    n_real = sum(len(f.held_real) for f in runs.values())
    missed = sum(int(np.sum(f.labels(f.held_gen) == REAL)) for f in runs.values())
    n_gen = sum(len(f.held_gen) for f in runs.values())
    head = next(iter(runs.values())).head
    return {"real_false_rate": binomial_check(real_false, n_real, head.real_false_rate),
            "synthetic_miss_rate": binomial_check(missed, n_gen, head.synthetic_miss_rate)}


def print_table(columns: dict[str, dict[str, float]], keys: list[str], title: str) -> None:
    """A Markdown table: one row per metric, one column per run."""
    print(f"\n### {title}\n\n| metric | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{r[k]:.3f}" if k in r else "-" for r in columns.values()) + " |")


def mean_of(rows: dict[int, dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    return {k: float(np.mean([r[k] for r in rows.values() if k in r])) for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--val", default=str(Path(DEFAULT_DATA).parent / "val_unseen"))
    parser.add_argument("--zoo", default=None, help="head whose parameters are measured (default: the shipped head)")
    parser.add_argument("--cache-dir", default=str(CACHE / "features"))
    parser.add_argument("--write-zoo", default=None, help="write the metrics and figures into this head's config and card")
    parser.add_argument("--head-params", default="{}", help="JSON overriding the head's parameters")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results_accuracy.json"))
    parser.add_argument("--no-before", action="store_true", help="skip the 'before' column")
    parser.add_argument("--variant", default="crossfit", choices=["crossfit", "calibration_split"],
                        help="crossfit: the shipped recipe; calibration_split: the head fitted only on the closed-set "
                             "test split, which no network saw (its closed-set figures are then in-sample)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    bench = Benchmark(Path(args.data), Path(args.val) if args.val else None, args.seed)
    missing = [p for p in [NETWORKS / "pairs"] + [before_network(o) for o in range(N_FOLDS)] * (not args.no_before)
               if not (p / "model.safetensors").is_file()]
    if missing:
        raise SystemExit(f"networks missing ({missing[0]}...): run python benchmarks/folds.py first")
    base, raw, old = extract(bench, FeatureCache(args.cache_dir), before=not args.no_before)
    print(f"{len(bench.items)} images scored", file=sys.stderr)
    config = zoo.read_config(zoo.resolve(args.zoo or args.write_zoo))
    params = {**config["head"]["params"], **json.loads(args.head_params), "geometry_columns": [0, base.shape[1]]}
    index = {pair: k for k, pair in enumerate(pairs())}
    position = {(k, int(i), c): n for n, (k, i, c) in enumerate(zip(bench.kind, bench.item_sample, bench.item_change))}
    runs: dict[int, Fold] = {}
    for o in range(N_FOLDS):
        inner = [index[tuple(sorted((o, j)))] for j in range(N_FOLDS) if j != o]
        if args.variant == "calibration_split":  # the head fitted only on images no network trained on (the test split)
            train = np.flatnonzero(bench.test & (bench.fold != o))
            members = [inner] * len(bench.items)
        else:
            train = np.flatnonzero(~bench.test & (bench.fold != o))
            is_train = np.isin(bench.kind, ["dev", "copy"]) & ~bench.item_test & ~np.isin(bench.item_fold, [o, -1])
            members = [[index[tuple(sorted((o, int(bench.item_fold[i]))))]] if is_train[i] else inner
                       for i in range(len(bench.items))]  # out of fold for training images, else the inner ensemble
        X = fuse([(base, BASE_LAYERS), (ensemble_features(raw, members), NETWORK_LAYERS)])
        dev = FeatureBatch(X[[position[("dev", s, "")] for s in train]], list(train))
        copies = [] if args.variant == "calibration_split" else \
            [FeatureBatch(X[[position[("copy", s, str(n))] for s in train]], list(train)) for n in range(AUGMENT)]
        runs[o] = Fold(bench, o, X, OpenSetHead(**params), (dev, copies))
        print(f"fold {o} fitted (held out {bench.folds[o]})", file=sys.stderr, flush=True)
    rows, units, per_class, enrolled = {}, {}, {}, {}
    for o, run in runs.items():
        rows[o], u, per_class[o] = run.metrics()
        units.update(u)
        enrolled.update({f"fold {o}: {g}": v for g, v in run.enrolled.items()})
    checks = rate_checks(runs)
    mean = mean_of(rows)
    before_rows = {}
    if not args.no_before:
        before_rows = run_before(bench, base, old)
    print_table({**{f"fold {o}": r for o, r in rows.items()}, "mean": mean,
                 **({"before (mean)": mean_of(before_rows)} if before_rows else {})}, list(mean), "Per fold and mean")
    print_table({u: v for u, v in units.items()}, sorted({k for v in units.values() for k in v}), "Per held-out unit")
    print_table(enrolled, sorted({k for v in enrolled.values() for k in v}), "Enrolled generators")
    print("\nStated rates against the held-out sources (pooled over folds):")
    for name, c in checks.items():
        verdict = "holds" if c["p_value"] >= ALPHA else "NOT held"
        print(f"- {name}: stated {c['stated']:.3f}, observed {c['observed']:.3f} ({c['count']}/{c['n']}), "
              f"p = {c['p_value']:.3f}: {verdict}")
    result = {"folds": bench.folds, "per_fold": {str(o): r for o, r in rows.items()}, "mean": mean,
              "per_unit": units, "closed_set_per_class": {str(o): v for o, v in per_class.items()},
              "enrolled": enrolled,
              "rate_checks": checks, "before": {"per_fold": {str(o): r for o, r in before_rows.items()},
                                                "mean": mean_of(before_rows) if before_rows else {}}}
    Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.write_zoo:
        write_zoo(Path(args.write_zoo), runs, result)
    return 0


def run_before(bench: Benchmark, base: np.ndarray, old: dict[int, np.ndarray]) -> dict[int, dict[str, float]]:
    """The recipe shipped before, per outer fold: its fold network's features (in-sample on its training
    images), a probe without class matches at the old rates, thresholds from the other folds' held-out scores."""
    runs = {}
    for o in range(N_FOLDS):
        X = fuse([(base, BASE_LAYERS), (old[o], NETWORK_LAYERS)])
        train = np.flatnonzero(~bench.test & (bench.fold != o))
        dev_rows = np.flatnonzero(bench.kind == "dev")
        head = OpenSetHead(n_components=384, synthetic_probe=True, real_false_rate=0.05, synthetic_miss_rate=0.05,
                           class_match=False)
        runs[o] = Fold(bench, o, X, head, (FeatureBatch(X[dev_rows[train]], list(train)), []), by_fold=False,
                       changes=False)
    held = {o: (r.head.synthetic_score(r.X[r.held_real]), r.head.synthetic_score(r.X[r.held_gen])) for o, r in runs.items()}
    for o, r in runs.items():  # thresholds from the other folds' held-out scores, as the old benchmark set them
        r.head.calibrate_synthetic(np.concatenate([held[g][0] for g in runs if g != o]),
                                   np.concatenate([held[g][1] for g in runs if g != o]))
    return {o: r.metrics(enroll=True)[0] for o, r in runs.items()}


def write_zoo(folder: Path, runs: dict[int, Fold], result: dict) -> None:
    """Store the metrics, the per-unit and per-class tables, the rate checks and the figures (held-out
    confusion table, known-vs-unknown ROC per fold) in the head's config and card."""
    head, config = zoo.load_head(folder)
    files = figures(runs, result["per_fold"])
    mean = {k: round(v, 4) for k, v in result["mean"].items()}
    config["metrics"] = {**mean, "protocol": "nested leak-free folds (benchmarks/accuracy.py): each outer fold holds "
                                             "out two generators and one to three real-photo collections; the "
                                             "shipped recipe (cross-fitted networks, out-of-fold head, its own "
                                             "thresholds) is run without it and measured on it",
                         "per_fold": {o: {k: round(v, 4) for k, v in r.items()} for o, r in result["per_fold"].items()},
                         "per_unit": {u: {k: round(v, 4) for k, v in r.items()} for u, r in result["per_unit"].items()},
                         "rate_checks": result["rate_checks"],
                         "before": {k: round(v, 4) for k, v in result["before"]["mean"].items()}}
    config["figures"] = sorted(files)
    zoo.save_pretrained(folder, head, flat_backbone_config(config), files=files, **config)
    print(f"metrics written to {folder}", file=sys.stderr)


def figures(runs: dict[int, Fold], rows: dict) -> dict[str, bytes]:
    """Confusion table of the held-out units (labels given to held-out generators and real photos) and the
    known-vs-unknown ROC of every fold, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth, pred = [], []
    for run in runs.values():
        for rows_, name in ((run.held_gen, "held-out generator"), (run.held_real, "held-out real photos")):
            truth += [name] * len(rows_)
            pred += [p if p in (REAL, UNKNOWN, UNCERTAIN) else "known generator" for p in run.labels(rows_)]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    cols = [REAL, UNCERTAIN, UNKNOWN, "known generator"]
    table = np.array([[np.mean([p == c for t, p in zip(truth, pred) if t == row]) for c in cols]
                      for row in ("held-out generator", "held-out real photos")])
    ax.imshow(table, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(2), ["held-out generator", "held-out real photos"])
    for (i, j), v in np.ndenumerate(table):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set_title("Labels given to held-out units (all folds)")
    fig.tight_layout()
    files = {"confusion_matrix.png": _png(fig)}
    fig, ax = plt.subplots(figsize=(6, 5))
    for o, run in runs.items():
        fpr, tpr = run.roc
        ax.plot(fpr, tpr, label=f"fold {o} (AUROC {rows[str(o)]['auroc_known_vs_unknown_generator']:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="known generator taken for unknown (FPR)", ylabel="held-out generator called unknown (TPR)",
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
