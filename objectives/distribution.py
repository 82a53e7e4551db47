"""Distribution matching (DM): the squared distance between the mean embeddings of the real and
the synthetic images of each class, under the step's network and augmentation.

With ``StepContext.ce_weight`` w > 0 each class's loss also holds IDM's class-aware
regulariser: w times the mean cross-entropy of that class's augmented synthetic images under the
step's network (their logits from the same embeddings), so the blocks stay per class and the
term is part of the black box's value, for every estimator alike."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.matching import BoundMatching, Matching
from zodd import compiled
from zodd.types import StepContext


@dataclass(frozen=True)
class DistributionMatching(Matching):
    name: str = "dm"
    shares_real_pass: bool = True
    splits_real: bool = True  # the classes' mean embeddings: sums over the shares

    def bind(self, ctx: StepContext) -> "BoundDM":
        return BoundDM(ctx, self.flip)


class BoundDM(BoundMatching):
    def __init__(self, ctx: StepContext, flip: bool):
        super().__init__(ctx, flip)
        k, net = ctx.one_pass, compiled.maybe(self.net, ctx.compile)
        with torch.no_grad():
            real = self._augment(ctx.real)
            classes, n = real.shape[:2]
            parts = [net.embed(real[:, k:].flatten(0, 1)).unflatten(0, (classes, n - k))
                     ] if k < n else []
        self.one_pass = None  # --one-pass: the first k rows' embeddings, with their graph
        if k:
            self.one_pass = net.embed(real[:, :k].flatten(0, 1)).unflatten(0, (classes, k))
            parts.insert(0, self.one_pass.detach())
        embedded = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        self.real_mean = embedded.mean(1) if ctx.shard is None else ctx.shard.mean(embedded)
        self.ce_weight = ctx.ce_weight

    def _blocks(self, candidates: Tensor) -> Tensor:
        k, n = candidates.shape[:2]
        syn = candidates.unflatten(1, (self.num_classes, n // self.num_classes))
        syn = self._augment(syn)
        emb = self.net.embed(syn.flatten(0, 2))
        loss = ((emb.unflatten(0, syn.shape[:3]).mean(2) - self.real_mean) ** 2).sum(-1)
        if self.ce_weight:
            logits = self.net.classifier(emb)
            y = torch.arange(self.num_classes, device=emb.device).repeat_interleave(syn.shape[2])
            ce = F.cross_entropy(logits, y.repeat(k), reduction="none")
            loss = loss + self.ce_weight * ce.view(k, self.num_classes, -1).mean(2)
        return loss

    def take_one_pass(self) -> Tensor:
        """zodd.types.SharesRealPass: the first k rows' embeddings, given once."""
        features, self.one_pass = self.one_pass, None
        return features
