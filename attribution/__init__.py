"""Which generative model made this image? Open-set attribution, few-shot enrollment and verification."""
from .backbones import Backbone, create_backbone, list_backbones
from .constants import REAL, UNCERTAIN, UNKNOWN
from .features import FeatureCache, FeatureExtractor
from .heads import OpenSetHead
from .names import normalize_label
from .outputs import AttributionOutput, EnrollmentOutput, VerificationOutput
from .pipeline import Attributor
from .provenance import ProvenanceReader, ProvenanceReport, read_provenance
from .transform import ImageDecodeError, PreprocessCfg, load_image
from .zoo import ZooError, list_zoo, load_head, push_to_hub, user_zoo_dir

__all__ = ["AttributionOutput", "Attributor", "Backbone", "EnrollmentOutput", "FeatureCache", "FeatureExtractor",
           "ImageDecodeError", "OpenSetHead", "PreprocessCfg", "ProvenanceReader",
           "ProvenanceReport", "REAL", "UNCERTAIN", "UNKNOWN", "VerificationOutput", "ZooError",
           "create_backbone", "list_backbones", "list_zoo", "load_head", "load_image", "normalize_label",
           "push_to_hub", "read_provenance", "user_zoo_dir"]
__version__ = "0.1.0"
