"""Model card of :class:`~attribution.heads.OpenSetHead` (``README.md`` of a zoo head), filled from its config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..persistence import card_header

CARD_TEMPLATE = card_header("image-forensics", "generator-attribution", "open-set", license="apache-2.0") + """
# {name}

Open-set attribution head: tells which generator made an image (`real`, one of the known
generators, `unknown` or `uncertain`). Head `{head}` over frozen `{backbone}` features (layers: {layers}).

## Classes
{classes}

## Decision
{probe}`unknown` when the unknown score exceeds **{offset}** (calibrated so that {accept:.0%} of held-out
  known-{known} images are accepted).
- Verification: per-class thresholds set at a false-match rate of {fmr:.1%} on other-class images.

## Training data
{training}
{base}
## Metrics
{metrics}

## Use
```bash
python -m attribution predict --zoo {name} --json image.png
```
```python
from attribution import Attributor
attributor = Attributor.from_pretrained("{name}")
print(attributor("image.png")[0].label)
```
"""


def _public(value: Any) -> Any:
    """A value fit for a card that others read: absolute paths are cut to their last part."""
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


def _table(rows: dict[str, Any]) -> str:
    if not rows:
        return "Not measured yet."
    lines = ["| metric | value |", "|---|---|"]
    for key, value in rows.items():
        value = _public(value)
        lines.append(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(lines)


def _enrolled_section(config: dict[str, Any]) -> str:
    """Where an enrolled head comes from and what each enrolled class is worth (measured at enrollment)."""
    enrolled = config.get("enrolled", {})
    if not config.get("base_head") and not enrolled:
        return ""
    lines = [f"\n## Base head\n`{config.get('base_head', '?')}`, extended by enrollment with the generators below "
             "(its own metrics were measured without them and are not repeated here).\n",
             "| generator | images | expected recall (left out) | closest known class (share of its images) |",
             "|---|---|---|---|"]
    for label, info in enrolled.items():
        recall, closest = info.get("expected_recall"), info.get("closest_class")
        share = info.get("closest_class_share")
        lines.append(f"| `{label}` | {info.get('n_images', '?')} | {'-' if recall is None else f'{recall:.2f}'} | "
                     + ("-" if closest is None or share is None else f"`{closest}` ({share:.0%})") + " |")
    return "\n".join(lines) + "\n"


def model_card(config: dict[str, Any]) -> str:
    """README.md model card filled from ``config`` (current layout, see :mod:`attribution.persistence`)."""
    head = config["head"]
    state, params = head["state"], head["params"]
    backbone = config.get("backbone") or {}
    training = config.get("training", {})
    counts = training.get("class_counts", {})
    names = config.get("classes", state.get("classes_", []))
    classes = "\n".join(f"- `{c}`" + (f" ({counts[c]} images)" if c in counts else "") for c in names)
    metrics = config.get("metrics", {})
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    extra = "\n\n".join(f"![{name}]({name})" for name in config.get("figures", []))
    probe = "- "
    if state.get("synthetic_offset_") is not None:
        probe = (f"- Is it synthetic? A linear probe on the features gives a synthetic score: below "
                 f"**{state['real_offset_']:.4f}** the label is `real`, from **{state['synthetic_offset_']:.4f}** on the "
                 f"image is synthetic, in between `uncertain` (thresholds: {params.get('real_false_rate', 0.05):.0%} of "
                 f"held-out kinds of real photo called synthetic, {params.get('synthetic_miss_rate', 0.05):.0%} of "
                 f"held-out generators called real).\n- If synthetic, which known generator? ")
    return CARD_TEMPLATE.format(
        probe=probe, known="generator" if probe != "- " else "class",
        name=config.get("name", "attribution-head"), head=head["type"], backbone=backbone.get("id"),
        layers=", ".join(f"`{l}`" for l in backbone.get("layers", [])), classes=classes,
        offset=f"{-state.get('offset_', float('nan')):.4f}", accept=params.get("accept_rate", 0.95),
        fmr=params.get("false_match_rate", 0.01),
        training=_table({k: v for k, v in training.items() if not isinstance(v, (dict, list))}),
        base=_enrolled_section(config),
        metrics=(_table(flat) if flat or not config.get("enrolled") else "See the enrolled generators above.")
        + (f"\n\n{extra}" if extra else ""),
    )
