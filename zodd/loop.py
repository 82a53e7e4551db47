"""The distillation loop: update theta -> bind the objective -> estimate -> step S (with
``--one-pass``: bind the objective, whose forward pass over the real batch also gives theta's
gradient -> estimate -> step S -> step theta; with IDM's queue of networks: draw a network
from the queue -> bind -> estimate -> step S -> the updater trains queue networks,
zodd.networks).

The loop runs a :class:`zodd.plan.Plan` (every default already filled in) and looks nothing
up.
One seed makes one root generator; network initialisations, real subsamples, augmentation seeds
and estimator directions are all drawn from it, so a run is reproducible on one machine. A
checkpoint holds the whole loop state (S, the stepper, the network, the generator, the
counters), so a resumed run continues bit for bit as if never interrupted.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from zodd import build
from zodd import labels as label_sets
from zodd.data import ImageData, draw_per_class
from zodd.plan import WARM_PATIENCE, WARM_SHARE, Plan, resolve
from zodd.sets import start
from zodd.steppers import split
from zodd.synthetic import INITS, SyntheticSet, class_major, initialise, save
from zodd.types import EvaluationError, ZoddError

class Loop:
    """The state of one distillation and the step that advances it. S, the network and each
    step's batches live on the plan's device; the data set and the generator stay on the CPU
    (zodd.types.resolve_device)."""

    def __init__(self, plan: Plan, data: ImageData, pool=None, resuming: bool = False,
                 prior: torch.nn.Module | None = None, shard=None):
        self.plan, self.data = plan, data  # pool: a RayPool, or None; prior: the trained one
        self.shard = shard  # this process's share of an N-process run (zodd.distributed)
        self.gen = torch.Generator().manual_seed(plan.seed)
        self.rep, prior = build.representation(plan, data, prior)
        self.syn, warm = initial_set(plan, data, self.rep, self.gen, resuming)
        if prior is not None:
            prior.to(plan.device)
        self.x = self.syn.images.requires_grad_(True)
        self.labels = class_major(data.num_classes, plan.ipc * self.rep.per_image).to(
            plan.device)  # of the decoded images
        # --labels learn: one label vector a stored image, moved with the images (zodd.labels)
        self.y = (label_sets.initial(data.num_classes, plan.ipc).to(plan.device)
                  .requires_grad_(True) if plan.labels == "learn" else None)
        self.leaves = [self.x] if self.y is None else [self.x, self.y]
        self.estimator = build.estimator(plan)
        self.stepper = build.stepper(plan, self.leaves, self.point(), self.estimator, self.gen)
        self.network = build.step_network(plan, data, self.gen, shard)
        self.per_class = data.class_indices()
        self.train_x = data.train_x.to(plan.device)  # moved once; indices are drawn on the CPU
        self.good = self.point().clone()  # the last set known to be finite
        self.binding = build.binding(plan, data, self.rep, self.labels, self.train_x,
                                     self.syn.source, pool, shard)
        self.step, self.queries, self.seconds, self.failures = 0, warm.queries, warm.seconds, 0
        self.warm = warm  # what a warm start did (--init dm), reported in the first log row
        # --select-every: the best set on fold 0 so far ({"step", "held_out", "point"}), the
        # set the run keeps (zodd.binding.choose), and the last step whose set was scored there
        self.kept: dict | None = None
        self.chosen_at = -1
        self.last: dict | None = None  # the set the run ends with, scored off the schedule
        self.checkpointed: int | None = None  # the step of the last checkpoint written or read

    def advance(self) -> dict:
        """One iteration: update theta on a real subsample, bind the objective, estimate, step S.
        Returns its log row (without the time)."""
        opening = ({"held_out_start": self.choose().get("held_out")}
                   if self.plan.select_every and self.chosen_at < 0 else {})
        if self.step == 0 and self.warm.steps:
            opening.update(warm_steps=self.warm.steps, warm_kept=self.warm.kept)
        self.network.refresh(self.step, self.gen)  # before the real batch: the order of draws
        real, for_update = self._step_batches()  # [classes, n, ch, h, w]
        one_pass = self.plan.one_pass and self.network.net is not None
        terms = {} if one_pass else self.network.update(for_update, self._by_class, self.gen)
        box, guard, guide, features = self._bind(real, one_pass)
        if one_pass:  # the updater's gradient from the objective's pass, applied after S's step
            terms = self.network.update(real, self._by_class, self.gen, one_pass=features)
        row: dict = {}
        try:
            estimate = self.stepper.propose(box, self.point(), self.gen, guide)
        except EvaluationError as exc:  # f(S) failed: the step is skipped
            estimate, row = None, {"skipped": str(exc)}
        self.stepper.apply(estimate)
        terms = self.network.after_step(one_pass, lambda: self._real_batch(self.plan.update_batch),
                                        self._by_class, self.labels, self.gen, self.targets
                                        ) or terms
        self.step += 1
        self.queries += estimate.queries if estimate else self.stepper.queries()
        if guard is not None and (guard.failures or guard.retried):
            self.failures += guard.failures
            row.update(failures=guard.failures, retried=guard.retried,
                       fault=guard.messages[-1][:200])
        if self.plan.select_every and self.step % self.plan.select_every == 0:
            row.update(self.choose())
        loss = estimate.loss if estimate else None  # None: a skipped step (JSON has no NaN)
        return {"step": self.step, "queries": self.queries, "loss": loss, **terms,
                **opening, **row}

    def choose(self, last: bool = False) -> dict:
        """``--select-every``: S scored on fold 0 (zodd.binding.choose: data the search never
        scores, seed 0), kept when it is the best so far; the log row's values. Nothing when
        this step's set was scored there already. One query; a failure counts as one.
        ``last``: the set a run ends with (off the schedule), a candidate for this end only:
        not in the checkpoint, so a resumed run chooses among the sets an uninterrupted one
        would have."""
        if not self.plan.select_every or self.chosen_at == self.step:
            return {}
        value, guard = self.binding.choose(self.point())
        self.queries += 1
        self.failures += guard.failures
        if value is None:
            return {"held_out": None, "held_out_fault": guard.messages[-1][:200]}
        if not last:
            self.chosen_at = self.step
        candidate = {"step": self.step, "held_out": value, "point": self.point().clone()}
        if last:
            self.last = candidate
        elif self.kept is None or value < self.kept["held_out"]:
            self.kept = candidate
        return {"held_out": value}

    def keep(self) -> dict | None:
        """``--select-every``: S becomes the kept set (the best on fold 0, the set it ends with
        among them) at the run's end; its step and score."""
        if self.last is not None and (self.kept is None
                                      or self.last["held_out"] < self.kept["held_out"]):
            self.kept = self.last
        if self.kept is None:
            return None
        self._put(self.kept["point"])
        return {"step": self.kept["step"], "held_out": self.kept["held_out"]}

    def _put(self, point: torch.Tensor) -> None:
        """S's leaves (images, and learned labels) set to ``point``, a packed one."""
        with torch.no_grad():
            for leaf, value in zip(self.leaves, split(point, self.leaves)):
                leaf.copy_(value)

    def point(self) -> torch.Tensor:
        """S as the estimators see it, detached: the stored images, packed with their labels
        when they are learned (zodd.labels.pack)."""
        x = self.x.detach()
        return x if self.y is None else label_sets.pack(x, self.y.detach())

    def targets(self) -> torch.Tensor:
        """The decoded images' label vectors ``[N, classes]``, detached: the learned ones, or
        FRePo's centred one-hot (what a pool network regresses S's images on)."""
        if self.y is None:
            return label_sets.initial(self.data.num_classes, self.plan.ipc * self.rep.per_image
                                      ).to(self.x.device)
        return self.y.detach().repeat_interleave(self.rep.per_image, 0)

    def _real_batch(self, n: int) -> torch.Tensor:
        """``n`` real images of every class, drawn from the run's generator."""
        picks = draw_per_class(self.per_class, n, self.gen)
        return self.train_x[picks.to(self.plan.device)]

    def _step_batches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's real batch and the rows the updater trains on (its first
        ``update_batch`` of each class: the network slices them off); in an N-process run this
        process's share of each (zodd.distributed), from the same draw."""
        n = self.plan.batch_size
        if self.shard is None:
            real = self._real_batch(n)
            return real, real
        picks = draw_per_class(self.per_class, n, self.gen).to(self.plan.device)
        k = min(self.plan.update_batch or n, n)
        return (self.train_x[picks[:, self.shard.columns(n)]],
                self.train_x[picks[:, :k][:, self.shard.columns(k)]])

    def _by_class(self) -> torch.Tensor:
        """The decoded set as ``[classes, k, ch, h, w]``."""
        return self.images().unflatten(0, (self.data.num_classes, -1))

    def _bind(self, real: torch.Tensor, one_pass: bool = False):
        """The step's black box, its guard, the guide and the one pass's features
        (zodd.binding)."""
        return self.binding(self.network.net, real, self.x, self.gen,
                            self.network.class_weight(),
                            self.plan.update_batch if one_pass else 0)

    def images(self) -> torch.Tensor:
        """The images S stands for now (decoded from the stored tensor), detached."""
        with torch.no_grad():
            return self.rep.decode(self.x.detach())

    def decoded_set(self) -> SyntheticSet:
        """The decoded set; learned labels are its ``labels`` ``[N, classes]`` (float)."""
        labels = self.labels if self.y is None else self.targets().clone()
        return SyntheticSet(self.images(), labels, self.data.num_classes)

    def save(self, out: Path, decoded: SyntheticSet) -> None:
        """synthetic.pt (``decoded``, the decoded set), grid.png, and what the representation
        stores beside them (zodd.representation: ``record``)."""
        record = self.rep.record()
        stored = None if record is None else SyntheticSet(
            self.x.detach(), self.syn.labels if self.y is None else self.y.detach(),
            self.data.num_classes)
        save(decoded, out, self.data, stored=stored,
             representation=record, grid_of_stored=self.rep.shows_stored)

    def state_dict(self) -> dict:
        """What a checkpoint holds: everything the next step reads (S, the stepper, the network
        and its optimiser or the queue, the generator, the counters); the driver adds the
        config as asked."""
        return {
            "step": self.step,
            "queries": self.queries, "seconds": self.seconds, "failures": self.failures,
            "images": self.x.detach().cpu().clone(),
            "labels": None if self.y is None else self.y.detach().cpu().clone(),
            **self.stepper.state_dict(),
            "generator": self.gen.get_state(), **self.network.state_dict(),
            "chosen_at": self.chosen_at,
            "kept": None if self.kept is None else {**self.kept,
                                                     "point": self.kept["point"].cpu().clone()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Put a checkpoint's state back into this loop, freshly built from its config."""
        if not self.stepper.resumable:
            raise ZoddError("a run driven by a nevergrad optimiser cannot be resumed (its state "
                            "is not in the checkpoint); its set is in synthetic.pt")
        with torch.no_grad():
            self.x.copy_(state["images"])
            if self.y is not None:
                self.y.copy_(state["labels"])
        self.good = self.point().clone()
        self.stepper.load_state_dict(state)
        self.gen.set_state(state["generator"])
        self.step, self.queries, self.seconds = state["step"], state["queries"], state["seconds"]
        self.checkpointed = self.step
        self.failures = state.get("failures", 0)
        self.chosen_at, kept = state.get("chosen_at", -1), state.get("kept")
        self.kept = None if kept is None else {**kept, "point": kept["point"].to(self.x.device)}
        self.network.load_state_dict(state, self.gen)

    def check_finite(self, since: int) -> None:
        """S is finite (then it is the new last good set), or it is put back to the last good
        one and the run ends (one check per group of log rows: no host sync per step)."""
        if all(bool(torch.isfinite(leaf).all()) for leaf in self.leaves):
            self.good = self.point().clone()
            return
        self._put(self.good)
        raise ZoddError(f"the objective gave a non-finite gradient at step {since} or after; "
                        "lower --lr or --sigma")


@dataclass(frozen=True)
class Warm:
    """What a warm start did: its DM steps, the step whose set it handed on, the seconds and
    the fold-0 scorings (queries) it took; zeros for every other start."""

    steps: int = 0
    kept: int = 0
    seconds: float = 0.0
    queries: int = 0


def initial_set(plan: Plan, data: ImageData, rep, gen: torch.Generator,
                resuming: bool) -> tuple[SyntheticSet, Warm]:
    """S before its first step (the stored set, on the plan's device) and what a warm start
    did (``--init dm``: its seconds count against ``--max-seconds``)."""
    syn, warm = _start(plan, data, rep, gen, resuming)
    syn.images, syn.labels = syn.images.to(plan.device), syn.labels.to(plan.device)
    return syn, warm


def _start(plan: Plan, data: ImageData, rep, gen: torch.Generator,
           resuming: bool) -> tuple[SyntheticSet, Warm]:
    if plan.init in INITS and INITS[plan.init] is not None:
        return initialise(data, plan.ipc, plan.init, gen, rep), Warm()
    if resuming:  # the checkpoint holds S: the set it started from may be gone; a warm start's
        # real images (its source) are drawn again, to stay out of the held-out ones
        how = "real" if plan.init == "dm" else "noise"
        return (initialise(data, plan.ipc, how, torch.Generator().manual_seed(plan.seed), rep),
                Warm())
    if plan.init == "dm":
        return warm_start(plan, data)
    return start(plan.init, data, plan.ipc, rep, rep.record() or {"name": "pixel"}), Warm()


# what a warm start changes of the run's plan: distribution matching with exact gradients on
# DM's own schedule (a fresh ConvNet each step, no update on real data) from real images; the
# data, the set's size and representation, the network's shape, the real batch, the
# augmentation, the seed and the device stay the run's
WARM_START = dict(
    init="real", objective="dm", estimator="autograd", optimizer="auto", lr=None, sigma=None,
    directions=None, lowres=None, surrogate=None, command=None, workers=0, labels="onehot",
    label_lr=None, updater="native", one_pass=False, compile=False, network="convnet",
    reinit_every=None, model_steps=None, update_batch=None, queue_size=None, queue_every=None,
    ce_weight=None, pool_size=None, pool_steps=None, pool_lr=None, max_seconds=None,
    max_queries=None, select_every=None)


def warm_start(plan: Plan, data: ImageData) -> tuple[SyntheticSet, Warm]:
    """``--init dm``: distribution matching with exact gradients (``WARM_START``) from the real
    start, for at most ``plan.warm_iterations`` steps. When the run chooses its set on fold 0
    (``--select-every``), the DM set is scored there every ``select_every`` steps: the warm
    start ends once ``WARM_PATIENCE`` scorings in a row found no better set, or at
    ``WARM_SHARE`` of ``--max-seconds``, and hands on the best set it scored (DM helps some
    scorers for a hundred steps and others for ten: the score says which)."""
    warm = dataclasses.replace(plan, **WARM_START, iterations=plan.warm_iterations)
    started = time.perf_counter()
    loop = Loop(resolve(warm, data), data)
    s = loop.syn  # its source: the real images it began from stay out of the scores' held-out
    choose = _fold_zero(plan, data, loop) if plan.select_every else None
    best, since, queries = None, 0, 0
    for _ in range(plan.warm_iterations):
        loop.advance()
        if choose is not None and loop.step % plan.select_every == 0:
            loop.check_finite(loop.step)
            value, _ = choose(loop.point())
            queries += 1
            if value is not None and (best is None or value < best[0]):
                best, since = (value, loop.step, loop.x.detach().cpu().clone()), 0
            else:
                since += 1
                if since >= WARM_PATIENCE:
                    break
        if (plan.max_seconds is not None
                and time.perf_counter() - started >= WARM_SHARE * plan.max_seconds):
            break
    loop.check_finite(loop.step)
    kept, images = (loop.step, loop.x.detach().cpu().clone()) if best is None else best[1:]
    return (SyntheticSet(images, s.labels.cpu(), s.num_classes, s.source),
            Warm(loop.step, kept, time.perf_counter() - started, queries))


def _fold_zero(plan: Plan, data: ImageData, loop: "Loop"):
    """The run's own objective, bound to score a warm-start set on fold 0 (zodd.binding)."""
    binding = build.binding(plan, data, loop.rep, loop.labels, loop.train_x, loop.syn.source)
    if plan.labels != "learn":
        return binding.choose
    labels = label_sets.initial(data.num_classes, plan.ipc).to(plan.device)
    return lambda x: binding.choose(label_sets.pack(x, labels))
