"""Names and numbers shared across the package. Imports nothing."""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1

REAL = "real"
UNKNOWN = "unknown"
UNCERTAIN = "uncertain"

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_IMAGE_PIXELS = 100_000_000  # ~ 10000 x 10000; larger files are refused as decompression bombs
DEFAULT_ZOO_NAME = "open-set-efficientnet-lite2"
