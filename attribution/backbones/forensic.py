"""Weight-free forensic features: power spectra of the median-filter noise residual of each crop.

Generators leave periodic traces (upsampling grids, decoder artefacts) that show as peaks in the
spectrum of what a 3x3 median filter removes. Two views of that spectrum are offered as extra
"layers" of a backbone: ``spectrum`` (the 2-D spectrum pooled to 32x32) and ``radial`` (its mean
in 48 rings from DC to Nyquist). Both are log powers with each image's mean removed.

They are a backbone of their own (``residual_spectra``), to be concatenated with others; the
EfficientNet backbone still accepts them as layers so heads saved that way keep loading.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..transform import PreprocessCfg
from .base import Backbone

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


class SpectraBackbone(Backbone):
    """The weight-free residual spectra as a backbone (id ``residual_spectra``; layers ``spectrum``, ``radial``)."""

    family = "residual_spectra"

    def __init__(self, layers: Sequence[str] | None = None, preprocess_cfg: PreprocessCfg | None = None,
                 device: str | torch.device | None = None) -> None:
        layers = tuple(layers or FORENSIC_LAYERS)
        bad = [name for name in layers if name not in FORENSIC_LAYERS]
        if bad:
            raise ValueError(f"unknown layers {bad}; choose from {list(FORENSIC_LAYERS)}")
        super().__init__("residual_spectra", layers, preprocess_cfg or PreprocessCfg(), device)

    def _forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = residual_spectra(self.pixels(x))
        return [out[name] for name in self.layers]
