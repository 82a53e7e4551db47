"""Kernel ridge regression (krr): how well S, as the training set of a kernel regressor, predicts
the step's real batch (the KIP / RFAD family).

Features phi are the step's network's penultimate embedding, scaled by 1/sqrt(dim); with
``--updater native`` that network is freshly drawn every iteration, so over a run the kernel is
a random-ConvNet kernel averaged over draws (RFAD's random-feature view of the ConvNet NNGP
kernel, one network per step). With the step's Siamese augmentation applied to both sides,

    K_ss = phi(S) phi(S)^T,  K_rs = phi(R) phi(S)^T,
    lambda = ridge * trace(K_ss) / |S|,
    loss = mean_r || K_rs (K_ss + lambda I)^-1 Y_s - Y_r ||^2

with one-hot targets centred by 1/classes, or, with ``--labels learn``, S's own label vectors
as Y_s (zodd.labels). The regression couples every class of S, so the objective is not
separable: a zero-order estimate covers the whole set at once.

``frepo`` is the same regression as FRePo's ``nfr`` and ``proto_train_step`` compute it
(Zhou et al., NeurIPS 2022; its public code, yongchao97/FRePo, ``lib/datadistillation/
frepo.py``): ridge ``1e-6`` times the trace's mean (``reg=1e-6``), the loss
``mean_r sum_c 0.5 (pred - y)^2`` (its ``mean_squared_loss``) plus the label margin term
``mean_i -min(top1(y_i) - top2(y_i), 1/classes)`` (``lb_margin_th``, which keeps learned
labels from flattening), and Y_s at its start FRePo's centred one-hot divided by
``sqrt(classes / 10)`` (``init_proto(scale_y=True)``) whether it is learned or not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from objectives.matching import BoundMatching, Matching
from zodd.labels import centred, initial
from zodd.types import StepContext


@dataclass(frozen=True)
class KernelRidge(Matching):
    name: str = "krr"
    ridge: float = 1e-3  # relative to the mean of K_ss's diagonal
    reads_labels: bool = True
    half: bool = False  # frepo: 0.5 (pred - y)^2, as FRePo's mean_squared_loss
    margin: bool = False  # frepo: FRePo's label margin term
    scaled_targets: bool = False  # frepo: hard Y_s as FRePo's init_proto makes them
    # Adam at KIP's 0.01: the loss's scale follows the features', so a scale-free step
    # (on digits, 100 iterations: SGD wanted lr 100-300, Adam 0.01-0.03 scored alike)
    default_optimizer: str = "adam"
    default_lr: float | None = 0.01

    def bind(self, ctx: StepContext) -> "BoundKRR":
        return BoundKRR(ctx, self)


class BoundKRR(BoundMatching):
    separable = False  # the regression couples the classes
    max_images = 4096

    def __init__(self, ctx: StepContext, spec: KernelRidge):
        super().__init__(ctx, spec.flip)
        self.spec = spec
        with torch.no_grad():
            real = self._augment(ctx.real)
            classes, n = real.shape[:2]
            self.real_features = self._features(real.flatten(0, 1))  # [M, D]
            labels = torch.arange(classes, device=real.device).repeat_interleave(n)
            self.real_targets = centred(labels, self.num_classes)

    def _features(self, x: Tensor) -> Tensor:
        phi = self.net.embed(x)
        return phi / phi.shape[-1] ** 0.5

    def _hard(self, n: int, device) -> Tensor:
        """Y_s of a class-major set of ``n`` images with one-hot labels: ``[n, C]``."""
        per_class = n // self.num_classes
        if self.spec.scaled_targets:
            return initial(self.num_classes, per_class).to(device)
        return centred(torch.arange(self.num_classes, device=device).repeat_interleave(
            per_class), self.num_classes)

    def _blocks(self, candidates: Tensor, labels: Tensor | None = None) -> Tensor:
        """One block, the whole loss: [K, 1]. ``labels``: each candidate's Y_s ``[K, N, C]``
        (None: the one-hot targets)."""
        k, n = candidates.shape[:2]
        syn = self._augment(candidates.unflatten(1, (self.num_classes, n // self.num_classes)))
        phi = self._features(syn.flatten(0, 2)).unflatten(0, (k, n))  # [K, N, D]
        targets = self._hard(n, phi.device).expand(k, -1, -1) if labels is None else labels
        gram = phi @ phi.transpose(1, 2)  # [K, N, N]
        lam = self.spec.ridge * gram.diagonal(dim1=1, dim2=2).mean(1)  # [K]
        eye = torch.eye(n, device=phi.device, dtype=phi.dtype)
        weights = torch.linalg.solve(gram + lam[:, None, None] * eye, targets)  # [K, N, C]
        predicted = (self.real_features @ phi.transpose(1, 2)) @ weights  # [K, M, C]
        loss = ((predicted - self.real_targets) ** 2).sum(-1).mean(-1, keepdim=True)
        if self.spec.half:
            loss = loss * 0.5
        if self.spec.margin:
            top = targets.topk(2, dim=-1).values  # [K, N, 2]
            gap = (top[..., 0] - top[..., 1]).clamp(max=1.0 / self.num_classes)
            loss = loss - gap.mean(-1, keepdim=True)
        return loss


@dataclass(frozen=True)
class FeatureRegression(KernelRidge):
    """FRePo's neural feature regression (module docstring): its ridge, loss and targets; its
    model pool and optimiser come with ``--recipe frepo`` (zodd.networks, zodd.steppers)."""

    name: str = "frepo"
    ridge: float = 1e-6  # FRePo's nfr(reg=1e-6)
    half: bool = True
    margin: bool = True
    scaled_targets: bool = True
    default_optimizer: str = "lamb"  # FRePo's proto optimiser (config.kernel.optimizer)
    default_lr: float | None = 3e-4  # config.kernel.learning_rate
