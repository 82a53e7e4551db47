"""Faults of the black box: a BlackBox wrapper that retries failed evaluations.

A call that raises, or a candidate whose loss is NaN or infinite, is evaluated again up to
``retries`` times; what still fails comes back as NaN and is counted in ``failures``, so the
estimator can leave it out (and skip the step when f(S) itself failed). The synthetic set is never
updated from a corrupt value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from zodd.types import BlackBox, EvaluationError


@dataclass
class Guarded:
    box: BlackBox
    retries: int = 2
    failures: int = 0  # candidate evaluations that failed after every retry
    retried: int = 0  # evaluations that needed another try
    messages: list[str] = field(default_factory=list)

    @property
    def differentiable(self) -> bool:
        return False  # used on the zero-order path only

    def _once(self, candidates: Tensor) -> Tensor:
        try:
            with torch.no_grad():
                losses = self.box(candidates)
            if not isinstance(losses, Tensor) or losses.shape != (candidates.shape[0],):
                raise EvaluationError(f"returned {type(losses).__name__} of the wrong shape")
            return losses.detach().to(candidates.dtype)
        except EvaluationError as exc:
            self.messages.append(str(exc))
        except Exception as exc:  # the box's own bug or crash: counted like any failure
            self.messages.append(f"{type(exc).__name__}: {exc}")
        return torch.full((candidates.shape[0],), math.nan, dtype=candidates.dtype)

    def __call__(self, candidates: Tensor) -> Tensor:
        losses = self._once(candidates)
        for _ in range(self.retries):
            bad = ~torch.isfinite(losses)
            if not bad.any():
                break
            self.retried += int(bad.sum())
            losses[bad] = self._once(candidates[bad])
        failed = int((~torch.isfinite(losses)).sum())
        self.failures += failed
        if failed and not self.messages:
            self.messages.append(f"{failed} non-finite value(s)")
        return losses
