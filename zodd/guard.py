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

from zodd.types import BlackBox, ClusterError, EvaluationError, WrappedBox


@dataclass
class Guarded(WrappedBox):
    box: BlackBox
    retries: int = 2
    failures: int = 0  # candidate evaluations that failed after every retry
    retried: int = 0  # evaluations that needed another try
    messages: list[str] = field(default_factory=list)

    def _once(self, candidates: Tensor, blocks: bool) -> Tensor | None:
        try:
            with torch.no_grad():
                losses = self.box.blocks(candidates) if blocks else self.box(candidates)
            ok = isinstance(losses, Tensor) and (
                losses.shape[:1] == candidates.shape[:1] and losses.ndim == 1 + blocks)
            if not ok:
                raise EvaluationError(f"returned {type(losses).__name__} of the wrong shape")
            return losses.detach().to(candidates.dtype)
        except ClusterError:
            raise  # the cluster's fault, not the box's: ends the run (zodd.driver)
        except EvaluationError as exc:
            self.messages.append(str(exc))
        except Exception as exc:  # the box's own bug or crash: counted like any failure
            self.messages.append(f"{type(exc).__name__}: {exc}")
        return None

    def _evaluate(self, candidates: Tensor, blocks: bool) -> Tensor:
        """Losses [K] (or [K, B] blocks); a candidate that still fails after the retries is NaN."""
        k = candidates.shape[0]

        def bad_rows(values):
            return ~torch.isfinite(values if values.ndim == 1 else values.sum(1))

        losses = self._once(candidates, blocks)
        for _ in range(self.retries):
            bad = torch.ones(k, dtype=torch.bool, device=candidates.device) if losses is None else bad_rows(losses)
            if not bad.any():
                break
            self.retried += int(bad.sum())
            again = self._once(candidates[bad], blocks)
            if again is not None:
                if losses is None:
                    losses = again  # bad was every row
                else:
                    losses[bad] = again
        if losses is None:
            losses = torch.full((k,) if not blocks else (k, 1), math.nan, dtype=candidates.dtype,
                                device=candidates.device)
        failed = int(bad_rows(losses).sum())
        self.failures += failed
        if failed and not self.messages:
            self.messages.append(f"{failed} non-finite value(s)")
        return losses
