"""Shared fixtures. Tests run offline and never touch the user's real zoo."""
import os
import struct
import tempfile
import zlib
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("ATTRIBUTION_HOME", tempfile.mkdtemp(prefix="attribution-test-home-"))

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEV_DATA = Path(os.environ.get("ATTRIBUTION_DEV_DATA", REPO.parent / "shared" / "data" / "dev"))


@pytest.fixture(scope="session")
def dev_data() -> Path:
    if not (DEV_DATA / "real").is_dir():
        pytest.skip(f"dev data not found at {DEV_DATA} (set ATTRIBUTION_DEV_DATA)")
    return DEV_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared CPU run many times faster on one intra-op thread than contending for two."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty user zoo for this test."""
    monkeypatch.setenv("ATTRIBUTION_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_image(path: Path, seed: int = 0, size: int = 64, fmt: str = "PNG") -> Path:
    """A small textured synthetic image."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
    arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-8, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def spectra_head(root: Path, *options: str) -> Path:
    """A tiny head on the weight-free residual spectra, trained by the CLI (seconds) on made-up classes under
    ``root / "data"`` (``real`` and ``gen_a`` 256 px, ``gen_b`` 128 px, so its spectrum differs; 12 each, named by
    seed), with its duplicate index and any further ``train`` ``options``; returns its folder ``root / "head"``."""
    import subprocess
    import sys

    for label, first in (("real", 0), ("gen_a", 100), ("gen_b", 200)):
        (root / "data" / label).mkdir(parents=True)
        for s in range(first, first + 12):
            make_image(root / "data" / label / f"{s}.png", seed=s, size=128 if label == "gen_b" else 256)
    subprocess.run([sys.executable, "-m", "attribution", "train", "--backbone", "residual_spectra", "--data",
                    str(root / "data"), "--out", str(root / "head"), "--crops", "1", "--n-components", "8",
                    "--augment", "0", "--quiet", "--no-cache", *options],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return root / "head"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_png_chunks(png: bytes, *chunks: bytes) -> bytes:
    """``png`` with ``chunks`` (from :func:`png_chunk`) inserted right after IHDR; the pixels are untouched."""
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:ihdr_end] + b"".join(chunks) + png[ihdr_end:]


def stub_attributor(batch_size: int = 4, size: int = 256, n_crops: int = 5, **kwargs):
    """An Attributor whose backbone is real preprocessing (crops) plus per-channel mean and std pooling:
    the decode / crop / batch pipeline at full cost, the network at almost none. Its head knows two
    classes of synthetic images."""
    import torch

    from attribution import Attributor, OpenSetHead
    from attribution.backbones.base import Backbone
    from attribution.transform import PreprocessCfg

    class PoolBackbone(Backbone):
        def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]

    backbone = PoolBackbone("pool:test", ["mean", "std"], PreprocessCfg(size=size, n_crops=n_crops), device="cpu")
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(m, 1, (30, 6)) for m in (0, 3)])
    head = OpenSetHead(n_components=4).fit(X, ["real"] * 30 + ["gen"] * 30)
    return Attributor(backbone, head, {}, batch_size=batch_size, **kwargs)


# the default open_clip tokenizer needs the full 49408-token vocabulary; everything else is tiny
TINY_CLIP_CFG = {"embed_dim": 32,
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}}


def tiny_clip(folder: Path, seed: int = 0) -> str:
    """A tiny random open_clip CLIP saved as an open_clip ``local-dir:`` folder; returns its backbone id
    (loadable offline, in this process and in a subprocess)."""
    import json

    import open_clip
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {
        "mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}}))
    torch.manual_seed(seed)
    save_file(CLIP(**TINY_CLIP_CFG).state_dict(), str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


def tiny_vae(seed: int = 0, sample_size: int = 32):
    """An untrained 3-level (4x downsampling), 16-channel diffusers ``AutoencoderKL``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=1,
                         norm_num_groups=16, sample_size=sample_size, scaling_factor=1.0).eval()


# ----------------------------------------------------------------------------- predict rows for renderers
ROW_FACTS = {"width": 640, "height": 480, "format": "JPEG", "frames": 1, "has_alpha": False, "bit_depth": 8,
             "grayscale": False, "exif_orientation_applied": False, "pixel_sha256": "5d" * 32}
ROW_SCORES = {"real": 0.2, "dalle3": 0.637, "glid3_xl": 0.163}
EXACT = {"class": "dalle3", "id": "dalle3/2023-10-04_0.jpeg", "match": "exact", "distance": 0}


def predict_row(label: str, reason: str, **extra) -> dict:
    """A ``predict --json`` row of a head with a synthetic probe (``extra`` fields added or replaced), whose nearest
    examples are the known image :data:`EXACT` at distance 0 and a tile of another class."""
    return {"file": "photo.jpg", "label": label, "known": label in ROW_SCORES, "scores": ROW_SCORES,
            "unknown_score": 0.791, "threshold": 0.719, "reason": reason, "synthetic_score": 0.5,
            "synthetic_threshold": 0.94, "real_threshold": 0.08, **ROW_FACTS,
            "nearest": [{"label": "dalle3", "id": "dalle3/2023-10-04_0.jpeg", "distance": 0.0},
                        {"label": "glid3_xl", "id": "glid3_xl/a/7.png#2", "distance": 1.25}], **extra}
