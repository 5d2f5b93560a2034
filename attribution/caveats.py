"""The measured caveat of a verdict: how often the head's answer of that kind was wrong on sources it never saw.

The rates are read from the metrics the accuracy benchmark writes into the head's config
(``benchmarks/accuracy.py --write-zoo``: nested leak-free folds) or, for a head extended by enrollment,
from its base head's metrics (``base_metrics``) plus the enrolled class's own figures. Each answer has
its own group-conditional rates:

- a known generator: the share of held-out generators' images given a known generator's label (a
  generator the head does not know can look like one it knows) and the closed-set accuracy;
- an enrolled generator: its left-out recall and the share of its left-out images not flagged;
- ``real``: the share of held-out generators' images called ``real``;
- ``unknown``: the share of known generators' new images called ``unknown``;
- ``uncertain``: the uncertain share of each group;
- an exact known image: a reminder that it names the copy the head was trained on.
"""
from __future__ import annotations

from typing import Any

from .constants import REAL, UNCERTAIN, UNKNOWN
from .heads.decision import REASON_EXACT

PROTOCOL = "held-out folds of benchmarks/accuracy.py (generators and real-photo sources the head never saw)"


def _pct(value: float) -> str:
    return f"{value:.0%}"


def caveat(label: str, reason: str | None, metrics: dict[str, Any], enrolled: dict[str, dict] | None = None
           ) -> dict[str, Any] | None:
    """``{"text", "rates", "measured_on"}`` for a verdict ``label`` (decided by ``reason``) from a head's
    ``metrics`` (its config's ``metrics`` or ``base_metrics``) and ``enrolled`` (its config's ``enrolled``
    entries); ``None`` when the head carries no measurement of that kind of answer."""
    enrolled = enrolled or {}
    if reason == REASON_EXACT:
        return {"text": "The same decoded pixels are in the head's training or enrolled images: this names the source "
                        "of that copy, which says nothing of where the pixels were made first.",
                "rates": {}, "measured_on": "the head's duplicate index"}
    if label in enrolled:
        info = enrolled[label]
        rates = {k: info[k] for k in ("expected_recall", "expected_real_or_uncertain") if info.get(k) is not None}
        if not rates:
            return None
        text = (f"Enrolled from {info.get('n_images', '?')} images: "
                + (f"{_pct(rates['expected_recall'])} of them were attributed to it when left out of the enrollment"
                   if "expected_recall" in rates else "")
                + (f", {_pct(rates['expected_real_or_uncertain'])} called real or uncertain"
                   if "expected_real_or_uncertain" in rates else "") + ".")
        return {"text": text, "rates": rates, "measured_on": "leave-out folds of the enrolled images"}
    keys = {REAL: ("heldout_generator_called_real",),
            UNKNOWN: ("known_test_called_unknown",),
            UNCERTAIN: ("heldout_generator_uncertain", "heldout_real_uncertain", "known_test_uncertain")}.get(
        label, ("heldout_generator_known_label", "closed_set_acc"))
    rates = {k: float(metrics[k]) for k in keys if isinstance(metrics.get(k), (int, float))}
    if not rates:
        return None
    if label == REAL:
        text = f"{_pct(rates[keys[0]])} of the images of generators this head never saw were also called real."
    elif label == UNKNOWN:
        text = f"{_pct(rates[keys[0]])} of known generators' new images were also called unknown."
    elif label == UNCERTAIN:
        parts = {"heldout_generator_uncertain": "of generators the head never saw",
                 "heldout_real_uncertain": "of real photos of kinds it never saw",
                 "known_test_uncertain": "of known classes' new images"}
        text = "The head answers uncertain for " + ", ".join(f"{_pct(v)} {parts[k]}" for k, v in rates.items()) + "."
    else:
        text = " ".join(filter(None, (
            f"{_pct(rates['heldout_generator_known_label'])} of the images of generators this head never saw were "
            "also given a known generator's label, so an unknown generator can look like this one."
            if "heldout_generator_known_label" in rates else "",
            f"Known generators' new images get their own label {_pct(rates['closed_set_acc'])} of the time."
            if "closed_set_acc" in rates else "")))
    return {"text": text, "rates": rates, "measured_on": PROTOCOL}
