"""What the open-set head decides for a batch, and why: :class:`Decision` and the ``reason`` codes.

The reasons are a public contract (the JSON's ``reason``, documented in the README's reason table);
:data:`REASON_TEXT` says each one in words for pages and reports.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REASON_REAL = "no_synthetic_evidence"        # synthetic score below the real threshold, no class match
REASON_UNCERTAIN = "between_thresholds"      # synthetic score between the real and synthetic thresholds
REASON_KNOWN = "synthetic_known_generator"   # the synthetic score says synthetic, a known generator explains it
REASON_MATCH = "synthetic_class_match"       # a generator class's verification score passes its threshold
REASON_UNKNOWN = "synthetic_unknown_generator"  # synthetic, and no known generator explains it
REASON_FAR = "synthetic_far_from_known"      # synthetic, and farther from every class than the guard allows
REASON_EXACT = "exact_known_image"           # the same decoded pixels as a training or enrolled image
REASON_CLOSED_KNOWN = "known_class"          # heads without a synthetic probe: a class explains it
REASON_CLOSED_UNKNOWN = "unknown_score_above_threshold"
REASON_CLOSED_FAR = "far_from_known"
REASON_FRAMES = "frames_disagree"            # an animated image whose judged frames got different labels
REASON_GRAYSCALE = "grayscale_input"        # every pixel R = G = B: not called generated, whatever the scores say
REASON_SMALL = "small_input"                 # short side below half the judged window: not called generated
REASON_FEW_COLOURS = "few_colours_input"     # at most 1,024 distinct colours (palette, posterised): not generated
REASON_DISPUTED = "class_match_disagrees"    # a class matches but the match cannot decide (outside its images, or
                                             # a head saved before matches were calibrated on real photos)
REASON_TEXT = {
    REASON_REAL: "no synthetic traces found: the synthetic score is below the real threshold and no generator "
                 "of the head matches",
    REASON_UNCERTAIN: "cannot tell: the synthetic score lies between the real and the synthetic thresholds",
    REASON_KNOWN: "synthetic, and a known generator explains it",
    REASON_MATCH: "it matches a generator of the head: that generator's verification score passes its threshold",
    REASON_UNKNOWN: "synthetic, but no known generator explains it (unknown score above its threshold)",
    REASON_FAR: "synthetic, and farther from every known generator than any of their images",
    REASON_EXACT: "this exact image (same decoded pixels) is one of the head's training or enrolled images",
    REASON_CLOSED_KNOWN: "a known class explains it",
    REASON_CLOSED_UNKNOWN: "no known class explains it (unknown score above its threshold)",
    REASON_CLOSED_FAR: "farther from every known class than any of their images",
    REASON_FRAMES: "the judged frames of this animated image do not agree",
    REASON_GRAYSCALE: "cannot tell: the image is grayscale (every pixel has R = G = B), so the colour traces "
                      "generators leave are gone; it is not called generated, whatever the scores say",
    REASON_FEW_COLOURS: "cannot tell: the image has so few distinct colours (a palette or posterised image) that the "
                        "fine colour variations generators leave are gone; it is not called generated, whatever the "
                        "scores say",
    REASON_SMALL: "cannot tell: the image is smaller than half the window the networks judge, so upscaled it "
                  "cannot carry a generator's traces; it is not called generated, whatever the scores say",
    REASON_DISPUTED: "the evidence disagrees: a generator of the head matches it (black-box verification), but the "
                     "match cannot decide (the image lies outside that generator's images, or the head predates "
                     "calibrated matches) and the synthetic score does not decide either",
}


def input_limit(grayscale: bool, short_side: int, window: int, colours: int | None = None) -> str | None:
    """Why an input cannot be called generated whatever its scores say, or ``None``: it is grayscale (every pixel
    R = G = B; generators' colour traces are gone), it has few distinct ``colours`` (a count means at most 1,024:
    a palette or posterised image), or its short side is below half the judged ``window`` (px; upscaled to it,
    it cannot carry their traces). Such an image is ``uncertain`` rather than generated."""
    if grayscale:
        return REASON_GRAYSCALE
    if colours is not None:
        return REASON_FEW_COLOURS
    if 2 * short_side < window:
        return REASON_SMALL
    return None


@dataclass
class Decision:
    """Everything :meth:`OpenSetHead.decide` says about a batch (``n`` rows).

    ``labels`` (n,) class names, ``unknown`` or ``uncertain``; ``proba`` (n, n_classes) class
    probabilities (with a synthetic probe: ``P(real) = 1 - synthetic_score`` and each generator
    ``synthetic_score x P(generator | synthetic)``); ``unknown_score`` (n,) in 0-1, higher = less like any
    known generator, against ``unknown_threshold``; ``synthetic_score`` (n,) in 0-1 or ``None`` for heads
    without a probe, against ``real_threshold`` / ``synthetic_threshold``; ``reasons`` (n,) the rule
    that decided each label (the ``REASON_*`` codes); ``nearest`` the closest exemplars of each row as
    ``(class, id, distance)`` when asked for. Thresholds are in the JSON's direction (higher = worse):
    ``unknown_threshold`` is ``-offset_``.

    Class matches (heads with a probe): ``match_class`` (n,) the generator class whose verification score
    (class log-odds, ``match_score``) is furthest above its threshold (``match_threshold``), and
    ``match_margin`` (n,) that distance: ``>= 0`` is a match, which answers "is it synthetic?" by itself when the
    image lies within that class's own images (``match_inside``: its distance to the class mean at most the
    radius that holds 99 % of the class's images out of fold).
    """

    labels: np.ndarray
    proba: np.ndarray
    unknown_score: np.ndarray
    unknown_threshold: float
    synthetic_score: np.ndarray | None
    real_threshold: float | None
    synthetic_threshold: float | None
    reasons: np.ndarray
    nearest: list[list[tuple[str, str, float]]] | None = None
    match_class: np.ndarray | None = None
    match_score: np.ndarray | None = None
    match_threshold: np.ndarray | None = None
    match_margin: np.ndarray | None = None
    match_inside: np.ndarray | None = None
