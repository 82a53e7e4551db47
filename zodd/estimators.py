"""Gradient estimators over black boxes: ``estimate(f, x, gen) -> Estimate``.

An estimator is a small frozen dataclass whose fields are its hyper-parameters; it samples what it
needs from ``gen``, calls the black box once with a batch of candidates, and combines the losses.
``ESTIMATORS`` maps the ``--estimator`` vocabulary to a factory taking the run's config.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zodd.types import BlackBox, Estimate, EvaluationError, ZoddError


@dataclass(frozen=True)
class Autograd:
    """The exact gradient, for differentiable objectives (one query per step)."""

    name: str = "autograd"

    def estimate(self, f: BlackBox, x: Tensor, gen: torch.Generator) -> Estimate:
        if not getattr(f, "differentiable", False):
            raise ZoddError("the autograd estimator needs a differentiable objective; "
                            "choose a zero-order estimator such as --estimator gaussian")
        x = x.detach().requires_grad_(True)
        loss = f(x[None])[0]
        (g,) = torch.autograd.grad(loss, x)
        return Estimate(float(loss.detach()), g, queries=1)


@dataclass(frozen=True)
class Gaussian:
    """Gaussian smoothing, forward differences (the paper's Algorithm 2, eq. 17).

    g = 1/M sum_l (f(x + sigma v_l) - f(x)) / sigma * v_l,  v_l ~ N(0, I);
    f(x) and the M perturbed sets go to the black box in one call (M + 1 queries), and f(x) is
    reused as the reported loss.
    """

    directions: int = 32
    sigma: float = 0.01
    name: str = "gaussian"

    def estimate(self, f: BlackBox, x: Tensor, gen: torch.Generator) -> Estimate:
        x = x.detach()
        v = torch.randn((self.directions, *x.shape), generator=gen, dtype=x.dtype)
        with torch.no_grad():
            losses = f(torch.cat([x[None], x[None] + self.sigma * v]))
        f0, fv = losses[0], losses[1:]
        ok = torch.isfinite(fv)
        if not torch.isfinite(f0) or not ok.any():
            raise EvaluationError("no usable value: f(S) or every perturbed set failed")
        # failed directions (NaN after the black box's retries) are left out of the average
        slopes = torch.where(ok, (fv - f0) / self.sigma, torch.zeros_like(fv))
        g = torch.tensordot(slopes, v, dims=1) / ok.sum()
        return Estimate(float(f0), g, queries=self.directions + 1,
                        extra={"failed_directions": int((~ok).sum())})


ESTIMATORS = {
    "autograd": lambda cfg: Autograd(),
    "gaussian": lambda cfg: Gaussian(directions=cfg.directions, sigma=cfg.sigma),
}


def choose(name: str, differentiable: bool) -> str:
    """Resolve ``auto``: autograd for a differentiable objective, else gaussian."""
    if name == "auto":
        return "autograd" if differentiable else "gaussian"
    if name == "autograd" and not differentiable:
        raise ZoddError("the objective is not differentiable: --estimator autograd cannot run; "
                        "choose a zero-order estimator such as --estimator gaussian")
    return name
