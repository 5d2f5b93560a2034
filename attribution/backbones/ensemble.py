"""The recipe's cross-fitted networks as one backbone: K fold networks, averaged.

Each member was trained without one fold of the data (``held_out``: generators and real-photo
sources, ``real/<source>``). At inference the features are the members' mean outputs. For an image
of the training data, ``member=k`` gives instead the output of the member that never saw it (out of
fold): what the head and its synthetic probe are fitted on (stacking, Wolpert 1992), so the probe
learns how far the networks can be trusted on images they did not train on, and thresholds set on
those outputs hold for the ensemble that ships (mean of the same networks).

Layers (each a two-class vector, so the per-layer L2 normalisation of :class:`Backbone` keeps its
value): ``synthetic`` = ``[p, 1 - p]`` with ``p`` the sigmoid of the mean synthetic logit, and
``real_class`` = ``[q, 1 - q]`` with ``q`` the mean probability of the class ``real`` of the
members' class heads. Both are computed on the centre ``window`` px of each view.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..constants import CONFIG_NAME, REAL, WEIGHTS_NAME
from ..transform import PreprocessCfg
from .base import Backbone
from .residual_cnn import DEFAULT_WINDOW, ResidualCNN, WindowedNetworkBackbone

ENSEMBLE_NETWORK = "ForensicEnsemble"
ENSEMBLE_LAYERS = ("synthetic", "real_class")


class ForensicEnsemble(nn.Module):
    """Member networks (``ResidualCNN`` or ``LateEfficientNet``) with the classes and held-out units of each."""

    def __init__(self, members: Sequence[nn.Module], classes: Sequence[Sequence[str]],
                 held_out: Sequence[Sequence[str]]) -> None:
        super().__init__()
        if not members or not len(members) == len(classes) == len(held_out):
            raise ValueError("an ensemble needs at least one member, each with its classes and held-out units")
        self.members = nn.ModuleList(members)
        self.classes = [list(c) for c in classes]
        self.held_out = [list(h) for h in held_out]
        self._real = [c.index(REAL) for c in self.classes]

    def member_for(self, label: str, source: str) -> int | None:
        """The one member that never saw an image of class ``label`` from ``source`` (a real photo's collection);
        ``None`` when every member trained on such images, or when several did not (their mean is then out of
        fold already)."""
        unit = f"{REAL}/{source}" if label == REAL else label
        found = [k for k, held in enumerate(self.held_out) if unit in held]
        return found[0] if len(found) == 1 else None

    def forward(self, pixels: torch.Tensor, members: Sequence[int] | None = None) -> torch.Tensor:
        """``(n_members, n, 2)``: each chosen member's synthetic logit and probability of the class ``real``
        (default: every member) for ``pixels`` ``(n, 3, H, W)`` in 0-255."""
        out = []
        for k in range(len(self.members)) if members is None else members:
            _, class_logits, synthetic = self.members[k](pixels)
            out.append(torch.stack([synthetic.float(), class_logits.float().softmax(dim=1)[:, self._real[k]]], dim=1))
        return torch.stack(out)


def ensemble_layers(outputs: torch.Tensor, layers: Sequence[str] = ENSEMBLE_LAYERS) -> list[torch.Tensor]:
    """The layers of :class:`EnsembleBackbone` from members' outputs ``(n_members, n, 2)`` (see
    :meth:`ForensicEnsemble.forward`): their mean synthetic logit through a sigmoid, ``p``, and their mean
    probability of ``real``, ``q``, each as the two-class vector ``[p, 1 - p]`` ``(n, 2)``."""
    mean = outputs.float().mean(dim=0)
    values = {"synthetic": torch.sigmoid(mean[:, 0]), "real_class": mean[:, 1]}
    return [torch.stack([values[name], 1.0 - values[name]], dim=1) for name in layers]


def load_ensemble(ref: str) -> tuple[ForensicEnsemble, dict[str, Any]]:
    """An ensemble saved by :func:`attribution.recipes.crossfit.save_ensemble` (eval mode) and its config (plus
    ``weights_sha256``, the hash of its weights file), from a zoo name, folder or ``hf-hub:`` id. Only
    ``config.json`` and ``model.safetensors`` are read. Raises ``ZooError`` when they do not fit."""
    from safetensors.torch import load

    from ..persistence import resolve
    from ..storage import ZooError

    folder = resolve(ref)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        if config.get("network") != ENSEMBLE_NETWORK:
            raise ZooError(f"{folder} holds no {ENSEMBLE_NETWORK} (config 'network' is {config.get('network')!r})")
        data = (folder / WEIGHTS_NAME).read_bytes()
        state = load(data)
        members = []
        for k, spec in enumerate(config["members"]):
            if config["member_network"] == "ResidualCNN":
                member: nn.Module = ResidualCNN(len(spec["classes"]), config["widths"], config["strides"])
            else:
                from .late_efficientnet import LateEfficientNet

                member = LateEfficientNet(len(spec["classes"]))
            prefix = f"{k}."
            member.load_state_dict({name[len(prefix):]: v for name, v in state.items() if name.startswith(prefix)})
            members.append(member)
        model = ForensicEnsemble(members, [m["classes"] for m in config["members"]],
                                 [m["held_out"] for m in config["members"]])
        config["weights_sha256"] = hashlib.sha256(data).hexdigest()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ZooError(f"unreadable network ensemble at {folder}: {exc}") from None
    return model.eval(), config


class EnsembleBackbone(WindowedNetworkBackbone):
    """Features of a :class:`ForensicEnsemble` (id ``forensic_ensemble:<ensemble>``, a zoo name, folder or
    ``hf-hub:`` id): the members' mean, or with ``member=k`` the out-of-fold output of member ``k``
    (for fitting a head on the ensemble's own training images; never saved with a head). Raises
    ``ValueError`` for a member the ensemble does not have."""

    family = "forensic_ensemble"
    LAYERS = ENSEMBLE_LAYERS

    def __init__(self, backbone_id: str, layers: Sequence[str] | None = None,
                 preprocess_cfg: PreprocessCfg | None = None, window: int = DEFAULT_WINDOW,
                 member: int | None = None, device: str | torch.device | None = None) -> None:
        super().__init__(backbone_id, layers, preprocess_cfg, window, device)
        if member is not None and not 0 <= member < len(self.model.members):
            raise ValueError(f"member must be in 0..{len(self.model.members) - 1}; got {member}")
        self.member = member

    def load(self, backbone_id: str) -> tuple[nn.Module, dict]:
        return load_ensemble(backbone_id.partition(":")[2])

    def extra_config(self) -> dict[str, Any]:
        return {**super().extra_config(), **({"member": self.member} if self.member is not None else {})}

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's outputs ``(n_members, n, 2)`` (:meth:`ForensicEnsemble.forward`) on the centre ``window``
        px of each view of ``x`` ``(n, 3, H, W)`` (normalised as :meth:`encode` gets it), or member ``member``'s."""
        return self.model(self.centre_window(x), None if self.member is None else [self.member])

    def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        return ensemble_layers(self.member_outputs(x), self.layers)


def ensemble_part(backbone: Backbone) -> EnsembleBackbone | None:
    """The :class:`EnsembleBackbone` of ``backbone`` (itself, or a part of a concatenation), if it has one."""
    parts = getattr(backbone, "parts", [backbone])
    return next((p for p in parts if isinstance(p, EnsembleBackbone)), None)


def out_of_fold(backbone: Backbone, member: int) -> Backbone:
    """A copy of ``backbone`` whose ensemble part gives member ``member``'s outputs alone (weights shared, config
    and so the feature-cache key different). Raises ``ValueError`` without an ensemble part."""
    part = ensemble_part(backbone)
    if part is None:
        raise ValueError(f"{backbone.id} has no forensic_ensemble part")
    one = copy.copy(part)
    one.member = member
    if backbone is part:
        return one
    out = copy.copy(backbone)
    out.parts = [one if p is part else p for p in backbone.parts]
    return out


def column_ranges(backbone: Backbone, features: int) -> list[tuple[str, int, int]]:
    """``(part id, start, stop)`` of each part's columns in features of width ``features``: every layer of a
    :class:`~attribution.backbones.concat.ConcatBackbone` part is as wide as one forward of a blank image says."""
    parts = getattr(backbone, "parts", [backbone])
    blank = backbone.transform(Image.new("RGB", (backbone.preprocess_cfg.size,) * 2, (128, 128, 128)))[:1]
    with torch.inference_mode():
        widths = [sum(f.shape[1] for f in p._forward_layers(blank.to(p.device, p.dtype))) for p in parts]
    if sum(widths) != features:
        raise ValueError(f"the parts of {backbone.id} give {sum(widths)} columns, not {features}")
    starts = np.cumsum([0, *widths])
    return [(p.id, int(a), int(b)) for p, a, b in zip(parts, starts[:-1], starts[1:])]
