"""CLIP image towers loaded through open_clip, with the CLS token of intermediate blocks as features.

Cioni et al. (2024) found the CLS tokens of intermediate ViT blocks attribute generators better
than the final embedding, so the default takes every block from the middle to the last, plus
``embed``. Ids are open_clip's own: ``<model>:<pretrained tag or checkpoint file>``,
``hf-hub:org/repo`` or ``local-dir:/path``.
"""
from __future__ import annotations

from typing import Sequence

import open_clip
import torch
from open_clip.factory import parse_model_name
from open_clip.transformer import VisionTransformer

from ..transform import PreprocessCfg
from .base import Backbone

EMBED = "embed"


def parse_backbone_id(backbone_id: str) -> tuple[str, str | None]:
    """``(model name, pretrained tag or checkpoint)`` for open_clip; schema ids (``hf-hub:``, ``local-dir:``) pass whole."""
    schema, _ = parse_model_name(backbone_id)
    if schema:
        return backbone_id, None
    name, _, pretrained = backbone_id.partition(":")
    if not name or not pretrained:
        raise ValueError(f"CLIP backbone id {backbone_id!r} must be '<model>:<pretrained tag or checkpoint "
                         f"path>', 'hf-hub:org/repo' or 'local-dir:/path'")
    return name, pretrained


def load_open_clip_model(backbone_id: str) -> torch.nn.Module:
    """The whole CLIP model of ``backbone_id`` with its pretrained weights, on CPU in fp32 and eval mode.

    Raises ``ValueError`` for a malformed id and ``RuntimeError`` naming the id when the weights
    cannot be loaded (open_clip is asked to require them, so there is no silent random init).
    """
    name, pretrained = parse_backbone_id(backbone_id)
    try:
        model = open_clip.create_model_from_pretrained(name, pretrained, device="cpu", return_transform=False)
    except Exception as exc:
        raise RuntimeError(f"cannot load CLIP backbone {backbone_id!r}: {exc}") from exc
    return model.eval()


def load_open_clip_visual(backbone_id: str) -> torch.nn.Module:
    """The image tower of :func:`load_open_clip_model` (the text tower is freed)."""
    return load_open_clip_model(backbone_id).visual.eval()


def default_preprocess_cfg(visual: torch.nn.Module) -> PreprocessCfg:
    """Size, mean, std and interpolation of the preprocessing open_clip attached to ``visual``."""
    cfg = visual.preprocess_cfg
    size = cfg["size"]
    if not isinstance(size, int):
        if size[0] != size[1]:
            raise ValueError(f"only square inputs are supported, not {tuple(size)}")
        size = size[0]
    return PreprocessCfg(size=size, mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"],
                         resize_mode="crop", n_crops=5)


class CLIPBackbone(Backbone):
    """CLS tokens of chosen visual transformer blocks (``block.{i}``, 0-based) and the image embedding (``embed``).

    The default layers are ``block.{L//2}`` .. ``block.{L-1}`` plus ``embed`` for a ViT with ``L``
    blocks. Non-ViT towers (ModifiedResNet, timm) offer only ``embed``.
    """

    family = "open_clip"

    def __init__(self, backbone_id: str, layers: Sequence[str] | None = None,
                 preprocess_cfg: PreprocessCfg | None = None,
                 device: str | torch.device | None = None) -> None:
        visual = load_open_clip_visual(backbone_id)
        if isinstance(visual, VisionTransformer):
            n_blocks = len(visual.transformer.resblocks)
            valid = tuple(f"block.{i}" for i in range(n_blocks)) + (EMBED,)
            default = valid[n_blocks // 2:]
        else:
            valid = default = (EMBED,)
        layers = tuple(layers or default)
        bad = [name for name in layers if name not in valid]
        if bad:
            raise ValueError(f"unknown layers {bad} for {backbone_id!r} ({type(visual).__name__}); "
                             f"choose from {list(valid)}")
        super().__init__(backbone_id, layers, preprocess_cfg or default_preprocess_cfg(visual), device)
        self.visual = visual.to(self.device, self.dtype)
        self._blocks = sorted(int(name.split(".")[1]) for name in set(layers) - {EMBED})

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out  # towers with output_tokens give (pooled, tokens)

    def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self._blocks:
            return [self._embed(x)]
        want_embed = EMBED in self.layers
        out = self.visual.forward_intermediates(x, indices=self._blocks, stop_early=not want_embed,
                                                intermediates_only=not want_embed, output_fmt="NLC",
                                                output_extra_tokens=True)
        feats = {f"block.{i}": cls[:, 0] for i, cls in zip(self._blocks, out["image_intermediates_prefix"])}
        if want_embed:
            feats[EMBED] = out["image_features"]
        return [feats[name] for name in self.layers]
