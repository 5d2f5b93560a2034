"""The backbone contract: preprocessed pixels in, L2-normalised multi-layer features out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch

from ..transform import ImageTransform, PreprocessCfg, image_transform


def average_views(feats: torch.Tensor, n_views: int | Sequence[int]) -> torch.Tensor:
    """Per-image mean of view features, re-normalised: ``feats`` holds ``n_views`` consecutive rows per
    image (one count for all images, or one count per image)."""
    counts = [n_views] * (len(feats) // n_views) if isinstance(n_views, int) else list(n_views)
    if all(c == 1 for c in counts):
        return feats
    means = torch.stack([group.mean(dim=0) for group in torch.split(feats, counts)])
    return torch.nn.functional.normalize(means, dim=1)


def pool_layers(layers: Sequence[torch.Tensor], n_views: int | Sequence[int] = 1) -> torch.Tensor:
    """What :meth:`Backbone.encode` makes of its layers' outputs (one ``(n_views_total, d_l)`` tensor per layer):
    each layer L2-normalised, concatenated and scaled to unit norm, the views of each image averaged;
    ``(n_images, sum d_l)`` float32 on CPU."""
    parts = [torch.nn.functional.normalize(f.float(), dim=1) for f in layers]
    return average_views(torch.cat(parts, dim=1) / len(parts) ** 0.5, n_views).cpu()


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Backbone(ABC):
    """A frozen feature extractor.

    Subclasses implement :meth:`_forward_layers`, returning one pooled ``(n, d_l)`` tensor per
    requested layer. :meth:`encode` L2-normalises each layer's vector, concatenates them (scaled so
    the whole vector has unit norm) and averages the views (crops) of each image.
    """

    family: str = ""

    def __init__(self, backbone_id: str, layers: Sequence[str], preprocess_cfg: PreprocessCfg,
                 device: str | torch.device | None = None) -> None:
        self.id = backbone_id
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("at least one layer is needed")
        self.preprocess_cfg = preprocess_cfg
        self.transform: ImageTransform = image_transform(preprocess_cfg)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32

    def set_preprocess(self, **changes: Any) -> None:
        """Change preprocessing fields (e.g. ``n_crops``, ``size``) without reloading the weights."""
        self.preprocess_cfg = PreprocessCfg.from_dict({**self.preprocess_cfg.to_dict(), **changes})
        self.transform = image_transform(self.preprocess_cfg)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in 0-255 (float32) back from a batch ``x`` ``(n, 3, H, W)`` as :meth:`encode` gets it (normalised
        by this backbone's preprocessing mean and std), for features computed on raw pixels."""
        cfg = self.preprocess_cfg
        mean = torch.tensor(cfg.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, device=x.device).view(1, 3, 1, 1)
        return (x.float() * std + mean) * 255.0

    @abstractmethod
    def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pooled features of each layer in ``self.layers`` for a batch ``x`` (n, 3, H, W)."""

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, n_views: int | Sequence[int] = 1) -> torch.Tensor:
        """Features ``(n_images, n_features)`` float32 on CPU for ``x`` holding each image's views in turn
        (``n_views`` per image, or a list of counts, one per image)."""
        x = x.to(self.device, self.dtype, non_blocking=True)
        return pool_layers(self._forward_layers(x), n_views)

    def config(self) -> dict[str, Any]:
        """What a head must record to be used with the same features again."""
        return {"backbone": self.id, "layers": list(self.layers), "preprocess_cfg": self.preprocess_cfg.to_dict(),
                **self.extra_config()}

    def extra_config(self) -> dict[str, Any]:
        """Backbone-specific options that change the features (e.g. pooling)."""
        return {}

    def weights_digest(self) -> str:
        """Hash of trained weights that the id alone does not pin (a network trained here); ``""`` when the id
        does (ImageNet or CLIP weights, weight-free features)."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, layers={list(self.layers)}, device={self.device})"
