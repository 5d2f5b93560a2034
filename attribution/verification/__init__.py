"""Verification: "was this image made by model X?", one contract for every way of answering it.

- :class:`Verifier` (``base``): scikit-learn's one-class chain (``score_samples``, ``offset_``,
  ``decision_function``, ``predict``) and ``verify(images) -> list[VerificationOutput]``;
- :class:`BlackBoxVerifier` (``blackbox``): a class of an open-set head, from its class log-odds;
- :class:`OCCCLIPVerifier` (``occ_clip``): learnt CLIP prompts (Liu et al. 2024); needs open_clip;
- :class:`WhiteBoxVerifier` (``whitebox``): inversion of a latent-diffusion model's VAE decoder
  (RONAN / LatentTracer); needs diffusers;
- :func:`load_verifier` / :func:`list_verifiers` (``factory``): ``blackbox:<head>#<class>``,
  ``occ-clip:<folder>``, ``whitebox:<pipeline>`` or a saved verifier.

Submodules are imported on first use of their names, so importing this package loads neither torch,
open_clip nor diffusers.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Verifier, false_match_rate_at
    from .blackbox import BlackBoxVerifier
    from .factory import list_verifiers, load_verifier
    from .occ_clip import OCCCLIPVerifier
    from .whitebox import WhiteBoxVerifier

_WHERE = {"Verifier": "base", "false_match_rate_at": "base", "BlackBoxVerifier": "blackbox",
          "OCCCLIPVerifier": "occ_clip", "WhiteBoxVerifier": "whitebox", "list_verifiers": "factory",
          "load_verifier": "factory"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
