"""How S moves once a step's black box is bound: a torch optimiser fed by an estimator, or a
nevergrad optimiser that asks for candidates itself.

``STEPPERS`` is the ``--optimizer`` vocabulary (``ng:NAME`` names any nevergrad optimiser);
``make_stepper(optimizer, x, estimator, gen, lr=..., ...)`` builds the one named. A stepper has two
methods: ``propose(box, x, gen, guide)`` evaluates candidates and returns an Estimate (raising
EvaluationError when f(S) failed), and ``apply(x, estimate)`` moves S (``estimate`` is None for a
skipped step).
"""
from __future__ import annotations

import math

import torch

from zodd.types import Estimate, EvaluationError, Registry, ZoddError

NEVERGRAD_PREFIX = "ng:"


def _paper_decay(epoch: int) -> float:
    return (1 + epoch) ** -0.5


def _constant(epoch: int) -> float:
    return 1.0


class TorchStep:
    """A torch optimiser on S driven by the estimator's (estimated) gradient, with a step-size
    schedule stepped once per iteration, failed steps included."""

    resumable = True

    def __init__(self, opt: torch.optim.Optimizer, decay, estimator):
        self.opt, self.estimator = opt, estimator
        self.schedule = torch.optim.lr_scheduler.LambdaLR(opt, decay)

    def propose(self, box, x: torch.Tensor, gen: torch.Generator, guide: dict) -> Estimate:
        return self.estimator.estimate(box, x, gen, **guide)

    def apply(self, x: torch.Tensor, estimate: Estimate | None) -> None:
        """(A non-finite gradient is caught by the loop, which checks S once per group of log
        rows and puts back the last finite set: no host sync here.)"""
        if estimate is not None:  # a failed step leaves S as it was
            x.grad = estimate.grad
            self.opt.step()
        self.schedule.step()

    def queries(self) -> int:
        return self.estimator.queries() if hasattr(self.estimator, "queries") else 1

    def state_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])


def _paper(x, lr, estimator):
    return TorchStep(torch.optim.SGD([x], lr=lr, momentum=0.0), _paper_decay, estimator)


def _sgd(x, lr, estimator):
    return TorchStep(torch.optim.SGD([x], lr=lr, momentum=0.5), _constant, estimator)


def _adam(x, lr, estimator):
    return TorchStep(torch.optim.Adam([x], lr=lr), _constant, estimator)


STEPPERS = Registry("optimizer", [
    ("paper", _paper, "s = lr / sqrt(1 + E), plain SGD (the paper's eq. 18)"),
    ("sgd", _sgd, "SGD with momentum 0.5 at a constant lr"),
    ("adam", _adam, "Adam at a constant lr"),
])


def check_optimizer(spec: str) -> str:
    """``auto``, a STEPPERS name, or ``ng:NAME`` naming a nevergrad optimiser."""
    if spec.startswith(NEVERGRAD_PREFIX):
        nevergrad_optimizer(spec)
        return spec
    return STEPPERS.check(spec, extra=("auto",))


def nevergrad_optimizer(spec: str):
    """``ng:NAME`` -> the nevergrad optimiser class; a clear error when it is not one."""
    try:
        import nevergrad as ng
    except ImportError:
        raise ZoddError(f"--optimizer {spec} needs nevergrad: pip install 'zodd[tune]'") from None
    name = spec.split(":", 1)[1]
    if name not in ng.optimizers.registry:
        raise ZoddError(f"invalid optimizer: {spec!r} (not a nevergrad optimiser; e.g. "
                        "ng:OnePlusOne, ng:TwoPointsDE, ng:DiagonalCMA)")
    return ng.optimizers.registry[name]


class NevergradStep:
    """S driven by a nevergrad optimiser through ask/tell. The optimiser sees a change of S from
    its initial value (at 1/lowres resolution, upsampled: a low-dimensional parameterisation);
    each step asks ``directions`` candidates, evaluates them and the current S in one call (one
    query each), tells the losses and moves S to the optimiser's recommendation. Its state is not
    in the checkpoint, so such a run cannot be resumed."""

    resumable = False

    def __init__(self, spec: str, x: torch.Tensor, sigma: float, asks: int, lowres: int,
                 seed: int):
        import nevergrad as ng
        import numpy as np

        self.base, self.asks, self.lowres = x.detach().clone(), asks, lowres
        n, ch, h, w = x.shape
        param = ng.p.Array(init=np.zeros((n, ch, h // lowres, w // lowres))).set_mutation(
            sigma=sigma)
        param.random_state = np.random.RandomState(seed)
        self.opt = nevergrad_optimizer(spec)(parametrization=param, budget=None, num_workers=asks)

    def _decode(self, value) -> torch.Tensor:
        delta = torch.as_tensor(value, dtype=self.base.dtype, device=self.base.device)
        if self.lowres > 1:
            delta = torch.nn.functional.interpolate(delta, scale_factor=self.lowres,
                                                    mode="nearest")
        return self.base + delta

    def propose(self, box, x: torch.Tensor, gen: torch.Generator, guide: dict) -> Estimate:
        asked = [self.opt.ask() for _ in range(self.asks)]
        candidates = torch.stack([x.detach(), *(self._decode(c.value) for c in asked)])
        losses = box(candidates)
        if not torch.isfinite(losses[0]):
            raise EvaluationError("no usable value: f(S) failed")
        for c, loss in zip(asked, losses[1:].tolist()):
            if math.isfinite(loss):
                self.opt.tell(c, loss)
        with torch.no_grad():
            x.copy_(self._decode(self.opt.provide_recommendation().value))
        return Estimate(float(losses[0]), torch.zeros_like(x), self.asks + 1)

    def apply(self, x: torch.Tensor, estimate: Estimate | None) -> None:
        pass  # propose() moved S already

    def queries(self) -> int:
        return self.asks + 1

    def state_dict(self) -> dict:
        return {}


def make_stepper(optimizer: str, x: torch.Tensor, estimator, gen: torch.Generator, *,
                 lr: float, sigma: float, directions: int, lowres: int):
    """The stepper ``optimizer`` names, on ``x``. A nevergrad optimiser (``ng:NAME``: its own
    search of ``directions`` candidates a step at radius ``sigma``) draws its seed from ``gen``
    here (one draw, right after S's initialisation); a torch one steps by ``lr``."""
    if optimizer.startswith(NEVERGRAD_PREFIX):
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        return NevergradStep(optimizer, x, sigma, directions, lowres, seed)
    return STEPPERS[optimizer](x, lr, estimator)
