"""Nearest-prototype score: the error (%) of a classifier that gives each held-out real image
the label of its nearest synthetic image (Euclidean, pixel space). A score with no useful
gradient: it changes only when an image crosses a decision boundary."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from objectives.score import Score
from zodd.nearest import assign_clusters
from zodd.types import StepContext


@dataclass(frozen=True)
class PrototypeScore(Score):
    name: str = "prototype"

    def bind(self, ctx: StepContext) -> "BoundPrototype":
        return BoundPrototype(ctx)


class BoundPrototype:
    differentiable = False

    def __init__(self, ctx: StepContext):
        self.points, self.truth = ctx.scoring_batch()  # [M, ch, h, w], [M]
        self.labels = ctx.labels
        self.num_classes = ctx.num_classes

    def blocks(self, candidates: Tensor) -> Tensor:
        """Per-class error contributions [K, classes] (percent of all held-out images)."""
        k = candidates.shape[0]
        points = self.points.expand(k, *self.points.shape)
        nearest = assign_clusters(points, candidates, batch_dims=1)  # [K, M]
        wrong = (self.labels[nearest] != self.truth).to(candidates.dtype)
        per_class = torch.zeros(k, self.num_classes, dtype=candidates.dtype, device=candidates.device)
        per_class.index_add_(1, self.truth, wrong)
        return per_class * (100.0 / len(self.truth))

    def __call__(self, candidates: Tensor) -> Tensor:
        return self.blocks(candidates).sum(1)
