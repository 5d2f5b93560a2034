"""Model card of :class:`~attribution.heads.OpenSetHead` (``README.md`` of a zoo head), filled from its config.

A card a person reads: the headline figures in one small table, per held-out generator and per real
source, after each harmless change, the figures, a plain-language "good at / bad at", and the raw
metrics folded away. The figures come from the config's ``metrics`` (``benchmarks/accuracy.py
--write-zoo``), or for an enrolled head its base head's (``base_metrics``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..persistence import card_header

CARD_TEMPLATE = card_header("image-forensics", "generator-attribution", "open-set", license="apache-2.0") + """
# {name}

Open-set attribution head: tells which generator made an image (`real`, one of the known
generators, `unknown` or `uncertain`). Head `{head}` over frozen `{backbone}` features.

## What it is good and bad at
{summary}

## Headline figures
{headline}

## Classes
{classes}

## Decision
{probe}`unknown` when the unknown score exceeds **{offset}** (calibrated so that {accept:.0%} of held-out
  known-{known} images are accepted).
- Verification: per-class thresholds at a false-match rate of at most {fmr:.1%} on other-class images
  {match}

## Training data
{training}
{base}
{details}

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

HEADLINE = (("heldout_generator_flagged", "images of generators it never saw, flagged as generated"),
            ("heldout_generator_called_real", "... called `real`"),
            ("heldout_generator_uncertain", "... `uncertain`"),
            ("heldout_real_kept_real", "real photos of kinds it never saw, kept `real`"),
            ("heldout_real_called_synthetic", "... called generated"),
            ("heldout_real_uncertain", "... `uncertain`"),
            ("closed_set_acc", "known generators' new images (and real photos): right class"),
            ("closed_set_acc_after_jpeg75", "... after a JPEG 75 re-save"),
            ("enroll10_recall", "a new generator enrolled from 10 images: its other images attributed to it"),
            ("enroll10_real_or_uncertain", "... called `real` or `uncertain`"))


def _public(value: Any) -> Any:
    """A value fit for a card that others read: absolute paths are cut to their last part."""
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


def _pct(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "-"


def _grid(rows: dict[str, dict[str, Any]], columns: list[tuple[str, str]], first: str) -> str:
    """A Markdown table of shares: one row per key of ``rows``, ``columns`` as ``(key, header)``."""
    lines = [f"| {first} | " + " | ".join(h for _, h in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(_pct(values.get(k)) for k, _ in columns) + " |" for name, values in rows.items()]
    return "\n".join(lines)


def headline_table(metrics: dict[str, Any]) -> str:
    """The few figures that say what the head is worth (means over the held-out folds)."""
    rows = [(text, metrics[key]) for key, text in HEADLINE if isinstance(metrics.get(key), (int, float))]
    if not rows:
        return "Not measured yet."
    return "\n".join(["| on sources the head never saw (mean of the held-out folds) | share |", "|---|---|",
                      *(f"| {text} | {_pct(v)} |" for text, v in rows)])


def _changes(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per harmless change: what held-out real photos and generators' images got after it, and closed-set accuracy
    (keys ``heldout_real_<measure>``, ``heldout_generator_<measure>``, ``closed_set_acc``)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if key.startswith("closed_set_acc_after_"):
            out.setdefault(key[len("closed_set_acc_after_"):], {})["closed_set_acc"] = value
        for group in ("heldout_real", "heldout_generator"):
            if key.startswith(f"{group}_after_"):
                rest = key[len(f"{group}_after_"):]
                measure = next((m for m in ("kept_real", "called_synthetic", "uncertain", "flagged", "called_real")
                                if rest.endswith(f"_{m}")), None)
                if measure:
                    out.setdefault(rest[: -len(measure) - 1], {})[f"{group}_{measure}"] = value
    return out


def plain_summary(metrics: dict[str, Any]) -> str:
    """Good at / bad at, in words, from the measured figures (empty when nothing was measured)."""
    units = metrics.get("per_unit") or {}
    generators = {u: v for u, v in units.items() if not u.startswith("real/") and "flagged" in v}
    reals = {u[len("real/"):]: v for u, v in units.items() if u.startswith("real/") and "kept_real" in v}
    if not generators and not reals:
        return "Not measured yet: run `python benchmarks/accuracy.py --write-zoo <this head>`."
    lines = []
    if generators:
        ranked = sorted(generators, key=lambda u: generators[u]["flagged"])
        best, worst = ranked[-1], ranked[0]
        lines.append(f"- Generators it never saw: on average {_pct(metrics.get('heldout_generator_flagged'))} of their "
                     f"images are flagged as generated; best `{best}` ({_pct(generators[best]['flagged'])}), worst "
                     f"`{worst}` ({_pct(generators[worst]['flagged'])}, {_pct(generators[worst].get('called_real'))} "
                     "called real).")
    if reals:
        worst = min(reals, key=lambda u: reals[u]["kept_real"])
        lines.append(f"- Real photos of kinds it never saw: {_pct(metrics.get('heldout_real_kept_real'))} kept `real`, "
                     f"{_pct(metrics.get('heldout_real_called_synthetic'))} called generated; hardest collection "
                     f"`{worst}` ({_pct(reals[worst]['kept_real'])} kept real).")
    changes = _changes(metrics)
    weak = [c for c, v in changes.items() if v.get("heldout_real_called_synthetic", 0) > 0.05]
    if weak:
        lines.append(f"- Real photos are more often called generated after: {', '.join(sorted(weak))}.")
    fields = {k[len("field_"):-len("_real_or_uncertain")]: v for k, v in metrics.items()
              if k.startswith("field_") and k.endswith("_real_or_uncertain")}
    failed = [c for c, v in fields.items() if v < 1]
    if fields:
        lines.append("- Photos after ordinary handling (tiny crops, text pages, collages, cartoon filters, photos of "
                     "a screen, sharpened upscales): " + ("all kept `real` or `uncertain`." if not failed else
                                                         f"some were called generated ({', '.join(failed)})."))
    if isinstance(metrics.get("heldout_generator_known_label"), (int, float)):
        lines.append(f"- Beware: {_pct(metrics['heldout_generator_known_label'])} of the images of generators it "
                     "never saw got a known generator's label; a confident known label is not proof that this "
                     "generator made the image.")
    return "\n".join(lines)


def _details(metrics: dict[str, Any], figures: list[str]) -> str:
    """Per unit, per change, stated rates, figures and the raw metrics (folded)."""
    parts = []
    units = metrics.get("per_unit") or {}
    generators = {f"`{u}`": v for u, v in units.items() if not u.startswith("real/")}
    reals = {f"`{u[len('real/'):]}`": v for u, v in units.items() if u.startswith("real/")}
    if generators:
        parts.append("### Per held-out generator\n" + _grid(generators, [
            ("flagged", "flagged"), ("called_real", "real"), ("uncertain", "uncertain"), ("called_unknown", "unknown"),
            ("known_label", "a known label")], "generator (never seen)"))
    if reals:
        parts.append("### Per held-out real-photo collection\n" + _grid(reals, [
            ("kept_real", "kept real"), ("called_synthetic", "called generated"), ("uncertain", "uncertain")],
            "collection (never seen)"))
    changes = _changes(metrics)
    if changes:
        parts.append("### After harmless changes\n" + _grid(changes, [
            ("heldout_real_kept_real", "real kept real"), ("heldout_real_called_synthetic", "real called generated"),
            ("heldout_generator_flagged", "held-out generator flagged"),
            ("heldout_generator_called_real", "held-out generator real"), ("closed_set_acc", "closed-set accuracy")],
            "change"))
    checks = metrics.get("rate_checks") or {}
    if checks:
        parts.append("### Stated rates, checked on held-out sources\n| rate | stated | observed | p (one-sided) |\n"
                     "|---|---|---|---|\n" + "\n".join(
                         f"| {name} | {c['stated']:.3f} | {c['observed']:.3f} ({c['count']}/{c['n']}) | {c['p_value']:.3f} |"
                         for name, c in checks.items()))
    if figures:
        parts.append("### Figures\n" + "\n\n".join(f"![{name}]({name})" for name in figures))
    if metrics:
        raw = json.dumps(metrics, indent=1, sort_keys=True, default=str)
        parts.append(f"<details><summary>All measured metrics (JSON)</summary>\n\n```json\n{raw}\n```\n</details>")
    return "## Measured\n" + (metrics.get("protocol", "") + "\n\n" if metrics.get("protocol") else "") + \
        "\n\n".join(parts) if parts else "## Measured\nNot measured yet."


def _enrolled_section(config: dict[str, Any]) -> str:
    """Where an enrolled head comes from and what each enrolled class is worth (measured at enrollment)."""
    enrolled = config.get("enrolled", {})
    if not config.get("base_head") and not enrolled:
        return ""
    lines = [f"\n## Base head\n`{config.get('base_head', '?')}`, extended by enrollment with the generators below "
             "(the figures above are the base head's, measured without them).\n",
             "| generator | images | expected recall (left out) | left out, called real or uncertain | "
             "closest known class (share of its images) |", "|---|---|---|---|---|"]
    for label, info in enrolled.items():
        recall, closest = info.get("expected_recall"), info.get("closest_class")
        share = info.get("closest_class_share")
        lines.append(f"| `{label}` | {info.get('n_images', '?')} | {_pct(recall)} | "
                     f"{_pct(info.get('expected_real_or_uncertain'))} | "
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
    classes = ", ".join(f"`{c}`" + (f" ({counts[c]} images)" if c in counts else "") for c in names)
    metrics = config.get("metrics") or config.get("base_metrics") or {}
    probe = "- "
    if state.get("synthetic_offset_") is not None:
        probe = (f"- Is it synthetic? A linear probe on the features gives a synthetic score: below "
                 f"**{state['real_offset_']:.4f}** the label is `real`, from **{state['synthetic_offset_']:.4f}** on the "
                 f"image is synthetic, in between `uncertain` (stated rates: {params.get('real_false_rate', 0.05):.0%} of "
                 f"held-out kinds of real photo called generated, {params.get('synthetic_miss_rate', 0.05):.0%} of "
                 "held-out generators' images called real"
                 + ("; whether they held is checked under 'Stated rates' below" if metrics.get("rate_checks") else "")
                 + "). A generator class whose verification score passes its threshold also answers it.\n"
                 "- If synthetic, which known generator? ")
    match = ("" if not state.get("real_sources_") else
             f"and raised so that all classes together match at most {params.get('match_real_rate', 0.01):.1%} of real "
             "photos from sources the head never saw (a match makes the image synthetic).")
    return CARD_TEMPLATE.format(
        probe=probe, known="generator" if probe != "- " else "class", match=match,
        name=config.get("name", "attribution-head"), head=head["type"], backbone=backbone.get("id"),
        classes=classes, offset=f"{-state.get('offset_', float('nan')):.4f}", accept=params.get("accept_rate", 0.95),
        fmr=params.get("false_match_rate", 0.01), summary=plain_summary(metrics), headline=headline_table(metrics),
        training="; ".join(f"{k}: {_public(v)}" for k, v in training.items()
                           if not isinstance(v, (dict, list)) and k != "data_root"),  # a place on the trainer's disk
        base=_enrolled_section(config), details=_details(metrics, config.get("figures", [])),
    )
