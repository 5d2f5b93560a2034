"""The one verifier contract: "was this image made by model X?" in scikit-learn's one-class chain.

Every verifier (black-box, OCC-CLIP, white-box) follows ``EllipticEnvelope``'s convention:

- :meth:`Verifier.score_samples` ``(n_samples,)``: higher = more likely made by the target model;
- ``offset_``: the threshold, set at the verifier's stated rate (a false-match rate on held-out
  negatives, or for white-box an accept rate on the model's own images);
- :meth:`Verifier.decision_function` ``= score_samples - offset_``: ``>= 0`` is a match;
- :meth:`Verifier.predict`: ``+1`` (made by the target) or ``-1``.

:meth:`Verifier.verify` turns images into :class:`~attribution.outputs.VerificationOutput` rows once
for all of them (decode, batch, per-file errors with the package's error codes, progress); a subclass
brings only how it encodes a batch of decoded images (:meth:`Verifier.prepare`,
:meth:`Verifier.encode`) and how it scores (:meth:`Verifier.score_samples`). Verifiers are saved like
heads (:class:`~attribution.persistence.PretrainedMixin`). Needs only NumPy and Pillow at import time.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

import numpy as np
from PIL import Image

from ..heads.base import NotFittedError
from ..inputs import file_name
from ..outputs import VerificationOutput
from ..persistence import VERIFIER, PretrainedMixin
from ..reading import Extracted, FeatureBatch, ImageReader, Progress, as_list

if TYPE_CHECKING:
    from ..transform import ImageInput


def false_match_rate_at(negatives: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Share of ``negatives`` (scores of images not made by the model) at or above each score.

    Conformal estimate ``(k + 1) / (n + 1)``: never 0, so a score above every negative reads as
    "below 1 in n + 1", not as impossible.
    """
    negatives = np.sort(np.asarray(negatives, dtype=np.float64))
    above = len(negatives) - np.searchsorted(negatives, np.asarray(scores, dtype=np.float64), side="left")
    return (above + 1) / (len(negatives) + 1)


class Verifier(PretrainedMixin):
    """One-class verifier of a single target model (scikit-learn's outlier-detection chain).

    Subclasses implement :meth:`score_samples` (features ``X`` -> scores), :meth:`encode` (a batch of
    prepared images -> ``X``) and optionally :meth:`prepare` (one decoded image -> what :meth:`encode`
    takes; raise :class:`~attribution.transform.ImageDecodeError` with a code to refuse it),
    :meth:`describe` (a row's note) and :meth:`calibration_negatives`; plus ``fit`` (its arguments are
    what the verifier learns from: a head's training data, target and negative features, own images'
    features) and the persistence hooks.

    Attributes
    ----------
    method : str
        The JSON's ``method`` (``blackbox``, ``occ-clip``, ``whitebox``).
    batch_size : int
        Images per :meth:`encode` call.
    min_size : int
        Smallest short side judged, in px; smaller images get ``too_small``. Pixel verifiers take any size
        their model takes by default (white-box refuses in :meth:`prepare` what its VAE cannot invert);
        :func:`~attribution.verification.load_verifier` sets it when asked.
    false_match_rate : float or None
        Share of other sources' images the threshold lets match, when the verifier states one.
    offset_ : float
        Threshold on :meth:`score_samples`, set by ``fit``.
    """

    kind: ClassVar[str] = VERIFIER
    method: ClassVar[str] = "verifier"
    _fitted_attrs: ClassVar[tuple[str, ...]] = ("offset_",)
    batch_size: int = 16
    min_size: int = 1
    false_match_rate: float | None = None

    @property
    def name(self) -> str:
        """The target model as the JSON's ``model`` field names it."""
        return self.method

    def check_is_fitted(self) -> None:
        """Raises :class:`~attribution.heads.base.NotFittedError` before ``fit`` (or loading)."""
        if not all(hasattr(self, attr) for attr in self._fitted_attrs):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first or load a saved one")

    # ------------------------------------------------------------ the one-class chain
    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Scores ``(n_samples,)`` of features ``X`` ``(n_samples, n_features)``; higher = more likely the target."""
        raise NotImplementedError

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``score_samples(X) - offset_``, ``(n_samples,)``: ``>= 0`` is a match at the stated rate."""
        self.check_is_fitted()
        return self.score_samples(X) - self.offset_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``+1`` where the target model made the image, ``-1`` elsewhere, ``(n_samples,)``."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def calibration_negatives(self) -> np.ndarray | None:
        """:meth:`score_samples` of the held-out negatives ``offset_`` was set on, when the verifier keeps
        them (``None`` otherwise): what ``false_match_rate_at_score`` is read from (:func:`false_match_rate_at`)."""
        return None

    def real_negatives(self) -> np.ndarray | None:
        """:meth:`score_samples` of held-out real photos alone, when the verifier keeps them (``None``
        otherwise): what ``real_false_match_rate_at_score`` is read from."""
        return None

    # ------------------------------------------------------------ images
    def prepare(self, image: Image.Image) -> Any:
        """One decoded RGB image in the form :meth:`encode` takes (default: as it is)."""
        return image

    def encode(self, prepared: list[Any]) -> np.ndarray:
        """Features ``(len(prepared), n_features)`` of a batch of :meth:`prepare` outputs."""
        raise NotImplementedError

    def describe(self, x: np.ndarray, seconds: float) -> str | None:
        """The ``note`` of a row with features ``x``, encoded in ``seconds`` (default: none)."""
        return None

    def _extract(self, images: list[ImageInput], progress: Progress | None) -> Iterator[list[Extracted]]:
        """Yield, per batch of ``batch_size`` judged inputs in order, one result per input: its features (one
        row) or its error. Inputs go through the one input stage (threads, repeated files read once, the error
        codes, ``min_size``), each decoded image through :meth:`prepare` (frame 0), a batch through :meth:`encode`."""
        return ImageReader(min_size=self.min_size).extract(
            images, lambda decoded, result: self.prepare(decoded.frames[0]),
            lambda prepared: np.asarray(self.encode(prepared))[:, None], progress, batch_size=self.batch_size)

    def features(self, images: ImageInput | Sequence[ImageInput], progress: Progress | None = None) -> FeatureBatch:
        """Features of every input that decodes and the errors of the others, by input position."""
        return FeatureBatch.collect(r for results in self._extract(as_list(images), progress) for r in results)

    def verify(self, images: ImageInput | Sequence[ImageInput],
               progress: Progress | None = None) -> list[VerificationOutput]:
        """One :class:`~attribution.outputs.VerificationOutput` per input, in order.

        ``score`` is the decision value (``>= 0``: a match; ``threshold`` is 0.0), ``false_match_rate`` the
        stated rate, ``false_match_rate_at_score`` the share of calibration negatives scoring as high
        (verifiers that keep them). An input that cannot be judged gets ``error`` and ``error_code``
        (:data:`attribution.transform.ERROR_CODES`); ``progress(done, total)`` follows each batch.
        Raises :class:`~attribution.heads.base.NotFittedError` before ``fit``.
        """
        self.check_is_fitted()
        images = as_list(images)
        outputs = [VerificationOutput(file=file_name(im), model=self.name, method=self.method) for im in images]
        negatives, real = (None if n is None or not len(n) else np.asarray(n) - self.offset_  # once per call,
                           for n in (self.calibration_negatives(), self.real_negatives()))  # decision scale
        start = time.perf_counter()
        for results in self._extract(images, progress):
            seconds = (time.perf_counter() - start) / max(len(results), 1)
            judged = [r for r in results if r.error is None]
            for r in results:
                if r.error is not None:
                    out = outputs[r.position]
                    out.error, out.error_code, out.skipped = r.error, r.error_code or "unreadable", r.skipped
            if judged:
                X = np.stack([r.features[0] for r in judged])
                decision = self.decision_function(X)
                rates = None if negatives is None else false_match_rate_at(negatives, decision)
                real_rates = None if real is None else false_match_rate_at(real, decision)
                for i, r in enumerate(judged):
                    out = outputs[r.position]
                    out.score, out.match, out.threshold = float(decision[i]), bool(decision[i] >= 0), 0.0
                    out.false_match_rate = self.false_match_rate
                    if rates is not None:
                        out.false_match_rate_at_score = float(rates[i])
                    if real_rates is not None:
                        out.real_false_match_rate_at_score = float(real_rates[i])
                    out.note = "; ".join(filter(None, (r.note, self.describe(X[i], seconds)))) or None
            start = time.perf_counter()
        return outputs
