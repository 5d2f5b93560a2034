"""Names and numbers shared across the package. Imports nothing."""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 2  # of config.json; 1 (flat keys) still loads

REAL = "real"
UNKNOWN = "unknown"
UNCERTAIN = "uncertain"

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif")
MAX_IMAGE_PIXELS = 100_000_000  # ~ 10000 x 10000; larger files are refused as decompression bombs
MAX_FILE_BYTES = 512 * 2**20  # larger files are refused unread (too_large)
MIN_IMAGE_SIZE = 64  # px on the short side; smaller images get a too_small error, no label
MAX_FRAMES = 4  # frames of an animated image judged (evenly spaced)
MIN_ENROLL_IMAGES = 3  # readable images an enrollment needs
MAX_ENROLL_IMAGES = 200  # images one enrollment takes at most
EXEMPLAR_DIR = "exemplars"  # thumbnails of enrolled images in a head folder: exemplars/<class>/<nnn>.jpg
HASHES_NAME = "exemplar_hashes.json"  # duplicate index of a head: hashes of its training and enrolled images
NEAR_DUPLICATE_DISTANCE = 20  # max differing bits of the 256-bit pHash for a near duplicate (README: how measured)
DEFAULT_ZOO_NAME = "open-set-efficientnet-lite2"
DEFAULT_BACKBONE = "efficientnet_lite2:imagenet+residual_spectra+residual_cnn:residual-cnn"  # of the default head
