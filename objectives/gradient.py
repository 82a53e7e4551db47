"""Gradient matching (Dataset Condensation): for each class, the layer-wise distance between the
network's cross-entropy gradient on the real images and on the synthetic images,
sum over output units of (1 - cosine); biases and norm parameters are skipped, as in the
reference. Candidates are evaluated together with torch.func (vmap over candidates and classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

from objectives.matching import BoundMatching, Matching
from zodd.types import StepContext


@dataclass(frozen=True)
class GradientMatching(Matching):
    name: str = "gm"
    default_lr: float | None = 0.1
    native: str = "train"
    splits_real: bool = True  # the classes' mean gradients: the shares' weighed by their size
    # Dataset Condensation's outer_loop / inner_loop by IPC (its published settings)
    schedule: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (10, 10, 50), (20, 20, 25),
                                                  (30, 30, 20), (40, 40, 15), (50, 50, 10))

    def bind(self, ctx: StepContext) -> "BoundGM":
        return BoundGM(ctx, self.flip)


class BoundGM(BoundMatching):
    max_images = 2048

    def __init__(self, ctx: StepContext, flip: bool):
        super().__init__(ctx, flip)
        self.params = {k: v.detach() for k, v in ctx.net.named_parameters() if v.ndim > 1}
        self.buffers = {k: v.detach() for k, v in ctx.net.named_parameters() if v.ndim <= 1}
        with torch.no_grad():
            real = self._augment(ctx.real)
        self.real_grads = self._class_grads(real[None])  # [1, C, ...] per layer
        if ctx.shard is not None:  # the shares' mean gradients weighed by their sizes
            share = torch.tensor(float(real.shape[1]), device=real.device)
            n = ctx.shard.sum(share)
            self.real_grads = {k: ctx.shard.sum(g * share) / n
                               for k, g in self.real_grads.items()}

    def _loss(self, params: dict, x: Tensor, label: Tensor) -> Tensor:
        logits = functional_call(self.net, {**params, **self.buffers}, (x,))
        return F.cross_entropy(logits, label.expand(x.shape[0]))

    def _class_grads(self, x: Tensor) -> dict[str, Tensor]:
        """Per-candidate, per-class gradients for ``x [K, C, n, ch, h, w]``."""
        labels = torch.arange(self.num_classes, device=x.device)
        per_class = vmap(grad(self._loss), in_dims=(None, 0, 0))
        per_candidate = vmap(per_class, in_dims=(None, 0, None))
        return per_candidate(self.params, x, labels)

    def _blocks(self, candidates: Tensor) -> Tensor:
        n = candidates.shape[1]
        syn = self._augment(candidates.unflatten(1, (self.num_classes, n // self.num_classes)))
        syn_grads = self._class_grads(syn)
        total = 0.0
        for name, g_syn in syn_grads.items():
            g_real = self.real_grads[name]
            a = g_real.flatten(3) if g_real.ndim > 4 else g_real  # [K, C, out, fan_in]
            b = g_syn.flatten(3) if g_syn.ndim > 4 else g_syn
            cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)
            total = total + (1 - cos).sum(-1)
        return total
