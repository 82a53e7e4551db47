"""What the differentiable matching objectives (dm, gm) declare alike: the facts the plan reads
to fill in a run's defaults (zodd.plan.resolve)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Matching:
    flip: bool = False
    differentiable: bool = True
    needs_held_out: bool = False  # matches the step's real batch
    uses_network: bool = True  # bound to the step's network
    # zero-order defaults: a smooth loss wants a small radius; a candidate costs one pass of S,
    # cheap next to the real batch, so many directions (BENCHMARKS.md, "Zero-order against
    # autograd")
    default_sigma: float = 0.01
    default_directions: int = 128
    default_lr: float | None = 1.0  # SGD step size on S, exact or zero-order (BENCHMARKS.md)
    # --updater native: "reinit" (a fresh network every iteration, DM's schedule) or "train" (the
    # network trained on S after each update, Dataset Condensation's)
    native: str = "reinit"
