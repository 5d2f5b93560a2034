"""A small CNN over noise residuals that tells generated pixels from camera pixels.

The input is not the image but two weight-free residuals of it, so content and colour matter less
than the traces left by a generator's last layers:

- NPR, neighbouring-pixel relationships (Tan et al., CVPR 2024): each pixel minus the top-left
  pixel of its 2x2 block, which exposes the correlations an upsampling layer leaves behind;
- a high-pass residual: each pixel minus the mean of its 3x3 neighbourhood.

The trunk is seven 3x3 conv layers (three of stride 2) with batch norm, global average pooling, a
class head (training classes, including the aligned autoencoder twins) and a one-logit synthetic
head. It is fully convolutional, so it is trained on small patches and run on whole crops.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..transform import PreprocessCfg
from .base import Backbone

RESIDUAL_SCALE = 4.0  # residuals of 0-1 pixels are small; this brings them near unit variance
DEFAULT_WIDTHS = (16, 32, 32, 64, 64, 128, 128)
DEFAULT_STRIDES = (1, 2, 1, 2, 1, 2, 1)


def residuals(pixels: torch.Tensor) -> torch.Tensor:
    """NPR and high-pass residuals ``(n, 6, H, W)`` of ``pixels`` ``(n, 3, H, W)`` in 0-255 (H, W even)."""
    if pixels.shape[-1] % 2 or pixels.shape[-2] % 2:
        raise ValueError(f"residuals need even height and width; got {tuple(pixels.shape[-2:])}")
    x = pixels / 255.0
    npr = x - F.interpolate(x[:, :, ::2, ::2], scale_factor=2.0, mode="nearest")
    high_pass = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    return torch.cat([npr, high_pass], dim=1) * RESIDUAL_SCALE


class ResidualCNN(nn.Module):
    """Residual front end + conv trunk; ``forward`` gives ``(embedding, class_logits, synthetic_logit)``.

    Parameters
    ----------
    n_classes : int
        Training classes of the class head (real, generators, autoencoder twins).
    widths, strides : sequences of int
        Output channels and stride of each 3x3 conv layer of the trunk.
    """

    def __init__(self, n_classes: int, widths: Sequence[int] = DEFAULT_WIDTHS,
                 strides: Sequence[int] = DEFAULT_STRIDES) -> None:
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError("widths and strides need one entry per layer")
        layers: list[nn.Module] = []
        channels = 6
        for width, stride in zip(widths, strides):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.trunk = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, n_classes)
        self.synthetic = nn.Linear(channels, 1)
        self.embed_dim = channels

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features ``(n, embed_dim)`` of ``pixels`` ``(n, 3, H, W)`` in 0-255."""
        return self.trunk(residuals(pixels)).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.embed(pixels)
        return e, self.classifier(e), self.synthetic(e)[:, 0]


# ------------------------------------------------------------------ backbone
NETWORK_LAYERS = ("embedding", "logits")
DEFAULT_WINDOW = 128


FAMILIES = {"residual_cnn": "ResidualCNN", "efficientnet_late": "LateEfficientNet"}  # backbone family -> network


def load_network(ref: str, family: str = "residual_cnn") -> tuple[nn.Module, dict]:
    """A network trained by the recipe (eval mode) and its config from a zoo name, folder or ``hf-hub:`` id:
    a :class:`ResidualCNN` for family ``residual_cnn``, a
    :class:`~attribution.backbones.late_efficientnet.LateEfficientNet` for ``efficientnet_late``.
    Only ``config.json`` and ``model.safetensors`` are read; the config gets ``weights_sha256``, the hash of the
    weights file. Raises ``ZooError`` if they do not fit."""
    import hashlib
    import json

    from safetensors.torch import load

    from ..constants import CONFIG_NAME, WEIGHTS_NAME
    from ..persistence import resolve
    from ..storage import ZooError

    folder = resolve(ref)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        if config.get("network") != FAMILIES[family]:
            raise ZooError(f"{folder} holds no {FAMILIES[family]} network (config 'network' is {config.get('network')!r})")
        if family == "residual_cnn":
            model = ResidualCNN(len(config["classes"]), config["widths"], config["strides"])
        else:
            from .late_efficientnet import LateEfficientNet

            model = LateEfficientNet(len(config["classes"]))
        data = (folder / WEIGHTS_NAME).read_bytes()
        model.load_state_dict(load(data))
        config["weights_sha256"] = hashlib.sha256(data).hexdigest()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ZooError(f"unreadable residual CNN at {folder}: {exc}") from None
    return model.eval(), config


class WindowedNetworkBackbone(Backbone):
    """A network trained here, run on the centre ``window`` px of each view: the layer and window checks, the
    window cut and the weights digest shared by :class:`ResidualCNNBackbone` and the cross-fitted ensemble.
    Subclasses set ``LAYERS`` and load ``model`` and ``network_config`` (with ``weights_sha256``) in
    :meth:`load`. Raises ``ValueError`` for unknown layers or a bad window."""

    LAYERS: tuple[str, ...] = ()

    def __init__(self, backbone_id: str, layers: Sequence[str] | None = None,
                 preprocess_cfg: PreprocessCfg | None = None, window: int = DEFAULT_WINDOW,
                 device: str | torch.device | None = None) -> None:
        layers = tuple(layers or self.LAYERS)
        bad = [name for name in layers if name not in self.LAYERS]
        if bad:
            raise ValueError(f"unknown layers {bad}; choose from {list(self.LAYERS)}")
        if window < 16 or window % 2:
            raise ValueError(f"window must be an even number of pixels >= 16; got {window}")
        super().__init__(backbone_id, layers, preprocess_cfg or PreprocessCfg(), device)
        self.window = window
        self.model, self.network_config = self.load(backbone_id)
        self.model = self.model.to(self.device, self.dtype)

    def load(self, backbone_id: str) -> tuple[nn.Module, dict]:
        raise NotImplementedError

    def extra_config(self) -> dict[str, Any]:
        return {"window": self.window}

    def weights_digest(self) -> str:
        return self.network_config["weights_sha256"]

    def centre_window(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (0-255, in the model's dtype) of the centre ``window`` px (even, at most the view) of ``x``."""
        pixels = self.pixels(x.to(self.device, self.dtype))
        side = min(self.window, pixels.shape[-1], pixels.shape[-2]) // 2 * 2
        top, left = (pixels.shape[-2] - side) // 2, (pixels.shape[-1] - side) // 2
        return pixels[:, :, top:top + side, left:left + side].to(self.dtype)


class ResidualCNNBackbone(WindowedNetworkBackbone):
    """Features of a network trained by the recipe: ``embedding`` (pooled trunk: 128 for the residual CNN)
    and ``logits`` (its class logits followed by its synthetic logit), of the centre ``window`` px of each view.

    Id: ``residual_cnn:<network>`` (or ``efficientnet_late:<network>``, the fine-tuned alternative), the
    network a zoo name (``residual-cnn``), folder or ``hf-hub:`` id.
    """

    family = "residual_cnn"
    LAYERS = NETWORK_LAYERS

    def load(self, backbone_id: str) -> tuple[nn.Module, dict]:
        family, _, ref = backbone_id.partition(":")
        return load_network(ref, family)

    def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        embedding, logits, synthetic = self.model(self.centre_window(x))
        out = {"embedding": embedding.float(), "logits": torch.cat([logits, synthetic[:, None]], dim=1).float()}
        return [out[name] for name in self.layers]
