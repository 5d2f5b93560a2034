"""``Attributor``: backbone + head + decision, the one object the CLI, the app and users call."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .backbones import Backbone, backbone_from_config
from .constants import MAX_ENROLL_IMAGES, MAX_FRAMES, MIN_ENROLL_IMAGES, MIN_IMAGE_SIZE, REAL, UNCERTAIN
from .caveats import caveat
from .duplicates import ExemplarHashes
from .enrollment import EnrollmentReport, enrolled_config, enrollment_report
from .features import FeatureCache, FeatureExtractor
from .head_folder import THUMBNAIL_SIZE, HeadFolder, exemplar_ids, update_saved
from .heads import OpenSetHead
from .heads.decision import (REASON_DISPUTED, REASON_EXACT, REASON_FEW_COLOURS, REASON_FRAMES, REASON_GRAYSCALE,
                             REASON_SMALL, Decision, input_limit)
from .names import normalize_label
from .outputs import JSON_DECIMALS, AttributionOutput, EnrollmentOutput, VerificationOutput
from .inputs import file_name
from .reading import Extracted, FeatureBatch, Progress, Provenance, as_list
from .transform import ImageInput
from . import zoo
from .persistence import flat_backbone_config
from .verification.base import false_match_rate_at
from .verification.blackbox import BlackBoxVerifier


class Attributor:
    """Attribute, verify and enroll with one backbone and one open-set head.

    The head, its config, duplicate index, source folder and the thumbnails of images enrolled since it was loaded
    (``thumbnails``: exemplar id -> JPEG bytes) are one :class:`~attribution.head_folder.HeadFolder`
    (``head_folder``), replaced whole by an enrollment or a removal: attribution running meanwhile uses the
    head it started with.

    Examples
    --------
    >>> attributor = Attributor.from_pretrained()          # doctest: +SKIP
    >>> attributor(["photo.png"])[0].label                  # doctest: +SKIP
    'real'
    """

    def __init__(self, backbone: Backbone, head: OpenSetHead, config: dict[str, Any] | None = None,
                 cache: FeatureCache | None = None, batch_size: int = 16, source: Path | None = None,
                 hashes: ExemplarHashes | None = None, thumbnails: Mapping[str, bytes] | None = None, *,
                 min_size: int = MIN_IMAGE_SIZE, max_frames: int = MAX_FRAMES) -> None:
        self.backbone = backbone
        self.head_folder = HeadFolder(head, dict(config or {}), hashes, source, dict(thumbnails or {}))
        self.extractor = FeatureExtractor(backbone, cache, batch_size=batch_size, min_size=min_size)
        self.max_frames = max_frames

    @classmethod
    def from_pretrained(cls, ref: str | os.PathLike | None = None, device: str | None = None,
                        backbone: Backbone | None = None, **kwargs: Any) -> "Attributor":
        """Load a zoo head (name, folder or ``hf-hub:`` id) and the backbone it was trained on.

        Pass ``backbone`` to share an already loaded backbone (it must match the head's config). The
        head's duplicate index (``exemplar_hashes.json``) is read when it has one.
        """
        folder = zoo.resolve(ref)
        saved = HeadFolder.load(folder)
        if backbone is None:
            backbone = backbone_from_config(saved.config, device)
        elif backbone.config() != {k: v for k, v in flat_backbone_config(saved.config).items()
                                   if k in backbone.config()}:
            raise zoo.ZooError(f"head {folder.name} was trained on other features than {backbone}")
        return cls(backbone, saved.head, saved.config, source=folder, hashes=saved.hashes, **kwargs)

    @property
    def head(self) -> OpenSetHead:
        """The open-set head (replaced, never changed in place, by :meth:`enroll` and :meth:`remove`)."""
        return self.head_folder.head

    @property
    def config(self) -> dict[str, Any]:
        """The head's config (current layout: ``head``, ``backbone``, ``preprocess_cfg``, ``classes``...)."""
        return self.head_folder.config

    @property
    def hashes(self) -> ExemplarHashes | None:
        """The head's duplicate index, if it has one."""
        return self.head_folder.hashes

    @property
    def source(self) -> Path | None:
        """The folder the head was loaded from or last saved to."""
        return self.head_folder.source

    @property
    def classes(self) -> list[str]:
        return list(self.head.classes_)

    @property
    def name(self) -> str:
        return self.head_folder.name

    def features(self, images: Sequence[ImageInput], progress: Progress | None = None,
                 hashes: bool = False, thumbnails: int = 0) -> FeatureBatch:
        """Backbone features of ``images`` (frame 0; cached by pixel content), with their perceptual hashes and
        thumbnails of at most ``thumbnails`` px when asked for (one pass of the input stage)."""
        return self.extractor(list(images), progress, hashes=hashes, thumbnails=thumbnails)

    # --------------------------------------------------------------- attribute
    def __call__(self, images: ImageInput | Sequence[ImageInput], progress: Progress | None = None,
                 nearest: int = 0, provenance: Provenance | None = None) -> list[AttributionOutput]:
        """Attribute each image: ``real``, a known generator, ``unknown`` (synthetic, from no known generator)
        or ``uncertain`` (no confident answer), with per-class probabilities, scores and the deciding rule
        (all at once; see :meth:`stream`)."""
        return list(self.stream(images, progress, nearest, provenance))

    def stream(self, images: ImageInput | Sequence[ImageInput], progress: Progress | None = None,
               nearest: int = 0, provenance: Provenance | None = None) -> Iterator[AttributionOutput]:
        """Attribute each image, yielding outputs in input order as each batch is done (bounded memory).

        Up to ``max_frames`` frames of an animated image are judged; frames that disagree make the
        label ``uncertain`` (reason ``frames_disagree``). ``duplicate_of`` is set when the head's
        duplicate index knows the image. With a ``provenance`` reader, each row also carries the file's
        provenance evidence, read from the bytes that were decoded (the file is read once); it never
        feeds the decision.
        """
        images = as_list(images)
        held = self.head_folder  # the same head and index for the whole call, even if an enrollment replaces them
        for results in self.extractor.stream(images, progress, self.max_frames, hashes=held.hashes is not None,
                                             provenance=provenance):
            yield from self._attribute(held, images, results, nearest)

    def _attribute(self, held: HeadFolder, images: list[ImageInput], results: list[Extracted],
                   nearest: int) -> list[AttributionOutput]:
        """Outputs for one batch of extracted inputs: every judged frame is one row for the head; an exact
        known image is named by its class (reason ``exact_known_image``), its scores still reported; every
        verdict carries the measured caveat of its kind of answer when the head's config holds the metrics
        (an enrolled head: its base head's, and its enrolled classes' own)."""
        head, hashes = held.head, held.hashes
        metrics = held.config.get("metrics") or held.config.get("base_metrics") or {}
        outputs = [r.row(file_name(images[r.position])) for r in results]
        judged = [(out, r) for out, r in zip(outputs, results) if r.error is None]
        if not judged:
            return outputs
        X = np.concatenate([r.features for _, r in judged])
        decision = head.decide(X, nearest)
        neighbours = decision.nearest
        matches = _ClassMatches(head, decision)
        start = 0
        for out, r in judged:
            frames = range(start, start + len(r.features))
            start = frames.stop
            labels = [str(decision.labels[i]) for i in frames]
            agree = len(set(labels)) == 1
            out.label = labels[0] if agree else UNCERTAIN
            out.reason = str(decision.reasons[frames.start]) if agree else REASON_FRAMES
            out.scores = _scores(head.classes_, decision.proba[frames].mean(axis=0))
            out.unknown_score = float(decision.unknown_score[frames].mean())
            out.threshold = float(decision.unknown_threshold)
            if decision.synthetic_score is not None:
                out.synthetic_score = float(decision.synthetic_score[frames].mean())
                out.synthetic_threshold = float(decision.synthetic_threshold)
                out.real_threshold = float(decision.real_threshold)
            out.class_match = matches.row(frames.start)
            if not agree:
                out.disagreement = {"evidence": ["frames"], "detail": "judged frames got " + ", ".join(sorted(set(labels)))}
            elif out.reason == REASON_DISPUTED:
                out.disagreement = _disputed(out, bool(decision.match_inside[frames.start]))
            out.facts = r.facts
            short = min(r.facts.width, r.facts.height)
            limit = input_limit(r.facts.grayscale, short, self.backbone.preprocess_cfg.size, r.colours)
            if limit and out.label not in (REAL, UNCERTAIN):
                why = {REASON_GRAYSCALE: "the image is grayscale", REASON_FEW_COLOURS: f"it has {r.colours} colours",
                       REASON_SMALL: f"its short side is {short} px"}[limit]
                out.disagreement = {"evidence": ["input", "class_match" if out.class_match else "synthetic_score"],
                                    "detail": f"the scores say {out.label}, but {why}, so it is not called generated"}
                out.label, out.reason = UNCERTAIN, limit
            if r.facts.frames > 1:
                out.frames_judged = [{"index": index, "label": label, "scores": _scores(head.classes_, decision.proba[i])}
                                     for index, label, i in zip(r.frame_indices, labels, frames)]
            if neighbours is not None:
                out.nearest = [{"label": c, "id": i, "distance": d} for c, i, d in neighbours[frames.start]]
            if hashes is not None:
                out.duplicate_of = hashes.match(r.facts, r.phash)
                if out.duplicate_of and out.duplicate_of["match"] == "exact" and out.duplicate_of["class"] in head.classes_:
                    out.label, out.reason, out.disagreement = out.duplicate_of["class"], REASON_EXACT, None
            out.known = out.label in head.classes_
            out.caveat = caveat(out.label, out.reason, metrics, held.config.get("enrolled"))
        return outputs

    predict = __call__

    # ------------------------------------------------------------------ verify
    def verify(self, images: Sequence[ImageInput], model: str,
               progress: Progress | None = None) -> list[VerificationOutput]:
        """Black-box verification: was each image made by ``model`` (a class of the head)?

        One row per image (see :meth:`attribution.verification.Verifier.verify`); raises ``ValueError``
        for a class the head does not know.
        """
        return BlackBoxVerifier(self.head, model, extractor=self.extractor).verify(images, progress)

    # ------------------------------------------------------------------ enroll
    def enroll(self, name: str, images: Sequence[ImageInput], progress: Progress | None = None,
               save_to: str | os.PathLike | None = None) -> EnrollmentOutput:
        """Add generator ``name`` from 3-200 sample images; the backbone and the other classes stay as they are.

        The output reports how separable the new generator is (``expected_recall``,
        ``expected_real_or_uncertain``, ``closest_class``, ``closest_class_share``, and a ``warning`` when its
        images look like a known class or too many would not be flagged); the head
        records them in ``config["enrolled"]`` with its ``base_head``.

        With ``save_to``, the head saved there is re-read, extended and written back under its lock, so
        concurrent enrollments (threads or processes) are all kept (:func:`~attribution.head_folder.update_saved`);
        the thumbnails of the images are saved with the head.
        """
        start = time.perf_counter()
        label = normalize_label(name)
        images = list(images)
        if len(images) > MAX_ENROLL_IMAGES:
            raise ValueError(f"at most {MAX_ENROLL_IMAGES} images per enrollment; got {len(images)}")
        if label in self.head.classes_:
            raise ValueError(f"{label!r} is already in the zoo; remove it first or choose another name")
        batch = self.features(images, progress, hashes=True, thumbnails=THUMBNAIL_SIZE)
        names = {p: str(file_name(images[p]) or f"image {p + 1}") for p in batch.errors}
        errors = {names[p]: m for p, m in batch.errors.items()}
        error_codes = {names[p]: c for p, c in batch.error_codes.items()}
        if len(batch.index) < MIN_ENROLL_IMAGES:
            unread = "; ".join(f"{Path(f).name}: {error_codes[f]}" for f in list(errors)[:10])
            raise ValueError(f"enrollment needs at least {MIN_ENROLL_IMAGES} readable images; got "
                             f"{len(batch.index)}" + (f" ({len(errors)} could not be read: {unread}"
                                                      + (", ..." if len(errors) > 10 else "") + ")" if errors else ""))
        ids = exemplar_ids(label, len(batch.index))
        thumbnails = {exemplar: batch.thumbnails[pos] for pos, exemplar in zip(batch.index, ids)}
        report = EnrollmentReport(0.0, "", 0.0)  # set by enrolled()
        entries = [ExemplarHashes.entry(exemplar, label, batch.facts[pos], batch.phashes[pos])
                   for pos, exemplar in zip(batch.index, ids)]

        def enrolled(current: HeadFolder) -> HeadFolder:
            nonlocal report
            report = enrollment_report(current.head, batch.features, label)
            head = current.head.clone().enroll(batch.features, label, ids=ids)
            info = {"n_images": len(batch.index), "display_name": name.strip(),
                    "enrolled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "expected_recall": report.expected_recall, "closest_class": report.closest_class,
                    "closest_class_share": report.closest_class_share,
                    "expected_real_or_uncertain": report.expected_real_or_uncertain}
            config = {**enrolled_config(current.config, current.name, label, info), "classes": list(head.classes_)}
            return current.with_class(head, config, entries, thumbnails)

        saved = self._change(enrolled, save_to)
        return EnrollmentOutput(label, len(batch.index), self.classes, round(time.perf_counter() - start, 3), errors,
                                saved_to=saved, expected_recall=report.expected_recall,
                                closest_class=report.closest_class, closest_class_share=report.closest_class_share,
                                warning=report.warning, error_codes=error_codes,
                                expected_real_or_uncertain=report.expected_real_or_uncertain)

    def remove(self, name: str, save_to: str | os.PathLike | None = None) -> None:
        """Remove a generator (enrolled or trained; a head keeps at least two classes); with ``save_to``, from
        the head saved there, as :meth:`enroll` does."""
        def removed(current: HeadFolder) -> HeadFolder:
            head = current.head.clone().remove(name)
            config = {**current.config, "classes": list(head.classes_),
                      "enrolled": {k: v for k, v in current.config.get("enrolled", {}).items() if k != name}}
            return current.without_class(head, config, name)

        self._change(removed, save_to)

    def _change(self, change: Callable[[HeadFolder], HeadFolder], save_to: str | os.PathLike | None) -> str | None:
        """Apply ``change`` to the head in memory, or to the head saved at ``save_to`` (then its folder)."""
        if save_to is None:
            self.head_folder = change(self.head_folder)
            return None
        self.head_folder = update_saved(save_to, self.head_folder, change, self.backbone.config())
        return str(Path(save_to).resolve())

    def exemplar_path(self, exemplar_id: str) -> Path | None:
        """Image file behind a bank exemplar id, when it is on this machine (see :meth:`HeadFolder.exemplar_path`)."""
        return self.head_folder.exemplar_path(exemplar_id)

    def exemplar_image(self, exemplar_id: str) -> bytes | Path | None:
        """Picture of a bank exemplar: an unsaved thumbnail or a file on this machine (see
        :meth:`HeadFolder.exemplar_image`)."""
        return self.head_folder.exemplar_image(exemplar_id)

    # -------------------------------------------------------------------- save
    def save_pretrained(self, folder: str | os.PathLike, **extra: Any) -> Path:
        """Save the head as a zoo folder, with its duplicate index, the thumbnails of enrolled images and the
        figures of its source folder (``extra``: more config entries)."""
        self.head_folder = self.head_folder.save(folder, self.backbone.config(), **extra)
        return Path(folder)


def _scores(classes: Sequence[str], proba: np.ndarray) -> dict[str, float]:
    return {c: float(p) for c, p in zip(classes, proba)}


def _disputed(out: AttributionOutput, inside: bool) -> dict[str, Any]:
    """Why a class match did not decide an ``uncertain`` row (the scores as the JSON line shows them)."""
    label, score = out.class_match["class"], round(out.synthetic_score, JSON_DECIMALS)
    side = "is below the real threshold" if score < round(out.real_threshold, JSON_DECIMALS) else \
        "lies between the real and the synthetic thresholds"
    if not inside:
        return {"evidence": ["class_match", "class_support", "synthetic_score"],
                "detail": f"{label}'s verification score passes its threshold, but the image lies outside {label}'s "
                          f"own images (farther from their mean than 99 % of them), so the match does not decide; the "
                          f"synthetic score {score:.3f} {side}"}
    return {"evidence": ["class_match", "synthetic_score"],
            "detail": f"{label} matches, while the synthetic score {score:.3f} {side} (this head's matches were not "
                      "calibrated on real photos, so a match alone does not decide)"}


class _ClassMatches:
    """The ``class_match`` of each row of a decision: the matched class furthest above its threshold, with the
    false-match rates at its score on the head's verification negatives and on real photos alone (each class's
    negatives read once per batch)."""

    def __init__(self, head: OpenSetHead, decision: Decision) -> None:
        self.head, self.decision = head, decision
        self._negatives: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def row(self, i: int) -> dict[str, Any] | None:
        d = self.decision
        if d.match_margin is None or d.match_margin[i] < 0:
            return None
        label = str(d.match_class[i])
        if label not in self._negatives:
            self._negatives[label] = (self.head.verification_negatives(label), self.head.real_negatives(label))
        others, real = self._negatives[label]
        score = np.asarray([d.match_score[i]])
        out = {"class": label, "score": float(d.match_score[i]), "threshold": float(d.match_threshold[i]),
               "false_match_rate_at_score": float(false_match_rate_at(others, score)[0])}
        if len(real):
            out["real_false_match_rate_at_score"] = float(false_match_rate_at(real, score)[0])
        return out

