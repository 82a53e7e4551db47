"""How S moves once a step's black box is bound: a torch optimiser fed by an estimator, or a
nevergrad optimiser that asks for candidates itself.

``STEPPERS`` is the ``--optimizer`` vocabulary (``ng:NAME`` names any nevergrad optimiser);
``make_stepper(optimizer, leaves, estimator, gen, lr=..., ...)`` builds the one named. S's
``leaves`` are the stored images and, with ``--labels learn``, the labels (zodd.labels): the
estimators see them packed into one tensor, the optimiser holds them as two parameters, each
with its own step size. A stepper has two methods: ``propose(box, point, gen, guide)``
evaluates candidates around the packed point and returns an Estimate (raising EvaluationError
when f(S) failed), and ``apply(estimate)`` moves the leaves (``estimate`` is None for a skipped
step).

``lamb`` is LAMB (You et al., 2020) as optax's ``lamb`` computes it, FRePo's optimiser of S:
Adam's moments (beta 0.9, 0.999, eps 1e-6 added to the root of the corrected second moment),
no weight decay, and each parameter's update ``u`` scaled by its trust ratio
``||p|| / ||u||`` (1 where either norm is 0) before the step ``-lr``: so the images and the
labels each move by about ``lr`` times their own norm a step, whatever their gradients' scale.
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


def split(packed: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """A packed tensor (zodd.labels.pack, or the one leaf itself) cut back into ``leaves``'
    shapes."""
    if len(leaves) == 1:
        return [packed.view_as(leaves[0])]
    sizes = [leaf[0].numel() for leaf in leaves]
    return [part.reshape_as(leaf) for part, leaf in zip(packed.split(sizes, -1), leaves)]


class Lamb(torch.optim.Optimizer):
    """LAMB as optax's ``lamb`` (module docstring)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-6):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(())
                    state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = (state["m"] / (1 - b1 ** t)) / (
                    (state["v"] / (1 - b2 ** t)).sqrt() + group["eps"])
                p_norm, u_norm = p.norm(), update.norm()
                ratio = torch.where((p_norm > 0) & (u_norm > 0), p_norm / u_norm,
                                    torch.ones_like(p_norm))
                p.sub_(update * ratio * group["lr"])


class TorchStep:
    """A torch optimiser on S's leaves driven by the estimator's (estimated) gradient, with a
    step-size schedule stepped once per iteration, failed steps included."""

    resumable = True

    def __init__(self, opt: torch.optim.Optimizer, decay, estimator):
        self.opt, self.estimator = opt, estimator
        self.leaves = [p for group in opt.param_groups for p in group["params"]]
        self.schedule = torch.optim.lr_scheduler.LambdaLR(opt, decay)

    def propose(self, box, x: torch.Tensor, gen: torch.Generator, guide: dict) -> Estimate:
        return self.estimator.estimate(box, x, gen, **guide)

    def apply(self, estimate: Estimate | None) -> None:
        """(A non-finite gradient is caught by the loop, which checks S once per group of log
        rows and puts back the last finite set: no host sync here.)"""
        if estimate is not None:  # a failed step leaves S as it was
            for leaf, grad in zip(self.leaves, split(estimate.grad, self.leaves)):
                leaf.grad = grad
            self.opt.step()
        self.schedule.step()

    def queries(self) -> int:
        return self.estimator.queries() if hasattr(self.estimator, "queries") else 1

    def state_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])


# each factory: (param groups, one a leaf with its "lr"; the estimator) -> TorchStep
def _paper(groups, estimator):
    return TorchStep(torch.optim.SGD(groups, momentum=0.0), _paper_decay, estimator)


def _sgd(groups, estimator):
    return TorchStep(torch.optim.SGD(groups, momentum=0.5), _constant, estimator)


def _adam(groups, estimator):
    return TorchStep(torch.optim.Adam(groups), _constant, estimator)


def _lamb(groups, estimator):
    return TorchStep(Lamb(groups, lr=groups[0]["lr"]), _constant, estimator)


STEPPERS = Registry("optimizer", [
    ("paper", _paper, "s = lr / sqrt(1 + E), plain SGD (the paper's eq. 18)"),
    ("sgd", _sgd, "SGD with momentum 0.5 at a constant lr"),
    ("adam", _adam, "Adam at a constant lr"),
    ("lamb", _lamb, "LAMB (optax's): Adam scaled by each tensor's trust ratio, FRePo's"),
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

    def __init__(self, spec: str, leaves: list[torch.Tensor], x: torch.Tensor, sigma: float,
                 asks: int, lowres: int, seed: int):
        import nevergrad as ng
        import numpy as np

        self.leaves, self.moved = leaves, None
        self.base, self.asks, self.lowres = x.detach().clone(), asks, lowres
        shape = x.shape if lowres == 1 else (*x.shape[:-2], x.shape[-2] // lowres,
                                             x.shape[-1] // lowres)
        param = ng.p.Array(init=np.zeros(tuple(shape))).set_mutation(sigma=sigma)
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
        self.moved = self._decode(self.opt.provide_recommendation().value)
        return Estimate(float(losses[0]), torch.zeros_like(x), self.asks + 1)

    def apply(self, estimate: Estimate | None) -> None:
        """S becomes the optimiser's recommendation (after a failed step, too: nevergrad's
        search went on)."""
        if self.moved is not None:
            with torch.no_grad():
                for leaf, value in zip(self.leaves, split(self.moved, self.leaves)):
                    leaf.copy_(value)
            self.moved = None

    def queries(self) -> int:
        return self.asks + 1

    def state_dict(self) -> dict:
        return {}


def make_stepper(optimizer: str, leaves: list[torch.Tensor], point: torch.Tensor, estimator,
                 gen: torch.Generator, *, lr: float, sigma: float, directions: int, lowres: int,
                 label_lr: float | None = None):
    """The stepper ``optimizer`` names, on S's ``leaves`` (packed: ``point``). A nevergrad
    optimiser (``ng:NAME``: its own search of ``directions`` candidates a step at radius
    ``sigma``) draws its seed from ``gen`` here (one draw, right after S's initialisation); a
    torch one steps the images by ``lr`` and the labels by ``label_lr`` (None: ``lr``)."""
    if optimizer.startswith(NEVERGRAD_PREFIX):
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        return NevergradStep(optimizer, leaves, point, sigma, directions, lowres, seed)
    rates = [lr, label_lr or lr][:len(leaves)]
    return STEPPERS[optimizer]([{"params": [leaf], "lr": rate}
                                for leaf, rate in zip(leaves, rates)], estimator)
