"""Kernel ridge regression (krr): how well S, as the training set of a kernel regressor, predicts
the step's real batch (the KIP / RFAD family).

Features phi are the step's network's penultimate embedding, scaled by 1/sqrt(dim); with
``--updater native`` that network is freshly drawn every iteration, so over a run the kernel is
a random-ConvNet kernel averaged over draws (RFAD's random-feature view of the ConvNet NNGP
kernel, one network per step). With the step's Siamese augmentation applied to both sides,

    K_ss = phi(S) phi(S)^T,  K_rs = phi(R) phi(S)^T,
    lambda = ridge * trace(K_ss) / |S|,
    loss = mean_r || K_rs (K_ss + lambda I)^-1 Y_s - Y_r ||^2

with one-hot targets centred by 1/classes. The regression couples every class of S, so the
objective is not separable: a zero-order estimate covers the whole set at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.matching import BoundMatching, Matching
from zodd.types import StepContext


@dataclass(frozen=True)
class KernelRidge(Matching):
    name: str = "krr"
    ridge: float = 1e-3  # relative to the mean of K_ss's diagonal
    # Adam at KIP's 0.01: the loss's scale follows the features', so a scale-free step
    # (on digits, 100 iterations: SGD wanted lr 100-300, Adam 0.01-0.03 scored alike)
    default_optimizer: str = "adam"
    default_lr: float | None = 0.01

    def bind(self, ctx: StepContext) -> "BoundKRR":
        return BoundKRR(ctx, self.flip, self.ridge)


class BoundKRR(BoundMatching):
    separable = False  # the regression couples the classes
    max_images = 4096

    def __init__(self, ctx: StepContext, flip: bool, ridge: float):
        super().__init__(ctx, flip)
        self.ridge = ridge
        with torch.no_grad():
            real = self._augment(ctx.real)
            classes, n = real.shape[:2]
            self.real_features = self._features(real.flatten(0, 1))  # [M, D]
            labels = torch.arange(classes, device=real.device).repeat_interleave(n)
            self.real_targets = self._targets(labels)

    def _features(self, x: Tensor) -> Tensor:
        phi = self.net.embed(x)
        return phi / phi.shape[-1] ** 0.5

    def _targets(self, labels: Tensor) -> Tensor:
        return F.one_hot(labels, self.num_classes).float() - 1.0 / self.num_classes

    def _blocks(self, candidates: Tensor) -> Tensor:
        """One block, the whole loss: [K, 1]."""
        k, n = candidates.shape[:2]
        syn = self._augment(candidates.unflatten(1, (self.num_classes, n // self.num_classes)))
        phi = self._features(syn.flatten(0, 2)).unflatten(0, (k, n))  # [K, N, D]
        labels = torch.arange(self.num_classes, device=phi.device).repeat_interleave(
            n // self.num_classes)
        gram = phi @ phi.transpose(1, 2)  # [K, N, N]
        lam = self.ridge * gram.diagonal(dim1=1, dim2=2).mean(1)  # [K]
        eye = torch.eye(n, device=phi.device, dtype=phi.dtype)
        weights = torch.linalg.solve(gram + lam[:, None, None] * eye,
                                     self._targets(labels).expand(k, -1, -1))  # [K, N, C]
        predicted = (self.real_features @ phi.transpose(1, 2)) @ weights  # [K, M, C]
        return ((predicted - self.real_targets) ** 2).sum(-1).mean(-1, keepdim=True)
