"""``Attributor``: backbone + head + decision, the one object the CLI, the app and users call."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .backbones import Backbone, create_backbone
from .constants import CONFIG_NAME
from .enrollment import EnrollmentReport, enrolled_config, enrollment_report, false_match_rate_at
from .features import FeatureBatch, FeatureCache, FeatureExtractor, Progress
from .heads import OpenSetHead
from .names import normalize_label
from .outputs import AttributionOutput, EnrollmentOutput, VerificationOutput
from .transform import ImageInput, file_name, load_image
from . import zoo

MIN_ENROLL_IMAGES = 3
MAX_ENROLL_IMAGES = 200
EXEMPLAR_DIR = "exemplars"


def backbone_from_config(config: dict[str, Any], device: str | None = None) -> Backbone:
    """The backbone a head was trained on, rebuilt from its config."""
    options = {k: config[k] for k in ("pool", "window", "parts") if k in config}
    return create_backbone(config["backbone"], layers=config["layers"], preprocess_cfg=config["preprocess_cfg"],
                           device=device, **options)


class Attributor:
    """Attribute, verify and enroll with one backbone and one open-set head.

    Examples
    --------
    >>> attributor = Attributor.from_pretrained()          # doctest: +SKIP
    >>> attributor(["photo.png"])[0].label                  # doctest: +SKIP
    'real'
    """

    def __init__(self, backbone: Backbone, head: OpenSetHead, config: dict[str, Any] | None = None,
                 cache: FeatureCache | None = None, batch_size: int = 16, source: Path | None = None) -> None:
        self.backbone = backbone
        self.head = head
        self.config = dict(config or {})
        self.extractor = FeatureExtractor(backbone, cache, batch_size=batch_size)
        self.source = source
        self._pending_files: dict[str, bytes] = {}

    @classmethod
    def from_pretrained(cls, ref: str | os.PathLike | None = None, device: str | None = None,
                        backbone: Backbone | None = None, **kwargs: Any) -> "Attributor":
        """Load a zoo head (name, folder or ``hf-hub:`` id) and the backbone it was trained on.

        Pass ``backbone`` to share an already loaded backbone (it must match the head's config).
        """
        folder = zoo.resolve(ref)
        head, config = zoo.load_head(folder)
        if backbone is None:
            backbone = backbone_from_config(config, device)
        elif backbone.config() != {k: config.get(k) for k in backbone.config()}:
            raise zoo.ZooError(f"head {folder.name} was trained on other features than {backbone}")
        return cls(backbone, head, config, source=folder, **kwargs)

    @property
    def classes(self) -> list[str]:
        return list(self.head.classes_)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or (self.source.name if self.source else "attribution-head"))

    def features(self, images: Sequence[ImageInput], progress: Progress | None = None) -> FeatureBatch:
        """Backbone features of ``images`` (cached by pixel content)."""
        return self.extractor(list(images), progress)

    # --------------------------------------------------------------- attribute
    def __call__(self, images: ImageInput | Sequence[ImageInput], progress: Progress | None = None,
                 nearest: int = 0) -> list[AttributionOutput]:
        """Attribute each image: ``real``, a known generator, ``unknown`` (synthetic, from no known generator)
        or ``uncertain`` (no confident answer), with per-class probabilities, scores and the deciding rule."""
        images = [images] if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)) else list(images)
        head = self.head  # one consistent head for the whole call, even if an enrollment swaps it meanwhile
        batch = self.features(images, progress)
        outputs = [AttributionOutput(file=file_name(im)) for im in images]
        for pos, message in batch.errors.items():
            outputs[pos].error = message
        if not batch.index:
            return outputs
        decision = head.decide(batch.features)
        neighbours = head.nearest_exemplars(batch.features, nearest) if nearest else [[] for _ in batch.index]
        for row, pos in enumerate(batch.index):
            out = outputs[pos]
            out.label = str(decision.labels[row])
            out.known = out.label in head.classes_
            out.reason = str(decision.reasons[row])
            out.scores = {c: round(float(p), 6) for c, p in zip(head.classes_, decision.proba[row])}
            out.unknown_score = round(float(decision.unknown_score[row]), 6)
            out.threshold = round(float(decision.unknown_threshold), 6)
            if decision.synthetic_score is not None:
                out.synthetic_score = round(float(decision.synthetic_score[row]), 6)
                out.synthetic_threshold = round(float(decision.synthetic_threshold), 6)
                out.real_threshold = round(float(decision.real_threshold), 6)
            out.note = batch.notes.get(pos)
            out.nearest = [{"label": c, "id": i, "distance": round(d, 4)} for c, i, d in neighbours[row]]
        return outputs

    predict = __call__

    # ------------------------------------------------------------------ verify
    def verify(self, images: Sequence[ImageInput], model: str, progress: Progress | None = None) -> list[VerificationOutput]:
        """Black-box verification: was each image made by ``model`` (a class of the head)?"""
        head = self.head
        if model not in head.classes_:
            raise ValueError(f"unknown model {model!r}; the zoo knows: {', '.join(head.classes_)}")
        images = list(images)
        batch = self.features(images, progress)
        outputs = [VerificationOutput(file=file_name(im), model=model) for im in images]
        for pos, message in batch.errors.items():
            outputs[pos].error = message
        if batch.index:
            scores = head.verification_score(batch.features, model)
            rates = false_match_rate_at(head.verification_negatives(model), scores)
            for pos, score, rate in zip(batch.index, scores, rates):
                out = outputs[pos]
                out.score, out.match = round(float(score), 6), bool(score > 0)
                out.threshold, out.false_match_rate = 0.0, float(head.false_match_rate)
                out.false_match_rate_at_score = round(float(rate), 6)
                out.note = batch.notes.get(pos)
        return outputs

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
        batch = self.features(images, progress)
        errors = {str(file_name(images[p]) or f"image {p + 1}"): m for p, m in batch.errors.items()}
        if len(batch.index) < MIN_ENROLL_IMAGES:
            raise ValueError(f"enrollment needs at least {MIN_ENROLL_IMAGES} readable images; got "
                             f"{len(batch.index)}" + (f" ({len(errors)} could not be read)" if errors else ""))
        ids = [f"{EXEMPLAR_DIR}/{label}/{i:03d}.jpg" for i in range(len(batch.index))]
        thumbnails = {exemplar: _thumbnail(images[pos]) for pos, exemplar in zip(batch.index, ids)}
        report = EnrollmentReport(0.0, "", 0.0)  # set by apply()

        def apply() -> None:
            nonlocal report
            report = enrollment_report(self.head, batch.features, label)
            head = self.head.clone()
            head.enroll(batch.features, label, ids=ids)
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
                                warning=report.warning)

    def remove(self, name: str, save_to: str | os.PathLike | None = None) -> None:
        """Remove a generator (enrolled or trained; a head keeps at least two classes)."""
        def apply() -> None:
            head = self.head.clone()
            head.remove(name)
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
        with zoo.head_lock(folder):
            if (folder / CONFIG_NAME).is_file():
                head, config = zoo.load_head(folder)
                if config.get("backbone") != self.backbone.id:
                    raise zoo.ZooError(f"{folder} holds a head for {config.get('backbone')}, not {self.backbone.id}")
                self.head, self.config, self.source = head, config, folder
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
        with zoo.head_lock(folder):
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
        keep = {k: v for k, v in self.config.items()
                if k not in ("format_version", "head", "head_params", "head_state", "classes")}
        keep["figures"] = [f for f in keep.get("figures", []) if f in files or (folder / f).is_file()]
        if not keep["figures"]:
            del keep["figures"]
        keep.update(extra)
        keep["name"] = folder.name
        keep.update(self.backbone.config())
        config = zoo.build_config(self.head, {}, **keep)
        zoo.save_head(folder, self.head, config, card=zoo.model_card(config), extra_files=files)
        self._pending_files.clear()
        self.source, self.config = folder, config
        return folder


def _thumbnail(image: ImageInput, size: int = 160) -> bytes:
    pil = load_image(image)
    pil.thumbnail((size, size))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
