"""Distribution matching (DM): the squared distance between the mean embeddings of the real and
the synthetic images of each class, under the step's network and augmentation."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from objectives.matching import Matching
from zodd.augment import apply_per_class, random_affine
from zodd.types import StepContext, as_generator

MAX_IMAGES = 4096  # images per forward pass when many candidates are evaluated at once


@dataclass(frozen=True)
class DistributionMatching(Matching):
    name: str = "dm"

    def bind(self, ctx: StepContext) -> "BoundDM":
        return BoundDM(ctx, self.flip)


class BoundDM:
    differentiable = True
    separable = True  # class b's block depends only on class b's images

    def __init__(self, ctx: StepContext, flip: bool):
        self.net, self.num_classes = ctx.net, ctx.num_classes
        self.theta = (random_affine(ctx.num_classes, as_generator(ctx.seed), flip)
                      if ctx.augment else None)
        with torch.no_grad():
            real = self._augment(ctx.real)
            classes, n = real.shape[:2]
            self.real_mean = self.net.embed(real.flatten(0, 1)).unflatten(0, (classes, n)).mean(1)

    def _augment(self, x: Tensor) -> Tensor:
        return x if self.theta is None else apply_per_class(x, self.theta)

    def blocks(self, candidates: Tensor) -> Tensor:
        """Per-class losses [K, classes]; they sum to ``self(candidates)``."""
        k, n = candidates.shape[:2]
        per_chunk = max(1, MAX_IMAGES // n)
        out = [self._blocks(candidates[i:i + per_chunk]) for i in range(0, k, per_chunk)]
        return torch.cat(out)

    def _blocks(self, candidates: Tensor) -> Tensor:
        k, n = candidates.shape[:2]
        syn = candidates.unflatten(1, (self.num_classes, n // self.num_classes))
        syn = self._augment(syn)
        emb = self.net.embed(syn.flatten(0, 2)).unflatten(0, syn.shape[:3]).mean(2)
        return ((emb - self.real_mean) ** 2).sum(-1)

    def __call__(self, candidates: Tensor) -> Tensor:
        return self.blocks(candidates).sum(1)
