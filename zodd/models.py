"""ConvNet-D, the field's reference network for distillation.

D blocks of [3x3 conv (width channels) -> instance norm -> ReLU -> 2x2 average pooling], then a
linear classifier. Instance norm is GroupNorm with one group per channel, as in the reference code.
Defaults: width 128, depth 3 for 28-32 px images; width 64, depth 2 for the 8 px digits.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def default_shape(image_size: int) -> tuple[int, int]:
    """(width, depth) for an image side length."""
    return (64, 2) if image_size <= 16 else (128, 3)


class ConvNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int,
                 width: int | None = None, depth: int | None = None):
        super().__init__()
        w0, d0 = default_shape(image_size)
        width, depth = width or w0, depth or d0
        if image_size >> depth < 1:
            raise ValueError(f"depth {depth} pools a {image_size} px image below 1 px")
        blocks: list[nn.Module] = []
        c = channels
        for _ in range(depth):
            blocks += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            c = width
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.feature_dim = width * (image_size >> depth) ** 2
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features, flattened."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def build_model(channels: int, num_classes: int, image_size: int, width: int | None = None,
                depth: int | None = None, seed: int | None = None) -> ConvNet:
    """A freshly initialised ConvNet; with ``seed`` its initialisation is reproducible."""
    if seed is None:
        return ConvNet(channels, num_classes, image_size, width, depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvNet(channels, num_classes, image_size, width, depth)
