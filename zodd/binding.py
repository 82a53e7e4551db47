"""How a step's objective becomes the black box an estimator sees: the step's context (network,
real batch, held-out real images for the scores, one augmentation seed: common random numbers
for every candidate), the bound objective, decoded from S's stored tensor, guarded against
failures and spread over Ray workers on the zero-order path, and the surrogate's exact gradient
as the estimator's guide."""
from __future__ import annotations

from dataclasses import dataclass, replace
import torch
from torch import Tensor

from zodd.data import draw_per_class
from zodd.estimators import Autograd
from zodd.guard import Guarded
from zodd.labels import Labelled
from zodd.representation import decoded
from zodd.types import StepContext


@dataclass(kw_only=True)
class Binding:
    """The loop's ``objective`` (and ``surrogate``) bound each step. ``held_out``: per class,
    the training images kept apart from S's initialisation (on the CPU), drawn from ``pixels``
    for objectives that score on held-out data; ``exact``: autograd, no guard; ``pool``: a
    RayPool when there are workers."""

    objective: object
    surrogate: object | None
    rep: object
    labels: Tensor  # of the decoded set
    num_classes: int
    pixel_mean: tuple
    pixel_std: tuple
    augment: str
    compile: bool
    batch_size: int  # real images a class a step (held-out draws for the scores as many)
    exact: bool
    retries: int
    held_out: list[Tensor]
    pixels: Tensor
    pool: object = None
    labelled: tuple | None = None  # --labels learn: the stored image's shape (packed boxes)

    def __call__(self, net, real: Tensor, x: Tensor, gen: torch.Generator, ce_weight: float,
                 one_pass: int = 0):
        """(box, guard or None, guide, the one pass's features or None): with ``one_pass`` k
        (``--one-pass``) the objective embeds the first k real rows of each class with their
        graph, and hands those embeddings over for the updater's gradient."""
        held_out = None
        if self.objective.needs_held_out:
            n = min(self.batch_size, min(len(i) for i in self.held_out))
            held_out = self.pixels[draw_per_class(self.held_out, n, gen).to(self.pixels.device)]
        ctx = StepContext(net, real, self.labels, self.num_classes,
                          seed=int(torch.randint(2**31 - 1, (1,), generator=gen)),
                          augment=self.augment, held_out=held_out, pixel_mean=self.pixel_mean,
                          pixel_std=self.pixel_std, compile=self.compile, ce_weight=ce_weight)
        features = None
        if one_pass:
            net.requires_grad_(True)  # the embeddings' graph reaches the network's parameters
            bound = self.objective.bind(replace(ctx, one_pass=one_pass))
            features = bound.take_one_pass()
            net.requires_grad_(False)
        else:
            bound = self.objective.bind(ctx)
        box = (decoded(bound, self.rep) if self.labelled is None else
               Labelled(bound, self.rep, self.labelled, self.num_classes))
        guide = {} if self.surrogate is None else {
            "guide": Autograd().estimate(decoded(self.surrogate.bind(ctx), self.rep), x,
                                         gen).grad}
        if self.exact:
            return box, None, guide, features
        guard = Guarded(self.pool.wrap(box) if self.pool else box, self.retries)
        return guard, guard, guide, features
