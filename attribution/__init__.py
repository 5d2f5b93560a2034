"""Which generative model made this image? Open-set attribution, few-shot enrollment and verification.

The public names are imported on first use (PEP 562), so ``import attribution.heads`` or
``from attribution import load_head`` needs NumPy but not torch; ``attribution.Attributor`` loads the backbones.
"""
import importlib

_EXPORTS = {  # public name -> submodule defining it
    "AttributionOutput": "outputs", "EnrollmentOutput": "outputs", "VerificationOutput": "outputs",
    "Attributor": "pipeline",
    "Backbone": "backbones", "create_backbone": "backbones", "list_backbones": "backbones",
    "FeatureCache": "features", "FeatureExtractor": "features",
    "ImageDecodeError": "transform", "PreprocessCfg": "transform", "load_image": "transform",
    "OpenSetHead": "heads",
    "ProvenanceReader": "provenance", "ProvenanceReport": "provenance", "read_provenance": "provenance",
    "REAL": "constants", "UNCERTAIN": "constants", "UNKNOWN": "constants", "DEFAULT_ZOO_NAME": "constants",
    "MIN_ENROLL_IMAGES": "constants", "MIN_IMAGE_SIZE": "constants",
    "NotFittedError": "heads",
    "WARN_NOT_FLAGGED": "enrollment", "WARN_PROBA": "enrollment", "WARN_SHARE": "enrollment",
    "enrolled_config": "enrollment", "REASON_TEXT": "heads", "ClassDelta": "heads",
    "head_fingerprint": "enrollment",
    "ZooError": "zoo", "list_zoo": "zoo", "load_head": "zoo", "push_to_hub": "zoo", "user_zoo_dir": "zoo",
    "normalize_label": "names",
    "Verifier": "verification", "load_verifier": "verification",
}

__all__ = ["AttributionOutput", "Attributor", "Backbone", "DEFAULT_ZOO_NAME", "EnrollmentOutput", "FeatureCache",
           "FeatureExtractor", "ImageDecodeError", "MIN_ENROLL_IMAGES", "MIN_IMAGE_SIZE", "NotFittedError",
           "OpenSetHead", "PreprocessCfg", "ProvenanceReader", "ProvenanceReport", "REAL", "REASON_TEXT", "UNCERTAIN",
           "UNKNOWN", "VerificationOutput", "Verifier", "WARN_NOT_FLAGGED", "WARN_PROBA", "WARN_SHARE", "ZooError",
           "ClassDelta", "create_backbone",
           "enrolled_config", "head_fingerprint", "list_backbones", "list_zoo", "load_head", "load_image",
           "load_verifier", "normalize_label", "push_to_hub", "read_provenance", "user_zoo_dir"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Import the submodule defining public ``name`` and return it (cached in the package afterwards)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
