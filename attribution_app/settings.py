"""The app's limits and the environment variables an operator sets (all documented in the README)."""
from __future__ import annotations

import os

ZOO_ENV = "ATTRIBUTION_ZOO"  # head to serve (name, folder or hf-hub:org/repo); default: the shipped head
SHARE_ENV = "ATTRIBUTION_SHARE"  # 1: ask gradio for a public link (same as --share)
SECRET_ENV = "ATTRIBUTION_SECRET"  # signs visitors' stored enrollments; unset: a new secret per run
ADMIN_TOKEN_ENV = "ATTRIBUTION_ADMIN_TOKEN"  # set: web visitors who type it may change the served head / zoo
C2PA_ANCHORS_ENV = "ATTRIBUTION_C2PA_TRUST_ANCHORS"  # PEM file of CA certificates trusted for C2PA signers
HF_TOKEN_ENV = "HF_TOKEN"  # write token for pushing a head to the Hub (admin only)

MAX_ATTRIBUTE_IMAGES = 200
MAX_VERIFY_IMAGES = 200
MAX_ENROLL_IMAGES = 50
MAX_FILE_SIZE = "25mb"
MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed, all members of one request
NEAREST = 4  # most similar known examples shown for one image in the browser
THUMBNAIL = 160
QUEUE_SIZE = 64
CONCURRENCY = 2  # default per event; model work shares one group of 1 (2 CPU cores are enough for one forward)
UPLOAD_TYPES = ["image", ".heic", ".heif", ".avif", ".zip"]  # browsers do not list HEIC/AVIF as images


def env_flag(name: str) -> bool:
    """``True`` for 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def admin_enabled() -> bool:
    """Whether the operator started the app with an admin token (read at call time)."""
    return bool(os.environ.get(ADMIN_TOKEN_ENV, "").strip())
