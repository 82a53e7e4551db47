"""Trained-model score: the error (%) on held-out real images of a small network trained for a
few steps on the candidate set: a pipeline whose gradient the user does not have. Every
candidate starts from the same initialisation (fixed by the step's seed)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objectives.score import Score
from zodd.types import StepContext


@dataclass(frozen=True)
class TrainedScore(Score):
    steps: int = 30
    lr: float = 0.1
    hidden: int = 64
    name: str = "trained"

    def bind(self, ctx: StepContext) -> "BoundTrained":
        return BoundTrained(ctx, self)


class BoundTrained:
    differentiable = False

    def __init__(self, ctx: StepContext, spec: TrainedScore):
        self.x, self.y = ctx.scoring_batch()
        self.labels, self.spec, self.seed = ctx.labels, spec, ctx.seed
        self.num_classes = ctx.num_classes

    def _score(self, images: Tensor) -> float:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(self.seed)
            net = nn.Sequential(nn.Flatten(), nn.Linear(images[0].numel(), self.spec.hidden),
                                nn.ReLU(), nn.Linear(self.spec.hidden, self.num_classes)
                                ).to(images.device)
            opt = torch.optim.SGD(net.parameters(), lr=self.spec.lr, momentum=0.9)
            for _ in range(self.spec.steps):
                loss = F.cross_entropy(net(images), self.labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return float((net(self.x).argmax(1) != self.y).float().mean() * 100)

    def __call__(self, candidates: Tensor) -> Tensor:
        return torch.tensor([self._score(c.detach()) for c in candidates],
                            dtype=candidates.dtype, device=candidates.device)
