"""Black-box verification: "was this image made by class ``label`` of an open-set head?"

No access to the generator is needed: the score is the head's class log-odds
``log p_c - log(1 - p_c)`` (:meth:`~attribution.heads.OpenSetHead.class_log_odds`, the calibrated
posterior of the LDA-family head), matched from the head's per-class threshold ``verify_offsets_[c]``,
set at its ``false_match_rate`` on out-of-fold (training classes) or left-out bank (enrolled classes)
images of the other classes. Those left-out bank scores are also the negatives that
``false_match_rate_at_score`` is read from.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import numpy as np

from ..constants import FORMAT_VERSION
from ..heads import HEADS, OpenSetHead
from ..persistence import backbone_section, card_header, validate_config
from .base import Progress, Verifier

if TYPE_CHECKING:
    from ..features import Extracted, FeatureExtractor
    from ..transform import ImageInput

CARD_TEMPLATE = card_header("image-forensics", "generator-attribution", "verification") + """
# {name}

Black-box verifier: "was this image made by `{label}`?", from the class log-odds of an open-set head
(`{head}`, classes: {classes}). A match needs a log-odds above the class threshold, set so that
{fmr:.1%} of other classes' held-out images match.

```bash
python -m attribution verify --verifier {name} --json image.png
```
"""


class BlackBoxVerifier(Verifier):
    """Verify one class of an open-set head from the image's features alone.

    Parameters
    ----------
    head : OpenSetHead
        The head (fitted, or fitted by :meth:`fit`); it is not changed by verification.
    label : str
        The class to verify.
    extractor : FeatureExtractor, optional
        Turns images into the head's features (decoding, crops, cache, minimum size); needed by
        :meth:`verify`, not by the feature-level methods. A verifier loaded from a folder that records
        its backbone builds it on first use.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(m, 1, (60, 8)) for m in (0, 3, 6)])
    >>> from attribution.heads import OpenSetHead
    >>> verifier = BlackBoxVerifier(OpenSetHead(n_components=8), "b").fit(X, ["a"] * 60 + ["b"] * 60 + ["c"] * 60)
    >>> verifier.predict(X[[0, 60]]).tolist()
    [-1, 1]
    """

    method: ClassVar[str] = "blackbox"
    _unsaved: ClassVar[tuple[str, ...]] = ("head", "extractor")  # the head is saved as state, with its own params

    def __init__(self, head: OpenSetHead, label: str, *, extractor: FeatureExtractor | None = None) -> None:
        self.head = head
        self.label = label
        self.extractor = extractor
        self._backbone_config: dict[str, Any] | None = None  # a loaded verifier's backbone, built on first use
        self._extractor_options: dict[str, Any] = {}

    def fit(self, X: np.ndarray, y: Any, **fit_params: Any) -> "BlackBoxVerifier":
        """Fit the head on features ``X`` ``(n_samples, n_features)`` and class names ``y``; returns ``self``."""
        self.head.fit(X, y, **fit_params)
        return self

    @property
    def name(self) -> str:
        return self.label

    @property
    def false_match_rate(self) -> float:
        return float(self.head.false_match_rate)

    @property
    def offset_(self) -> float:
        """The head's verification threshold of ``label`` (on :meth:`score_samples`)."""
        return float(self.head.verify_offsets_[self._code()])

    def _code(self) -> int:
        self.check_is_fitted()
        return self.head.classes_.index(self.label)

    def check_is_fitted(self) -> None:
        """Raises ``NotFittedError`` for an unfitted head and ``ValueError`` for a label it does not know."""
        self.head.check_is_fitted()
        if self.label not in self.head.classes_:
            raise ValueError(f"unknown model {self.label!r}; the head knows: {', '.join(self.head.classes_)}")

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Class log-odds of ``label``, ``(n_samples,)`` (unbounded; higher = more likely made by it)."""
        return self.head.class_log_odds(X)[:, self._code()]

    def calibration_negatives(self) -> np.ndarray:
        """Log-odds of ``label`` of the exemplar bank's other-class images, each left out of its class mean."""
        return self.head.verification_negatives(self.label)

    def real_negatives(self) -> np.ndarray:
        """Log-odds of ``label`` of the head's real photos, each source left out of the real class (empty for
        heads saved before they were kept)."""
        return self.head.real_negatives(self.label)

    def _extract(self, images: list[ImageInput], progress: Progress | None) -> Iterator[list[Extracted]]:
        """The head's own input stage: the feature extractor (cache, crops, minimum size, repeated files)."""
        if self.extractor is None and self._backbone_config is not None:
            from ..backbones import backbone_from_config  # torch: loaded with the first images
            from ..features import FeatureExtractor

            options = dict(self._extractor_options)
            device = options.pop("device", None)
            self.extractor = FeatureExtractor(backbone_from_config(self._backbone_config, device), **options)
        if self.extractor is None:
            raise ValueError("black-box verification of images needs the head's backbone: pass extractor= or "
                             "load the verifier with load_verifier('blackbox:<head>#<class>')")
        return self.extractor.stream(images, progress)

    # ------------------------------------------------------------ persistence: the head with the label
    def meta_dict(self) -> dict[str, Any]:
        """The head's type, parameters and JSON state (its arrays are :meth:`state_dict`)."""
        self.check_is_fitted()
        return {"head": self.head.to_config()["head"]}

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.head.state_dict()

    @classmethod
    def from_state(cls, params: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   **kwargs: Any) -> "BlackBoxVerifier":
        section = meta["head"]
        if section.get("type") not in HEADS:
            raise ValueError(f"unknown head type {section.get('type')!r}")
        head = HEADS[section["type"]].from_config({"format_version": FORMAT_VERSION, "head": section}, arrays)
        return cls(head, params["label"], extractor=params.get("extractor"))

    def to_config(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The config with the backbone it reads (when it has one) and the head's classes."""
        own: dict[str, Any] = {"classes": list(self.head.classes_)}
        if self.extractor is not None:
            own.update(backbone_section(self.extractor.backbone.config()))
        elif self._backbone_config is not None:
            own.update(self._backbone_config)
        return super().to_config({**own, **(config or {})})

    @classmethod
    def from_config(cls, config: dict[str, Any], arrays: dict[str, np.ndarray], *,
                    extractor: FeatureExtractor | None = None, **options: Any) -> "BlackBoxVerifier":
        """Rebuild a saved verifier. Without ``extractor``, the backbone its config records is built on the
        first :meth:`verify`, with ``options`` (``device``, ``batch_size``, ``min_size``, ``cache``)."""
        config = validate_config(config)
        verifier = super().from_config(config, arrays, extractor=extractor)
        if extractor is None and config.get("backbone") is not None:
            verifier._backbone_config = {"backbone": config["backbone"], "preprocess_cfg": config.get("preprocess_cfg")}
            verifier._extractor_options = {k: v for k, v in options.items() if v is not None}
        return verifier

    def model_card(self, config: dict[str, Any]) -> str:
        return CARD_TEMPLATE.format(name=config.get("name", f"blackbox-{self.label}"), label=self.label,
                                    head=type(self.head).__name__, classes=", ".join(self.head.classes_),
                                    fmr=self.false_match_rate)
