"""Weight-free forensic features: power spectra of the median-filter noise residual of each crop.

Generators leave periodic traces (upsampling grids, decoder artefacts) that show as peaks in the
spectrum of what a 3x3 median filter removes. Two views of that spectrum are offered as extra
"layers" of a backbone: ``spectrum`` (the 2-D spectrum pooled to 32x32) and ``radial`` (its mean
in 48 rings from DC to Nyquist). Both are log powers with each image's mean removed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FORENSIC_LAYERS = ("spectrum", "radial")
SPECTRUM_SIDE = 32
RADIAL_BINS = 48
_LUMA = (0.299, 0.587, 0.114)


def _median3x3(g: torch.Tensor) -> torch.Tensor:
    padded = F.pad(g[:, None], (1, 1, 1, 1), mode="reflect")
    return padded.unfold(2, 3, 1).unfold(3, 3, 1).reshape(*g.shape, 9).median(dim=-1).values


def _radial_index(size: int, device: torch.device) -> torch.Tensor:
    f = torch.fft.fftfreq(size, device=device)
    r = torch.sqrt(f[None, :] ** 2 + f[:, None] ** 2) / 0.5  # 1 = Nyquist along an axis
    return (r * RADIAL_BINS).long().clamp(max=RADIAL_BINS - 1).flatten()


def residual_spectra(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``spectrum`` (n, 1024) and ``radial`` (n, 48) for ``pixels`` (n, 3, S, S) in 0-255, S a multiple of 32."""
    x = pixels.float()
    size = x.shape[-1]
    if x.shape[-2] != size or size % SPECTRUM_SIDE:
        raise ValueError(f"forensic features need square crops whose side is a multiple of {SPECTRUM_SIDE}; got {tuple(x.shape[-2:])}")
    g = sum(w * x[:, c] for c, w in enumerate(_LUMA))
    res = g - _median3x3(g)
    res = res - res.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(res).abs() ** 2 / (size * size)
    pooled = F.avg_pool2d(torch.fft.fftshift(power, dim=(1, 2))[:, None], size // SPECTRUM_SIDE).flatten(1)
    index = _radial_index(size, x.device)
    ring_sum = torch.zeros(len(x), RADIAL_BINS, device=x.device).index_add_(1, index, power.flatten(1))
    radial = ring_sum / torch.bincount(index, minlength=RADIAL_BINS).clamp(min=1)
    out = {}
    for name, value in (("spectrum", pooled), ("radial", radial)):
        logged = torch.log(value + 1e-3)
        out[name] = logged - logged.mean(dim=1, keepdim=True)
    return out
