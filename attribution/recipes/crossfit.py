"""Cross-fitted forensic networks: one network per fold of the data, each trained without its fold.

    python -m attribution train-forensic --data ../shared/data/dev --tile flux1_dev=2 \\
        --folds 5 --together ffhq=stylegan2_faces --out zoo/residual-cnn-crossfit

The folds hold generators and real-photo sources out whole (:func:`crossfit_folds`). Shipped as one
:class:`~attribution.backbones.ensemble.ForensicEnsemble`, the networks give the mean of their outputs on
new images, and each training image's out-of-fold output (the network that never saw it) for fitting
the head and its probe, so what feeds the later stages never comes from a network that trained on it.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..backbones.base import default_device
from ..backbones.ensemble import ENSEMBLE_NETWORK, ForensicEnsemble
from ..constants import REAL
from ..dataset import Sample
from ..persistence import card_header
from .residual_cnn import RecipeCfg, load_dataset, train_residual_cnn, with_twins, write_network


def crossfit_folds(samples: Sequence[Sample], n_folds: int = 5,
                   together: Mapping[str, str] | None = None) -> list[list[str]]:
    """Held-out units of each fold: generators dealt in sorted order (fold ``i`` holds generators ``i``,
    ``i + n_folds``, ...), then real-photo sources (``real/<source>``), each with the generator
    ``together`` names for it (e.g. real faces with the face generator, so no network sees faces of one
    kind only), the others largest first onto the fold with the fewest photos.

    Raises ``ValueError`` when there are fewer generators or real sources than folds.
    """
    generators = sorted({s.label for s in samples if s.label != REAL})
    counts: dict[str, int] = {}
    for s in samples:
        if s.label == REAL and s.tile in (None, 0):
            counts[s.source] = counts.get(s.source, 0) + 1
    if len(generators) < n_folds or len(counts) < n_folds:
        raise ValueError(f"{n_folds} folds need at least {n_folds} generators and real sources; got "
                         f"{len(generators)} and {len(counts)}")
    folds = [generators[i::n_folds] for i in range(n_folds)]
    sizes = [0] * n_folds
    together = dict(together or {})
    for source, generator in together.items():
        fold = next((i for i, f in enumerate(folds) if generator in f), None)
        if fold is None or source not in counts:
            raise ValueError(f"cannot hold out real source {source!r} with {generator!r}: one of them is not in the data")
        folds[fold].append(f"{REAL}/{source}")
        sizes[fold] += counts[source]
    for source in sorted(counts, key=lambda s: (-counts[s], s)):
        if source in together:
            continue
        i = sizes.index(min(sizes))
        folds[i].append(f"{REAL}/{source}")
        sizes[i] += counts[source]
    return folds


def train_ensemble(data_root: str | os.PathLike, cfg: RecipeCfg, folds: Sequence[Sequence[str]],
                   device: str | None = None, cache: Path | None = None, log: Callable[[str], None] = print,
                   decoded: dict[str, dict[str, np.ndarray]] | None = None
                   ) -> tuple[ForensicEnsemble, dict]:
    """Train one network per fold by ``cfg`` (fold ``k`` added to ``cfg.exclude``, seed ``cfg.seed + k``);
    returns the ensemble (eval mode, on CPU) and its ``config.json`` content."""
    decoded = decoded if decoded is not None else load_dataset(data_root, log, cfg.tiles)
    if cfg.twin_steps > 0:  # made once for all members
        decoded = with_twins(decoded, cfg, torch.device(device or default_device()), cache, log)
    members, specs = [], []
    for k, fold in enumerate(folds):
        member_cfg = replace(cfg, exclude=[*cfg.exclude, *fold], seed=cfg.seed + k)
        model, config = train_residual_cnn(data_root, member_cfg, device, cache, log, decoded)
        log(f"member {k} (held out {list(fold)}): {config['recipe']['steps_done']} steps in "
            f"{config['recipe']['seconds']:.0f} s")
        members.append(model)
        specs.append({"classes": config["classes"], "held_out": list(fold), "recipe": config["recipe"]})
    return ensemble_from(members, specs)


def ensemble_from(members: Sequence[torch.nn.Module], specs: Sequence[dict]) -> tuple[ForensicEnsemble, dict]:
    """The ensemble of trained ``members`` and its config (``specs``: each member's ``classes``,
    ``held_out`` and ``recipe``)."""
    model = ForensicEnsemble(members, [s["classes"] for s in specs], [s["held_out"] for s in specs])
    first = members[0]
    shape = {"widths": [m.out_channels for m in first.trunk if isinstance(m, torch.nn.Conv2d)],
             "strides": [m.stride[0] for m in first.trunk if isinstance(m, torch.nn.Conv2d)]} \
        if hasattr(first, "trunk") else {}
    config = {"network": ENSEMBLE_NETWORK, "member_network": type(first).__name__, **shape,
              "members": [dict(s) for s in specs]}
    return model.eval(), config


ENSEMBLE_CARD = card_header("image-forensics", "synthetic-image-detection", license="apache-2.0") + """
# {name}

{n} cross-fitted {network} networks (NPR + high-pass residuals, Tan et al. 2024), each trained by
`attribution`'s recipe without one fold of the data; used as a feature source (backbone
`forensic_ensemble:{name}`): the mean of the members on new images, the out-of-fold member on the
images they were trained from.

| member | held out | steps | seconds |
|---|---|---|---|
{rows}
"""


def save_ensemble(folder: str | os.PathLike, model: ForensicEnsemble, config: dict) -> Path:
    """Write the ensemble as a zoo folder (:func:`~attribution.recipes.residual_cnn.write_network`)."""
    state = {f"{k}.{name}": v.detach().cpu().contiguous() for k, member in enumerate(model.members)
             for name, v in member.state_dict().items()}
    rows = "\n".join(f"| {k} | {', '.join(m['held_out'])} | {m['recipe'].get('steps_done', '-')} | "
                     f"{m['recipe'].get('seconds', '-')} |" for k, m in enumerate(config["members"]))
    card = ENSEMBLE_CARD.format(name=Path(folder).name, n=len(model.members), network=config["member_network"],
                                rows=rows)
    return write_network(folder, state, config, card)
