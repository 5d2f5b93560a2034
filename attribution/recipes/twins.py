"""Aligned "synthetic twins" of real photos: reconstructions through small autoencoders.

Seven generator classes are few to learn what *generated* means in general. Following the idea of
aligned datasets (Rajan et al. 2024; B-Free, Guillaro et al. 2025), each real photo is passed
through small autoencoders, one per decoder upsampling (nearest + conv, transposed conv, pixel
shuffle, bilinear + conv). A reconstruction has the photo's content and framing but a decoder's
pixel traces, so a network that tells the two apart has to learn the traces, not the content.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

UPSAMPLINGS = ("nearest", "transposed", "pixel_shuffle", "bilinear")
LATENT_CHANNELS = 8  # at 1/4 resolution: 8 / 48 values per pixel block, a lossy bottleneck like a VAE's
MAX_TWIN_SIDE = 256  # photos are centre-cropped to at most this side before reconstruction


def _upsample(kind: str, c_in: int, c_out: int) -> nn.Module:
    if kind == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1))
    if kind == "bilinear":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(c_in, c_out, 3, padding=1))
    if kind == "transposed":
        return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
    if kind == "pixel_shuffle":
        return nn.Sequential(nn.Conv2d(c_in, c_out * 4, 3, padding=1), nn.PixelShuffle(2))
    raise ValueError(f"unknown upsampling {kind!r}; choose from {UPSAMPLINGS}")


class TwinAutoencoder(nn.Module):
    """Encoder to a 1/4-resolution latent, decoder with two ``upsampling`` layers; pixels in and out in 0-1."""

    def __init__(self, upsampling: str) -> None:
        super().__init__()
        self.upsampling = upsampling
        self.encoder = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(64, LATENT_CHANNELS, 1))
        self.decoder = nn.Sequential(nn.Conv2d(LATENT_CHANNELS, 64, 3, padding=1), nn.ReLU(inplace=True),
                                     _upsample(upsampling, 64, 48), nn.ReLU(inplace=True),
                                     _upsample(upsampling, 48, 32), nn.ReLU(inplace=True),
                                     nn.Conv2d(32, 3, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _random_patches(images: Sequence[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        im = images[rng.integers(len(images))]
        y, x = rng.integers(0, im.shape[0] - size + 1), rng.integers(0, im.shape[1] - size + 1)
        out[i] = im[y:y + size, x:x + size]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def train_autoencoder(upsampling: str, photos: Sequence[np.ndarray], steps: int, seed: int,
                      batch_size: int = 16, patch: int = 64, device: torch.device | str = "cpu") -> TwinAutoencoder:
    """Fit one autoencoder on random ``patch``-px crops of ``photos`` (uint8 ``(H, W, 3)``, sides >= patch)
    with an L1 loss for ``steps`` Adam steps."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TwinAutoencoder(upsampling).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        x = _random_patches(photos, batch_size, patch, rng).to(device)
        loss = (model(x) - x).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return model.eval()


@torch.inference_mode()
def reconstruct(model: TwinAutoencoder, photo: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The twin of ``photo`` (uint8 ``(H, W, 3)``): its centre crop of at most ``MAX_TWIN_SIDE`` px, with
    sides cut to multiples of 4, passed through ``model``; uint8 ``(h, w, 3)``."""
    h, w = (min(s, MAX_TWIN_SIDE) // 4 * 4 for s in photo.shape[:2])
    top, left = (photo.shape[0] - h) // 2, (photo.shape[1] - w) // 2
    x = torch.from_numpy(photo[top:top + h, left:left + w].copy()).permute(2, 0, 1)[None].float() / 255.0
    y = model(x.to(device))[0].permute(1, 2, 0).cpu().numpy()
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_twins(photos: Sequence[np.ndarray], steps: int, seed: int, device: torch.device | str = "cpu",
               log: Callable[[str], None] = print) -> dict[str, list[np.ndarray]]:
    """Train one autoencoder per upsampling on ``photos`` and return each one's twins of every photo,
    keyed ``twin_<upsampling>``."""
    twins = {}
    for i, kind in enumerate(UPSAMPLINGS):
        start = time.perf_counter()
        model = train_autoencoder(kind, photos, steps, seed + i, device=device)
        twins[f"twin_{kind}"] = [reconstruct(model, p, device) for p in photos]
        log(f"autoencoder {kind}: {steps} steps, {len(photos)} twins in {time.perf_counter() - start:.0f} s")
    return twins
