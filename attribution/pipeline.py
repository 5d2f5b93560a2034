"""``Attributor``: backbone + head + decision, the one object the CLI, the app and users call."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from .backbones import Backbone, create_backbone
from .constants import CONFIG_NAME, HASHES_NAME, MAX_FRAMES, MIN_IMAGE_SIZE, UNCERTAIN
from .duplicates import ExemplarHashes
from .enrollment import EnrollmentReport, enrolled_config, enrollment_report
from .features import Extracted, FeatureBatch, FeatureCache, FeatureExtractor, Progress
from .heads import OpenSetHead
from .heads.open_set import REASON_FRAMES
from .names import normalize_label
from .outputs import AttributionOutput, EnrollmentOutput, VerificationOutput
from .transform import ImageInput, file_name, load_image
from . import zoo
from .persistence import backbone_section, flat_backbone_config
from .storage import folder_lock
from .verification.blackbox import BlackBoxVerifier

MIN_ENROLL_IMAGES = 3
MAX_ENROLL_IMAGES = 200
EXEMPLAR_DIR = "exemplars"


def backbone_from_config(config: dict[str, Any], device: str | None = None) -> Backbone:
    """The backbone a head was trained on, rebuilt from its config (``backbone`` and ``preprocess_cfg`` parts)."""
    options = dict(config["backbone"])
    return create_backbone(options.pop("id"), preprocess_cfg=config["preprocess_cfg"], device=device, **options)


class Attributor:
    """Attribute, verify and enroll with one backbone and one open-set head.

    Examples
    --------
    >>> attributor = Attributor.from_pretrained()          # doctest: +SKIP
    >>> attributor(["photo.png"])[0].label                  # doctest: +SKIP
    'real'
    """

    def __init__(self, backbone: Backbone, head: OpenSetHead, config: dict[str, Any] | None = None,
                 cache: FeatureCache | None = None, batch_size: int = 16, source: Path | None = None,
                 hashes: ExemplarHashes | None = None, *, min_size: int = MIN_IMAGE_SIZE,
                 max_frames: int = MAX_FRAMES) -> None:
        self.backbone = backbone
        self.head = head
        self.config = dict(config or {})
        self.extractor = FeatureExtractor(backbone, cache, batch_size=batch_size, min_size=min_size)
        self.source = source
        self.hashes = hashes
        self.max_frames = max_frames
        self._pending_files: dict[str, bytes] = {}

    @classmethod
    def from_pretrained(cls, ref: str | os.PathLike | None = None, device: str | None = None,
                        backbone: Backbone | None = None, **kwargs: Any) -> "Attributor":
        """Load a zoo head (name, folder or ``hf-hub:`` id) and the backbone it was trained on.

        Pass ``backbone`` to share an already loaded backbone (it must match the head's config). The
        head's duplicate index (``exemplar_hashes.json``) is read when it has one.
        """
        folder = zoo.resolve(ref)
        head, config = zoo.load_head(folder)
        if backbone is None:
            backbone = backbone_from_config(config, device)
        elif backbone.config() != {k: v for k, v in flat_backbone_config(config).items() if k in backbone.config()}:
            raise zoo.ZooError(f"head {folder.name} was trained on other features than {backbone}")
        return cls(backbone, head, config, source=folder, hashes=zoo.read_hashes(folder), **kwargs)

    @property
    def classes(self) -> list[str]:
        return list(self.head.classes_)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or (self.source.name if self.source else "attribution-head"))

    def features(self, images: Sequence[ImageInput], progress: Progress | None = None,
                 hashes: bool = False) -> FeatureBatch:
        """Backbone features of ``images`` (frame 0; cached by pixel content)."""
        return self.extractor(list(images), progress, hashes=hashes)

    # --------------------------------------------------------------- attribute
    def __call__(self, images: ImageInput | Sequence[ImageInput], progress: Progress | None = None,
                 nearest: int = 0) -> list[AttributionOutput]:
        """Attribute each image: ``real``, a known generator, ``unknown`` (synthetic, from no known generator)
        or ``uncertain`` (no confident answer), with per-class probabilities, scores and the deciding rule
        (all at once; see :meth:`stream`)."""
        return list(self.stream(images, progress, nearest))

    def stream(self, images: ImageInput | Sequence[ImageInput], progress: Progress | None = None,
               nearest: int = 0) -> Iterator[AttributionOutput]:
        """Attribute each image, yielding outputs in input order as each batch is done (bounded memory).

        Up to ``max_frames`` frames of an animated image are judged; frames that disagree make the
        label ``uncertain`` (reason ``frames_disagree``). ``duplicate_of`` is set when the head's
        duplicate index knows the image.
        """
        images = [images] if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)) else list(images)
        head, hashes = self.head, self.hashes  # consistent for the whole call, even if an enrollment swaps them
        for results in self.extractor.stream(images, progress, self.max_frames, hashes=hashes is not None):
            yield from self._attribute(head, hashes, images, results, nearest)

    def _attribute(self, head: OpenSetHead, hashes: ExemplarHashes | None, images: list[ImageInput],
                   results: list[Extracted], nearest: int) -> list[AttributionOutput]:
        """Outputs for one batch of extracted inputs: every judged frame is one row for the head."""
        outputs = [AttributionOutput(file=file_name(images[r.position]), note=r.note) for r in results]
        for out, r in zip(outputs, results):
            out.error, out.error_code, out.skipped = r.error, r.error_code, r.skipped
        judged = [(out, r) for out, r in zip(outputs, results) if r.error is None]
        if not judged:
            return outputs
        X = np.concatenate([r.features for _, r in judged])
        decision = head.decide(X, nearest)
        neighbours = decision.nearest
        start = 0
        for out, r in judged:
            frames = range(start, start + len(r.features))
            start = frames.stop
            labels = [str(decision.labels[i]) for i in frames]
            agree = len(set(labels)) == 1
            out.label = labels[0] if agree else UNCERTAIN
            out.reason = str(decision.reasons[frames.start]) if agree else REASON_FRAMES
            out.known = out.label in head.classes_
            out.scores = _scores(head.classes_, decision.proba[frames].mean(axis=0))
            out.unknown_score = round(float(decision.unknown_score[frames].mean()), 6)
            out.threshold = round(float(decision.unknown_threshold), 6)
            if decision.synthetic_score is not None:
                out.synthetic_score = round(float(decision.synthetic_score[frames].mean()), 6)
                out.synthetic_threshold = round(float(decision.synthetic_threshold), 6)
                out.real_threshold = round(float(decision.real_threshold), 6)
            out.facts = r.facts
            if r.facts.frames > 1:
                out.frames_judged = [{"index": index, "label": label, "scores": _scores(head.classes_, decision.proba[i])}
                                     for index, label, i in zip(r.frame_indices, labels, frames)]
            if neighbours is not None:
                out.nearest = [{"label": c, "id": i, "distance": round(d, 4)} for c, i, d in neighbours[frames.start]]
            if hashes is not None:
                out.duplicate_of = hashes.match(r.facts, r.phash)
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

        The output reports how separable the new generator is (``expected_recall``, ``closest_class``,
        ``closest_class_share``, and a ``warning`` when its images look like a known class); the head
        records them in ``config["enrolled"]`` with its ``base_head``.

        With ``save_to``, the head saved there is re-read, extended and written back under its lock, so
        concurrent enrollments (threads or processes) are all kept; the swap of ``self.head`` is atomic
        for concurrent attribution.
        """
        start = time.perf_counter()
        label = normalize_label(name)
        images = list(images)
        if len(images) > MAX_ENROLL_IMAGES:
            raise ValueError(f"at most {MAX_ENROLL_IMAGES} images per enrollment; got {len(images)}")
        if label in self.head.classes_:
            raise ValueError(f"{label!r} is already in the zoo; remove it first or choose another name")
        batch = self.features(images, progress, hashes=True)
        names = {p: str(file_name(images[p]) or f"image {p + 1}") for p in batch.errors}
        errors = {names[p]: m for p, m in batch.errors.items()}
        error_codes = {names[p]: c for p, c in batch.error_codes.items()}
        if len(batch.index) < MIN_ENROLL_IMAGES:
            raise ValueError(f"enrollment needs at least {MIN_ENROLL_IMAGES} readable images; got "
                             f"{len(batch.index)}" + (f" ({len(errors)} could not be read)" if errors else ""))
        ids = [f"{EXEMPLAR_DIR}/{label}/{i:03d}.jpg" for i in range(len(batch.index))]
        thumbnails = {exemplar: _thumbnail(images[pos]) for pos, exemplar in zip(batch.index, ids)}
        report = EnrollmentReport(0.0, "", 0.0)  # set by apply()
        entries = [ExemplarHashes.entry(exemplar, label, batch.facts[pos], batch.phashes[pos])
                   for pos, exemplar in zip(batch.index, ids)]

        def apply() -> None:
            nonlocal report
            report = enrollment_report(self.head, batch.features, label)
            head = self.head.clone()
            head.enroll(batch.features, label, ids=ids)
            self.hashes = (self.hashes or ExemplarHashes()).extended(entries)
            self._pending_files.update({k: v for k, v in thumbnails.items() if k in head.bank_ids_})
            info = {"n_images": len(batch.index), "display_name": name.strip(),
                    "enrolled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "expected_recall": report.expected_recall, "closest_class": report.closest_class,
                    "closest_class_share": report.closest_class_share}
            self.config = {**enrolled_config(self.config, self.name, label, info), "classes": list(head.classes_)}
            self.head = head

        saved = self._update(apply, save_to)
        return EnrollmentOutput(label, len(batch.index), self.classes, round(time.perf_counter() - start, 3), errors,
                                saved_to=saved, expected_recall=report.expected_recall,
                                closest_class=report.closest_class, closest_class_share=report.closest_class_share,
                                warning=report.warning, error_codes=error_codes)

    def remove(self, name: str, save_to: str | os.PathLike | None = None) -> None:
        """Remove a generator (enrolled or trained; a head keeps at least two classes)."""
        def apply() -> None:
            head = self.head.clone()
            head.remove(name)
            self.hashes = self.hashes.without(name) if self.hashes is not None else None
            self.config = {**self.config, "classes": list(head.classes_),
                           "enrolled": {k: v for k, v in self.config.get("enrolled", {}).items() if k != name}}
            self._pending_files = {k: v for k, v in self._pending_files.items()
                                   if not k.startswith(f"{EXEMPLAR_DIR}/{name}/")}
            self.head = head

        self._update(apply, save_to)

    def _update(self, apply: Callable[[], None], save_to: str | os.PathLike | None) -> str | None:
        """Apply a change in memory, or as a locked read-modify-write of the head saved at ``save_to``."""
        if save_to is None:
            apply()
            return None
        folder = Path(save_to)
        with folder_lock(folder):
            if (folder / CONFIG_NAME).is_file():
                head, config = zoo.load_head(folder)
                if config["backbone"]["id"] != self.backbone.id:
                    raise zoo.ZooError(f"{folder} holds a head for {config['backbone']['id']}, not {self.backbone.id}")
                self.head, self.config, self.source, self.hashes = head, config, folder, zoo.read_hashes(folder)
            apply()
            self._save(folder)
        return str(folder.resolve())

    def exemplar_path(self, exemplar_id: str) -> Path | None:
        """Image file behind a bank exemplar id, when it is on this machine."""
        if not exemplar_id:
            return None
        roots = [self.source] if self.source else []
        data_root = os.environ.get("ATTRIBUTION_DATA") or self.config.get("training", {}).get("data")
        roots += [Path(data_root)] if data_root else []
        for root in roots:
            path = (root / exemplar_id).resolve()
            if root.resolve() in path.parents and path.is_file():
                return path
        return None

    # -------------------------------------------------------------------- save
    def save_pretrained(self, folder: str | os.PathLike, **extra: Any) -> Path:
        """Save the head (with enrolled classes and their exemplar thumbnails) as a zoo folder."""
        folder = Path(folder)
        with folder_lock(folder):
            return self._save(folder, **extra)

    def _save(self, folder: Path, **extra: Any) -> Path:
        files = {}
        copy_from = self.source if self.source and self.source.resolve() != folder.resolve() else None
        if copy_from is not None and (copy_from / EXEMPLAR_DIR).is_dir():
            for path in (copy_from / EXEMPLAR_DIR).rglob("*.jpg"):
                files[str(path.relative_to(copy_from))] = path.read_bytes()
        for figure in self.config.get("figures", []):  # figures travel with the head they were made for
            if copy_from is not None and Path(figure).name == figure and (copy_from / figure).is_file():
                files[figure] = (copy_from / figure).read_bytes()
        files.update(self._pending_files)
        if self.hashes is not None:
            files[HASHES_NAME] = self.hashes.to_bytes()
        keep = {k: v for k, v in self.config.items() if k not in ("format_version", "head", "classes")}
        keep["figures"] = [f for f in keep.get("figures", []) if f in files or (folder / f).is_file()]
        if not keep["figures"]:
            del keep["figures"]
        keep.update(extra)
        keep["name"] = folder.name
        keep.update(backbone_section(self.backbone.config()))
        keep["classes"] = list(self.head.classes_)
        zoo.save_head(folder, self.head, keep, card=self.head.model_card(self.head.to_config(keep)), files=files)
        self._pending_files.clear()
        self.source, self.config = folder, self.head.to_config(keep)
        return folder


def _scores(classes: Sequence[str], proba: np.ndarray) -> dict[str, float]:
    return {c: round(float(p), 6) for c, p in zip(classes, proba)}


def _thumbnail(image: ImageInput, size: int = 160) -> bytes:
    pil = load_image(image)
    pil.thumbnail((size, size))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
