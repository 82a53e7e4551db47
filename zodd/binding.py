"""How a step's objective becomes the black box an estimator sees: the step's context (network,
real batch, held-out real images for the scores, one augmentation seed: common random numbers
for every candidate), the bound objective, decoded from S's stored tensor, guarded against
failures and spread over Ray workers on the zero-order path, and the surrogate's exact gradient
as the estimator's guide.

A score's data is in ``folds`` parts. The search's steps score on parts 1..folds-1 (a command's
``{fold}``, drawn with the step's seed; prototype and trained draw their held-out images from
those parts); part 0 is never searched on: ``choose`` scores S there, with a fixed seed (0) and
fixed images, for the run to keep the best set it saw (``--select-every``). It draws nothing
from the run's generator, so choosing changes which set is kept, not the search."""
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
    folds: int  # a score's data in parts; 0 is kept for ``choose``
    choosing: bool = False  # --select-every: held-out images of fold 0 are kept apart
    shard: object = None  # an N-process run's share (zodd.distributed); the step's real is it

    def __post_init__(self):
        # fold 0 of each class's held-out images: every folds-th one, never in a search draw
        self.fold_zero = [i[::self.folds] for i in self.held_out] if self.choosing else None
        if self.choosing:
            self.held_out = [i[torch.arange(len(i)) % self.folds != 0] for i in self.held_out]

    def __call__(self, net, real: Tensor, x: Tensor, gen: torch.Generator, ce_weight: float,
                 one_pass: int = 0):
        """(box, guard or None, guide, the one pass's features or None): with ``one_pass`` k
        (``--one-pass``) the objective embeds the first k real rows of each class with their
        graph, and hands those embeddings over for the updater's gradient."""
        held_out = None
        if self.objective.needs_held_out:
            n = min(self.batch_size, min(len(i) for i in self.held_out))
            held_out = self.pixels[draw_per_class(self.held_out, n, gen).to(self.pixels.device)]
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        ctx = StepContext(net, real, self.labels, self.num_classes, seed=seed,
                          fold=1 + seed % (self.folds - 1), folds=self.folds,
                          augment=self.augment, held_out=held_out, pixel_mean=self.pixel_mean,
                          pixel_std=self.pixel_std, compile=self.compile, ce_weight=ce_weight,
                          shard=self.shard)
        features = None
        if one_pass:
            net.requires_grad_(True)  # the embeddings' graph reaches the network's parameters
            bound = self.objective.bind(replace(ctx, one_pass=one_pass))
            features = bound.take_one_pass()
            net.requires_grad_(False)
        else:
            bound = self.objective.bind(ctx)
        box = self._box(bound)
        guide = {} if self.surrogate is None else {
            "guide": Autograd().estimate(decoded(self.surrogate.bind(ctx), self.rep), x,
                                         gen).grad}
        if self.exact:
            return box, None, guide, features
        guard = Guarded(self.pool.wrap(box) if self.pool else box, self.retries)
        return guard, guard, guide, features

    def _box(self, bound):
        """The bound objective as a box on S's stored tensor (and learned labels)."""
        return (decoded(bound, self.rep) if self.labelled is None else
                Labelled(bound, self.rep, self.labelled, self.num_classes))

    def choose(self, point: Tensor) -> tuple[float | None, Guarded]:
        """S (``point``, as the estimators see it) scored on fold 0 with seed 0, the same
        images every time (all of fold 0's, as many for each class), and the guard that
        scored it: the value is None when the evaluation failed past its retries."""
        held_out = None
        if self.objective.needs_held_out:
            n = min(len(i) for i in self.fold_zero)
            held_out = self.pixels[torch.stack([i[:n] for i in self.fold_zero]).to(
                self.pixels.device)]
        empty = self.pixels[:0].unsqueeze(0).expand(self.num_classes, *self.pixels[:0].shape)
        ctx = StepContext(None, empty, self.labels, self.num_classes, seed=0, fold=0,
                          folds=self.folds, augment=self.augment, held_out=held_out,
                          pixel_mean=self.pixel_mean, pixel_std=self.pixel_std)
        guard = Guarded(self._box(self.objective.bind(ctx)), self.retries)
        value = float(guard(point.unsqueeze(0))[0])
        return (value if value == value else None), guard
