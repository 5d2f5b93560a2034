"""Names and numbers shared across the package. Imports nothing."""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1

REAL = "real"
UNKNOWN = "unknown"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_IMAGE_PIXELS = 100_000_000  # ~ 10000 x 10000; larger files are refused as decompression bombs
MAX_WORKING_SIDE = 2048  # larger images are downscaled (area) before preprocessing
DEFAULT_ZOO_NAME = "open-set-efficientnet-lite2"
