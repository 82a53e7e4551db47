"""The one builder: a :class:`zodd.plan.Plan`'s parts, each made from keyword arguments of plain
values, so that no module below this one sees a Plan; the one place where a setting's name
becomes the object it names.

A setting can be followed in one direction: its option (zodd.cli, zodd.options) -> the config
field (zodd.config) -> the plan, the same field filled in where the config left it open
(zodd.plan) -> one function here -> the part that uses it. The loop (zodd.loop) calls these and
reads the plan's schedule (budgets, iterations, batches) itself.
"""
from __future__ import annotations

import dataclasses
import shlex
import shutil
from pathlib import Path

import torch

from objectives import OBJECTIVES
from zodd.binding import Binding
from zodd.data import ImageData, data_root
from zodd.estimators import ESTIMATORS
from zodd.models import build_network
from zodd.networks import ModelPool, NetworkQueue, StepNetwork
from zodd.plan import Plan
from zodd.prior import load_or_train
from zodd.representation import REPRESENTATIONS
from zodd.robust import UPDATERS, CEUpdater
from zodd.steppers import make_stepper
from zodd.types import ZoddError


def representation(plan: Plan, data: ImageData, prior: torch.nn.Module | None = None):
    """How S is stored and decoded, and its prior where it needs one: ``prior`` when the caller
    holds it (zodd.api trains it with progress), else loaded from its cache (or trained) here;
    kept on the CPU until the loop moves it."""
    if REPRESENTATIONS[plan.representation].needs_prior and prior is None:
        prior = load_or_train(data, plan.latent, root=data_root(plan.data_dir))
    return REPRESENTATIONS[plan.representation].of(plan.factor, prior), prior


def objective(plan: Plan, name: str | None = None):
    """The objective ``name`` (default: the run's ``--objective``), built for the plan's data."""
    name = name or plan.objective
    if name == "command":
        argv = tuple(shlex.split(plan.command or ""))
        if not argv or not (shutil.which(argv[0]) or Path(argv[0]).is_file()):
            raise ZoddError(f"--command: program {argv[0] if argv else ''!r} not found")
        return OBJECTIVES["command"](argv=argv, timeout=plan.command_timeout, flip=plan.flip)
    return OBJECTIVES[name](flip=plan.flip)


def estimator(plan: Plan):
    """The plan's estimator (None for a nevergrad optimiser, which asks for its own
    candidates)."""
    if plan.estimator not in ESTIMATORS:
        return None
    return ESTIMATORS[plan.estimator](directions=plan.directions, sigma=plan.sigma,
                                      lowres=plan.lowres, blockwise=plan.blockwise,
                                      guided=plan.surrogate is not None)


def stepper(plan: Plan, leaves: list[torch.Tensor], point: torch.Tensor, chosen_estimator,
            gen: torch.Generator):
    """How S's ``leaves`` (images, and learned labels) move; ``point``: them packed."""
    return make_stepper(plan.optimizer, leaves, point, chosen_estimator, gen, lr=plan.lr,
                        sigma=plan.sigma, directions=plan.directions, lowres=plan.lowres,
                        label_lr=plan.label_lr)


def updater(plan: Plan, shard=None) -> CEUpdater | None:
    """The plan's updater (None for ``native``: no update on real data), given the plan's
    settings its class has fields for (each named as the setting), and the run's ``shard``
    (zodd.distributed; None: one process)."""
    kind = UPDATERS[plan.updater]
    if kind is None:
        return None
    return kind(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(kind)
                   if f.name != "shard"}, shard=shard)


def network(plan: Plan, data: ImageData, seed: int) -> torch.nn.Module:
    """A fresh network of the plan's kind (``--network``) and shape, on its device."""
    return build_network(plan.network, data.channels, data.num_classes, data.image_size,
                         plan.width, plan.depth, seed=seed).to(plan.device)


def step_network(plan: Plan, data: ImageData, gen: torch.Generator,
                 shard=None) -> StepNetwork:
    """The network a step is bound to and its training: IDM's queue or FRePo's pool when the
    plan has one (its first networks drawn from ``gen`` here), else one network on the plan's
    schedule."""
    def make(seed: int) -> torch.nn.Module:
        return network(plan, data, seed)

    queue = None if not plan.queue_size else NetworkQueue(
        make, plan.queue_size, plan.queue_every, plan.queue_train, plan.model_steps,
        plan.model_lr, gen)
    pool = (ModelPool(make, plan.pool_size, plan.pool_steps, gen, plan.pool_lr)
            if plan.pool_size else None)
    return StepNetwork(make, updater(plan, shard), lr=plan.model_lr,
                       uses_network=plan.uses_network, reinit_every=plan.reinit_every,
                       n_update=plan.update_batch, on_synthetic=plan.train_on_synthetic,
                       ce_weight=plan.ce_weight, queue=queue, pool=pool)


def binding(plan: Plan, data: ImageData, rep, labels: torch.Tensor, pixels: torch.Tensor,
            source: torch.Tensor | None, pool=None, shard=None) -> Binding:
    """How each step binds the plan's objective (and surrogate); the real images S started
    from (``source``) stay out of the scores' held-out draws. With learned labels the box
    takes the packed pair (zodd.labels.Labelled)."""
    used = source if source is not None else torch.empty(0, dtype=torch.long)
    stored = rep.stored_shape(tuple(data.train_x.shape[1:])) if plan.labels == "learn" else None
    return Binding(
        objective=objective(plan),
        surrogate=objective(plan, plan.surrogate) if plan.surrogate else None,
        rep=rep, labels=labels, num_classes=data.num_classes, pixel_mean=data.mean,
        pixel_std=data.std, augment=plan.augment, compile=plan.compile,
        batch_size=plan.batch_size, exact=plan.estimator == "autograd", retries=plan.retries,
        held_out=[i[~torch.isin(i, used)] for i in data.class_indices()], pixels=pixels,
        pool=pool, labelled=stored, folds=plan.folds, choosing=plan.select_every > 0,
        shard=shard)
