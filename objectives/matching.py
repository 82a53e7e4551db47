"""What the differentiable matching objectives (dm, gm) share: the facts the plan reads to fill
in a run's defaults (zodd.plan.resolve), and the bound black box's common part (the step's
network and Siamese augmentation, candidates evaluated in chunks, per-class blocks)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zodd import augment
from zodd.types import StepContext, as_generator


@dataclass(frozen=True)
class Matching:
    flip: bool = False
    differentiable: bool = True
    needs_held_out: bool = False  # matches the step's real batch
    uses_network: bool = True  # bound to the step's network
    reads_labels: bool = False  # takes one label vector a candidate image (--labels learn)
    # --one-pass: the bound objective embeds the real batch with the network's penultimate
    # layer and can keep the embeddings of StepContext.one_pass with their graph
    shares_real_pass: bool = False
    # an N-process run (zodd.distributed) can split its real batch: the bound objective
    # combines its real-side statistic over StepContext.shard
    splits_real: bool = False
    # zero-order defaults: a smooth loss wants a small radius; a candidate costs one pass of S,
    # cheap next to the real batch, so many directions (BENCHMARKS.md, "Zero-order against
    # autograd")
    default_sigma: float = 0.01
    default_directions: int = 128
    default_lr: float | None = 1.0  # SGD step size on S, exact or zero-order (BENCHMARKS.md)
    default_optimizer: str = "sgd"  # the STEPPERS name --optimizer auto picks
    # --updater native: "reinit" (a fresh network every iteration, DM's schedule) or "train" (the
    # network trained on S after each update, Dataset Condensation's)
    native: str = "reinit"
    # native "train": (ipc, outer, inner) rows: a fresh network every `outer` updates of S,
    # trained on S for `inner` steps after each (zodd.plan picks the row by IPC)
    schedule: tuple[tuple[int, int, int], ...] = ((1, 1, 1),)


class BoundMatching:
    """A matching objective bound to one step: ``_blocks(candidates)`` gives per-class losses of
    at most ``max_images`` images' worth of candidates; ``blocks`` chunks a larger call, and the
    total is the blocks' sum."""

    differentiable = True
    separable = True  # class b's block depends only on class b's images
    max_images = 4096  # images per forward pass when many candidates are evaluated at once

    def __init__(self, ctx: StepContext, flip: bool):
        self.net, self.num_classes = ctx.net, ctx.num_classes
        self.transform = augment.draw(ctx.augment, ctx.num_classes, as_generator(ctx.seed), flip)

    def _augment(self, x: Tensor) -> Tensor:
        return x if self.transform is None else self.transform(x)

    def _blocks(self, candidates: Tensor, labels: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def blocks(self, candidates: Tensor, labels: Tensor | None = None) -> Tensor:
        """Per-class losses [K, classes]; they sum to ``self(candidates)``. ``labels``: the
        candidates' label vectors ``[K, N, classes]`` (objectives that ``reads_labels``)."""
        k, n = candidates.shape[:2]
        per_chunk = max(1, self.max_images // n)
        return torch.cat([self._blocks(candidates[i:i + per_chunk]) if labels is None else
                          self._blocks(candidates[i:i + per_chunk], labels[i:i + per_chunk])
                          for i in range(0, k, per_chunk)])

    def __call__(self, candidates: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.blocks(candidates, labels).sum(1)
