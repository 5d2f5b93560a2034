"""scikit-learn-style base for heads: parameters from ``__init__``, fitted state in arrays + JSON.

Heads need only NumPy (and scikit-learn to fit). They are saved like every fitted model of the package
(:class:`~attribution.persistence.PretrainedMixin`): :meth:`BaseHead.state_dict` gives the arrays for
``model.safetensors``, :meth:`BaseHead.meta_dict` the JSON-able fitted state for ``config.json``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..persistence import HEAD, PretrainedMixin


class NotFittedError(RuntimeError):
    """A head or verifier was used before ``fit`` (or before its state was loaded)."""


class BaseHead(PretrainedMixin):
    """Common plumbing: ``state_dict``/``meta_dict``, ``from_state`` and ``clone`` (``get_params`` is the mixin's)."""

    kind: ClassVar[str] = HEAD
    _array_attrs: ClassVar[tuple[str, ...]] = ()
    _meta_attrs: ClassVar[tuple[str, ...]] = ()

    def check_is_fitted(self) -> None:
        """Raises :class:`NotFittedError` before ``fit``."""
        if not all(hasattr(self, name) for name in self._array_attrs):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")

    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_is_fitted()
        return {name: np.ascontiguousarray(getattr(self, name)) for name in self._array_attrs}

    def meta_dict(self) -> dict[str, Any]:
        self.check_is_fitted()
        return {name: getattr(self, name) for name in self._meta_attrs}

    @classmethod
    def from_state(cls, params: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   **kwargs: Any) -> "BaseHead":
        """Rebuild a fitted head; unknown parameter keys are dropped (forward compatibility).

        Raises ``ValueError`` when the state lacks a fitted attribute.
        """
        names = set(cls._param_names())
        head = cls(**{k: v for k, v in {**params, **kwargs}.items() if k in names})
        missing = [n for n in (*cls._array_attrs, *cls._meta_attrs) if n not in arrays and n not in meta]
        if missing:
            raise ValueError(f"{cls.__name__} state is missing {missing}")
        for name in cls._array_attrs:
            setattr(head, name, np.asarray(arrays[name]))
        for name in cls._meta_attrs:
            setattr(head, name, meta[name])
        return head

    def clone(self) -> "BaseHead":
        """An independent copy of the fitted head (arrays shared until replaced; heads never mutate arrays in place)."""
        return type(self).from_state(self.get_params(), dict(self.meta_dict()), self.state_dict())
