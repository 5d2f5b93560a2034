"""One backbone made of several: each part sees the same preprocessed views, their layers are concatenated.

Id: the parts' ids joined by ``+`` (e.g. ``efficientnet_lite2:imagenet+residual_spectra+residual_cnn:residual-cnn``);
layers are qualified by their part, ``<part id>/<layer>``. So forensic feature sources can be fused with
an ImageNet or a CLIP backbone, and a head records exactly which.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..transform import PreprocessCfg
from .base import Backbone

SEPARATOR = "+"


def split_layers(part_ids: Sequence[str], layers: Sequence[str] | None) -> list[list[str] | None]:
    """Each part's layers from qualified names ``<part id>/<layer>`` (``None``: that part's defaults)."""
    if not layers:
        return [None] * len(part_ids)
    grouped: dict[str, list[str]] = {part: [] for part in part_ids}
    for name in layers:
        part, _, layer = name.rpartition("/")
        if part not in grouped:
            raise ValueError(f"layer {name!r} names no part of this backbone; parts: {list(part_ids)}")
        grouped[part].append(layer)
    return [grouped[part] or None for part in part_ids]


def fuse(blocks: Sequence[tuple[torch.Tensor | np.ndarray, int]]) -> torch.Tensor | np.ndarray:
    """Features of a concatenation from its parts' own features: ``blocks`` holds each part's ``encode`` output
    (unit norm) and its number of layers ``n``; each is scaled by ``sqrt(n / total layers)``, so every layer
    weighs the same and the whole vector has unit norm."""
    total = sum(n for _, n in blocks)
    scaled = [X * (n / total) ** 0.5 for X, n in blocks]
    return torch.cat(scaled, dim=1) if isinstance(scaled[0], torch.Tensor) else np.hstack(scaled)


class ConcatBackbone(Backbone):
    """Concatenation of ``parts`` (built beforehand, sharing this backbone's preprocessing and device).

    Each part encodes the views as it would alone (layers L2-normalised, views averaged) and the parts are
    joined by :func:`fuse`, so ``encode`` is the same contract and a part's features can be computed (and
    cached) on their own.
    """

    family = "concat"

    def __init__(self, parts: Sequence[Backbone], preprocess_cfg: PreprocessCfg | None = None,
                 device: str | torch.device | None = None) -> None:
        if len(parts) < 2:
            raise ValueError("a concatenation needs at least two parts")
        cfg = preprocess_cfg or parts[0].preprocess_cfg
        for part in parts:
            part.set_preprocess(**cfg.to_dict())
        self.parts = list(parts)
        layers = [f"{part.id}/{layer}" for part in parts for layer in part.layers]
        super().__init__(SEPARATOR.join(part.id for part in parts), layers, cfg, device or parts[0].device)

    def set_preprocess(self, **changes: Any) -> None:
        super().set_preprocess(**changes)
        for part in self.parts:
            part.set_preprocess(**changes)

    def extra_config(self) -> dict[str, Any]:
        return {"parts": [{"backbone": part.id, **part.extra_config()} for part in self.parts]}

    def weights_digest(self) -> str:
        return "+".join(part.weights_digest() for part in self.parts).strip("+")

    def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f for part in self.parts for f in part._forward_layers(x.to(part.dtype))]

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, n_views: int | Sequence[int] = 1) -> torch.Tensor:
        return fuse([(part.encode(x, n_views), len(part.layers)) for part in self.parts])
