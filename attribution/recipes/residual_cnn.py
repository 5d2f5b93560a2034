"""Training recipe of the residual CNN (``attribution.backbones.residual_cnn``), from a dev folder.

    python -m attribution train-forensic --data ../shared/data/dev --out zoo/residual-cnn

1. Decode every image of the folder-per-class dataset (pixels only, as attribution does).
2. Make aligned twins of the real photos with four small autoencoders (:mod:`.twins`).
3. Train the CNN on random native-resolution patches with heavy augmentation (JPEG 60-100, resize
   0.5-2x, blur, crops, flips, rot90) applied alike to every class, class-balanced: half the
   batch real photos, half synthetic (generators and twins, uniform over those classes). Loss: the
   class head's cross-entropy plus the synthetic head's binary cross-entropy.
4. Save ``config.json`` (architecture, classes and the whole recipe), ``model.safetensors`` and a card.

Seeded; uses CUDA when present; the training loop stops after ``minutes`` or ``steps``, whichever
comes first (decoding and the twins come on top: a few minutes on a 2-core CPU, see the config's
``seconds``).
Generators or real-photo sources can be left out (``exclude``) to train leak-free benchmark folds.
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.nn import functional as F

from ..backbones.residual_cnn import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResidualCNN
from ..constants import CARD_NAME, CONFIG_NAME, REAL, WEIGHTS_NAME
from ..persistence import NETWORK, card_header, dump_json
from ..storage import atomic_path, write_folder
from ..dataset import Sample, cut_tile, list_samples, real_source, split_groups
from ..transform import ImageDecodeError, load_image
from .twins import make_twins


@dataclass
class RecipeCfg:
    """Every knob of the recipe; stored in the network's ``config.json``."""

    minutes: float = 30.0
    steps: int = 1500
    twin_steps: int = 400
    batch_size: int = 64
    patch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 100)
    p_resize: float = 0.3
    resize_range: tuple[float, float] = (0.5, 2.0)
    p_blur: float = 0.1
    synthetic_weight: float = 1.0
    seed: int = 0
    exclude: list[str] = field(default_factory=list)
    network: str = "residual_cnn"  # or "efficientnet_late", the fine-tuned alternative (measured, not shipped)
    tiles: dict[str, int] = field(default_factory=dict)  # class -> grid side its files are cut into
    loss: str = "ce"  # or "robust": CVaR of the per-patch losses + an AUC loss on the synthetic logit (Santosh et al. 2024)
    sam: bool = False  # sharpness-aware minimisation (two forward-backward passes a step)
    cvar_alpha: float = 0.3  # the hardest share of patches the robust loss averages
    holdout_fraction: float = 0.0  # share of each class's groups left out (the benchmarks' closed-set test split)
    holdout_seed: int = 0


def load_dataset(root: str | os.PathLike, log: Callable[[str], None] = print,
                 tiles: dict[str, int] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Decoded images per class of a folder-per-class dataset: ``{class: {name: uint8 (H, W, 3)}}``, the name
    being the file name (``<file name>#<tile>`` for the tiles of a tiled class); images under 64 px skipped."""
    data: dict[str, dict[str, np.ndarray]] = {}
    decoded: dict[Path, np.ndarray | None] = {}
    for sample in list_samples(root, tiles):
        if sample.path not in decoded:
            try:
                decoded = {sample.path: np.asarray(load_image(sample.path))}  # a file's tiles are consecutive
            except ImageDecodeError as exc:  # a walked file that is no image, or a broken one
                log(f"skipped {sample.path.name}: {exc}")
                decoded = {sample.path: None}
        image = decoded[sample.path]
        if image is None:
            continue
        if sample.tile is not None:
            image = np.asarray(cut_tile(Image.fromarray(image), sample.tile, sample.grid))
        if min(image.shape[:2]) >= 64:
            data.setdefault(sample.label, {})[sample_name(sample)] = image
    return data


def sample_name(sample: Sample) -> str:
    """The key of a sample in :func:`load_dataset`'s dict of its class."""
    return Path(sample.id).name


def holdout_names(root: str | os.PathLike, cfg: RecipeCfg) -> set[tuple[str, str]]:
    """``(class, name)`` of the samples ``cfg`` leaves out as the closed-set test split (none at fraction 0)."""
    if cfg.holdout_fraction <= 0:
        return set()
    samples = list_samples(root, cfg.tiles)
    held = split_groups(samples, cfg.holdout_fraction, cfg.holdout_seed)
    return {(s.label, sample_name(s)) for s, h in zip(samples, held) if h}


def with_twins(data: dict[str, dict[str, np.ndarray]], cfg: RecipeCfg, device: torch.device,
               cache: Path | None = None, log: Callable[[str], None] = print) -> dict[str, dict[str, np.ndarray]]:
    """``data`` plus the twin classes of every real photo (made once, then read from ``cache`` if given)."""
    names = sorted(data[REAL])
    path = cache / f"twins-{cfg.twin_steps}-{cfg.seed}-{len(names)}.npz" if cache else None
    if path is not None and path.is_file():
        stored = np.load(path, allow_pickle=False)
        twins = {key.split("/")[0]: {} for key in stored.files}
        for key in stored.files:
            kind, name = key.split("/", 1)
            twins[kind][name] = stored[key]
    else:
        made = make_twins([data[REAL][n] for n in names], cfg.twin_steps, cfg.seed, device, log)
        twins = {kind: dict(zip(names, images)) for kind, images in made.items()}
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **{f"{k}/{n}": im for k, v in twins.items() for n, im in v.items()})
    return {**data, **twins}


def leave_out(data: dict[str, dict[str, np.ndarray]], exclude: list[str],
              names: set[tuple[str, str]] = frozenset()) -> dict[str, list[np.ndarray]]:
    """Images per class without the ``exclude``d classes and real-photo sources (``real/<source>``) and
    without the ``(class, name)`` samples of ``names``; a left-out photo's twins are left out with it."""
    sources = {e.split("/", 1)[1] for e in exclude if e.startswith(f"{REAL}/")}
    real_names = {name for label, name in names if label == REAL}
    out = {}
    for label, images in data.items():
        if label in exclude:
            continue
        twin_or_real = label == REAL or label.startswith("twin_")
        kept = [im for name, im in images.items()
                if not (twin_or_real and (real_source(name) in sources or name in real_names))
                and (label, name) not in names]
        if kept:
            out[label] = kept
    return out


def _augment(image: np.ndarray, cfg: RecipeCfg, rng: np.random.Generator) -> np.ndarray:
    """One ``cfg.patch``-px training patch of ``image`` after random resize, blur, JPEG, crop, flip and rot90."""
    p = cfg.patch
    scale = math.exp(rng.uniform(*np.log(cfg.resize_range))) if rng.random() < cfg.p_resize else 1.0
    side = min(int(math.ceil((p + 16) / scale)) + 2, *image.shape[:2])
    y, x = rng.integers(0, image.shape[0] - side + 1), rng.integers(0, image.shape[1] - side + 1)
    region = Image.fromarray(image[y:y + side, x:x + side])
    if scale != 1.0:
        target = max(p, round(side * scale))
        region = region.resize((target, target), Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    if rng.random() < cfg.p_blur:
        region = region.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < cfg.p_jpeg:
        buf = io.BytesIO()
        region.save(buf, format="JPEG", quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
        region = Image.open(buf).convert("RGB")
    arr = np.asarray(region)
    y, x = rng.integers(0, arr.shape[0] - p + 1), rng.integers(0, arr.shape[1] - p + 1)
    arr = arr[y:y + p, x:x + p]
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return np.rot90(arr, int(rng.integers(4)))


class PatchSampler:
    """Class-balanced batches: half real patches, half synthetic (uniform over the synthetic classes)."""

    def __init__(self, data: dict[str, list[np.ndarray]], cfg: RecipeCfg) -> None:
        if REAL not in data:
            raise ValueError("the dataset needs real photos")
        self.classes = sorted(data)
        self.data, self.cfg = data, cfg
        self.synthetic = [c for c in self.classes if c != REAL]
        self.rng = np.random.default_rng(cfg.seed)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pixels (n, 3, p, p) in 0-255, class codes (n,), synthetic targets (n,))``."""
        n, rng = self.cfg.batch_size, self.rng
        names = [REAL if i < n // 2 else self.synthetic[rng.integers(len(self.synthetic))] for i in range(n)]
        patches = [_augment(self.data[c][rng.integers(len(self.data[c]))], self.cfg, rng) for c in names]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(patches))).permute(0, 3, 1, 2).float()
        codes = torch.tensor([self.classes.index(c) for c in names])
        return x, codes, torch.tensor([float(c != REAL) for c in names])


def build_network(name: str, n_classes: int) -> torch.nn.Module:
    """The network the recipe trains: ``residual_cnn`` (:class:`ResidualCNN`, shipped) or ``efficientnet_late``
    (:class:`~attribution.backbones.late_efficientnet.LateEfficientNet`, measured against it)."""
    if name == "residual_cnn":
        return ResidualCNN(n_classes)
    if name == "efficientnet_late":
        from ..backbones.late_efficientnet import LateEfficientNet

        return LateEfficientNet(n_classes)
    raise ValueError(f"unknown network {name!r}; choose residual_cnn or efficientnet_late")


def patch_loss(model: torch.nn.Module, x: torch.Tensor, codes: torch.Tensor, synthetic: torch.Tensor,
               cfg: RecipeCfg) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, class logits)`` of a batch: the class cross-entropy plus the synthetic head's binary
    cross-entropy (``loss="ce"``), or with ``loss="robust"`` the mean of the hardest ``cvar_alpha`` share of
    those per-patch losses (CVaR) plus a squared-hinge AUC loss between synthetic and real patches
    (Santosh et al. 2024, arXiv 2404.12908). Raises ``ValueError`` for another loss."""
    _, logits, synthetic_logit = model(x)
    per_patch = F.cross_entropy(logits, codes, reduction="none") + cfg.synthetic_weight * \
        F.binary_cross_entropy_with_logits(synthetic_logit, synthetic, reduction="none")
    if cfg.loss == "ce":
        return per_patch.mean(), logits
    if cfg.loss != "robust":
        raise ValueError(f"loss must be 'ce' or 'robust', not {cfg.loss!r}")
    k = max(1, int(round(cfg.cvar_alpha * len(per_patch))))
    gap = synthetic_logit[synthetic > 0.5][:, None] - synthetic_logit[synthetic < 0.5][None, :]
    return per_patch.topk(k).values.mean() + torch.clamp(1.0 - gap, min=0.0).pow(2).mean(), logits


def sam_step(model: torch.nn.Module, loss: Callable[[], torch.Tensor], rho: float = 0.05) -> None:
    """Sharpness-aware minimisation (Foret et al. 2021): with the gradients of the current loss in place, move the
    weights by ``rho`` along them, take the gradients of ``loss()`` there, and move back; the optimiser then
    steps with those gradients."""
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params)) + 1e-12
        shifts = [rho * p.grad / norm for p in params]
        for p, e in zip(params, shifts):
            p.add_(e)
    model.zero_grad(set_to_none=True)
    loss().backward()
    with torch.no_grad():
        for p, e in zip(params, shifts):
            p.sub_(e)


def train_residual_cnn(data_root: str | os.PathLike, cfg: RecipeCfg, device: str | None = None,
                       cache: Path | None = None, log: Callable[[str], None] = print,
                       decoded: dict[str, dict[str, np.ndarray]] | None = None) -> tuple[torch.nn.Module, dict]:
    """Run the recipe; returns the network (eval mode, on CPU) and its ``config.json`` content.

    ``cache`` keeps the twins between runs (benchmark folds); ``decoded`` passes an already decoded
    :func:`load_dataset` of ``data_root`` (with its twins, when :func:`with_twins` added them).
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    decoded = decoded if decoded is not None else load_dataset(data_root, log, cfg.tiles)
    if cfg.twin_steps > 0 and not any(label.startswith("twin_") for label in decoded):
        decoded = with_twins(decoded, cfg, dev, cache, log)
    data = leave_out(decoded, cfg.exclude, holdout_names(data_root, cfg))
    sampler = PatchSampler(data, cfg)
    model = build_network(cfg.network, len(sampler.classes)).to(dev)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    budget = cfg.minutes * 60.0
    train_start, step, seen = time.perf_counter(), 0, []
    model.train()
    while step < cfg.steps:
        elapsed = time.perf_counter() - train_start
        if elapsed > budget:
            break
        progress = min(1.0, max(elapsed / max(budget, 1e-9), step / cfg.steps))
        for group in optimiser.param_groups:  # cosine decay over the step or time budget, whichever ends first
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
        x, codes, synthetic = (t.to(dev) for t in sampler.batch())
        optimiser.zero_grad(set_to_none=True)
        loss, logits = patch_loss(model, x, codes, synthetic, cfg)
        loss.backward()
        if cfg.sam:
            sam_step(model, lambda: patch_loss(model, x, codes, synthetic, cfg)[0])
        optimiser.step()
        seen.append(((logits.argmax(1) == codes).float().mean().item(), loss.item()))
        step += 1
        if step % 200 == 0:
            acc, avg = np.mean(seen[-200:], axis=0)
            log(f"step {step}: loss {avg:.3f}, patch accuracy {acc:.3f}, {time.perf_counter() - start:.0f} s")
    model = model.eval().cpu()
    acc, avg = np.mean(seen[-200:], axis=0) if seen else (float("nan"), float("nan"))
    shape = {"widths": list(DEFAULT_WIDTHS), "strides": list(DEFAULT_STRIDES)} if isinstance(model, ResidualCNN) else {}
    config = {"network": type(model).__name__, "classes": sampler.classes, **shape,
              "recipe": {**asdict(cfg), "data": str(Path(data_root).resolve().name), "steps_done": step,
                         "seconds": round(time.perf_counter() - start, 1), "device": dev.type,
                         "final_patch_accuracy": round(float(acc), 4), "final_loss": round(float(avg), 4),
                         "images_per_class": {c: len(v) for c, v in data.items()}}}
    return model, config


NETWORK_CARD = card_header("image-forensics", "synthetic-image-detection", license="apache-2.0") + """
# {name}

Residual CNN (NPR + high-pass residuals, Tan et al. 2024) trained by `attribution`'s recipe to tell
generated pixels from camera pixels; used as a feature source (backbone `residual_cnn:{name}`).

Classes of its training head: {classes}.

## Recipe
```json
{recipe}
```
"""


def write_network(folder: str | os.PathLike, state: dict[str, torch.Tensor], config: dict, card: str) -> Path:
    """Write a network folder (``config.json`` with ``kind: network``, ``model.safetensors``, ``README.md``
    ``card``), atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_bytes(dump_json({**config, "kind": NETWORK, "name": folder.name}))
        (tmp / CARD_NAME).write_text(card)

    return write_folder(folder, write)


def save_network(folder: str | os.PathLike, model: ResidualCNN, config: dict) -> Path:
    """Write the network as a zoo folder (:func:`write_network`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = NETWORK_CARD.format(name=Path(folder).name, classes=", ".join(config["classes"]),
                               recipe=json.dumps(config["recipe"], indent=2, sort_keys=True))
    return write_network(folder, state, config, card)
