"""The distillation loop: update theta -> bind the objective -> estimate -> step S (with
``--one-pass``: bind the objective, whose forward pass over the real batch also gives theta's
gradient -> estimate -> step S -> step theta; with IDM's queue of networks: draw a network
from the queue -> bind -> estimate -> step S -> the updater trains queue networks,
zodd.networks).

The loop runs a :class:`zodd.plan.Plan` (every default already filled in) and looks nothing up.
One seed makes one root generator; network initialisations, real subsamples, augmentation seeds
and estimator directions are all drawn from it, so a run is reproducible on one machine. A
checkpoint holds the whole loop state (S, the stepper, the network, the generator, the
counters), so a resumed run continues bit for bit as if never interrupted.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from zodd import rundir
from zodd.config import DistillConfig
from zodd.data import ImageData, data_root, draw_per_class
from zodd.estimators import ESTIMATORS, Autograd
from zodd.guard import Guarded
from zodd.models import build_model
from zodd.networks import NetworkQueue
from zodd.plan import Plan, make_objective, resolve
from zodd.prior import load_or_train
from zodd.representation import decoded, make as make_representation
from zodd.robust import RobustUpdater, train_on_synthetic
from zodd.steppers import make_stepper
from zodd.sets import start
from zodd.synthetic import INITS, SyntheticSet, class_major, initialise, save
from zodd.types import EvaluationError, StepContext, ZoddError

@dataclass
class Result:
    synthetic: SyntheticSet
    rows: list[dict] = field(default_factory=list)
    stopped_by: str = "iterations"
    estimator: str = ""

    @property
    def queries(self) -> int:
        return self.rows[-1]["queries"] if self.rows else 0


class Loop:
    """The state of one distillation and the step that advances it. S, the network and each
    step's batches live on the plan's device; the data set and the generator stay on the CPU
    (zodd.types.resolve_device)."""

    def __init__(self, plan: Plan, data: ImageData, pool=None, resuming: bool = False):
        self.plan, self.data, self.pool = plan, data, pool  # pool: a RayPool when workers > 0
        self.gen = torch.Generator().manual_seed(plan.seed)
        prior = None
        if plan.representation == "latent":
            prior = load_or_train(data, plan.latent, root=data_root(plan.data_dir))
        self.rep = make_representation(plan.representation, plan.factor, prior)
        warm_seconds = 0.0  # --init dm: the warm start's time, counted against --max-seconds
        if plan.init in INITS and INITS[plan.init] is not None:  # the stored set
            self.syn = initialise(data, plan.ipc, plan.init, self.gen, self.rep)
        elif resuming:  # the checkpoint holds S: the set it started from may be gone; a warm
            # start's real images (its source) are drawn again, to stay out of the held-out ones
            how = "real" if plan.init == "dm" else "noise"
            self.syn = initialise(data, plan.ipc, how, torch.Generator().manual_seed(plan.seed),
                                  self.rep)
        elif plan.init == "dm":
            self.syn, warm_seconds = warm_start(plan, data)
        else:  # a set to go on from
            self.syn = start(plan.init, data, plan.ipc, self.rep, self.stored_as())
        if prior is not None:
            prior.to(plan.device)
        self.syn.images, self.syn.labels = (t.to(plan.device) for t in (self.syn.images,
                                                                         self.syn.labels))
        self.x = self.syn.images.requires_grad_(True)
        self.labels = class_major(data.num_classes, plan.ipc * self.rep.per_image).to(
            plan.device)  # of the decoded images
        self.objective = make_objective(plan)
        self.surrogate = make_objective(plan, plan.surrogate) if plan.surrogate else None
        self.estimator = ESTIMATORS[plan.estimator](plan) if plan.estimator in ESTIMATORS else None
        self.stepper = make_stepper(plan, self.x, self.estimator, self.gen)
        self.updater = RobustUpdater(plan.updater, plan.alpha, plan.cvar_tail, plan.cvar_terms,
                                     plan.clusters, plan.cluster_space, plan.model_lr,
                                     plan.model_steps, plan.compile)
        self.queue = None if not plan.queue_size else NetworkQueue(
            self._build_network, plan.queue_size, plan.queue_every, plan.queue_train,
            plan.model_steps, plan.model_lr, self.gen)
        self.drawn = None  # the queue member S is matched under this step
        self.per_class = data.class_indices()
        self.train_x = data.train_x.to(plan.device)  # moved once; indices are drawn on the CPU
        self.good = self.x.detach().clone()  # the last set known to be finite
        # real images kept apart from S's initialisation, for scores on held-out data
        used = self.syn.source if self.syn.source is not None else torch.empty(0, dtype=torch.long)
        self.held_out_pool = [i[~torch.isin(i, used)] for i in self.per_class]
        self.step, self.queries, self.seconds, self.failures = 0, 0, warm_seconds, 0
        self.net: torch.nn.Module | None = None
        self.net_opt: torch.optim.Optimizer | None = None

    def _build_network(self, seed: int) -> torch.nn.Module:
        d, p = self.data, self.plan
        return build_model(d.channels, d.num_classes, d.image_size, p.width, p.depth,
                           seed=seed).to(p.device)

    def _new_network(self) -> None:
        self.net = self._build_network(int(torch.randint(2**31 - 1, (1,), generator=self.gen)))
        self.net_opt = self.updater.optimizer(self.net)

    def advance(self) -> dict:
        """One iteration: update theta on a real subsample, bind the objective, estimate, step S.
        Returns its log row (without the time)."""
        self._refresh_network()  # before the real batch: the order of draws from self.gen
        picks = draw_per_class(self.per_class, self.plan.n_real, self.gen)
        real = self.train_x[picks.to(self.plan.device)]  # [classes, n, ch, h, w]
        one_pass = self.plan.one_pass and self.net is not None
        terms = {} if one_pass or self.queue else self._update_network(real)
        box, guard, guide, shared_terms = self._bind(real, one_pass)
        terms = terms or shared_terms
        row: dict = {}
        try:
            estimate = self.stepper.propose(box, self.x, self.gen, guide)
        except EvaluationError as exc:  # f(S) failed: the step is skipped
            estimate, row = None, {"skipped": str(exc)}
        self.stepper.apply(self.x, estimate)
        if one_pass:  # the update's gradient is in the network since _bind; S is done with it
            self.net_opt.step()
        if self.queue:  # IDM: the queue's networks train after S's step
            terms = self.queue.train(self.updater, self._update_batch,
                                     self.images().unflatten(0, (self.data.num_classes, -1)),
                                     self.gen)
        if self.plan.train_on_synthetic:
            train_on_synthetic(self.net, self.net_opt, self.images(), self.labels,
                               self.plan.train_on_synthetic)
        self.step += 1
        self.queries += estimate.queries if estimate else self.stepper.queries()
        if guard is not None and (guard.failures or guard.retried):
            self.failures += guard.failures
            row.update(failures=guard.failures, retried=guard.retried,
                       fault=guard.messages[-1][:200])
        loss = estimate.loss if estimate else None  # None: a skipped step (JSON has no NaN)
        return {"step": self.step, "queries": self.queries, "loss": loss, **terms, **row}

    def _refresh_network(self) -> None:
        """A fresh network when due, or the step's draw from the queue; none for objectives
        that score S alone."""
        if self.queue:
            self.queue.refresh(self.step, self.gen)
            self.drawn = self.queue.draw(self.gen)
            self.net, self.net_opt = self.drawn.net, self.drawn.opt
        elif self.plan.uses_network and (self.net is None or
                                       self.step % self.plan.reinit_every == 0):
            self._new_network()

    def _update_batch(self) -> torch.Tensor:
        """A fresh real batch for one queue network's training step: ``n_update`` a class."""
        picks = draw_per_class(self.per_class, self.plan.n_update, self.gen)
        return self.train_x[picks.to(self.plan.device)]

    def _update_network(self, real: torch.Tensor) -> dict[str, float]:
        """The updater's steps on the real subsample (none for ``native``)."""
        if self.net is None:
            return {}
        self.net.requires_grad_(True)
        terms = self.updater.step(self.net, self.net_opt, real[:, :self.plan.n_update],
                                  self.images().unflatten(0, (self.data.num_classes, -1)),
                                  self.gen)
        self.net.requires_grad_(False)
        return terms

    def _bind(self, real: torch.Tensor, one_pass: bool = False):
        """The step's black box (guarded and maybe parallel on the zero-order path), its guard,
        the surrogate's exact gradient at S as the estimator's ``guide`` (not a query), and
        with ``one_pass`` the update's loss terms: its gradient is computed here from the
        objective's own forward pass over the real batch and applied after S's step."""
        held_out = None
        if self.objective.needs_held_out:
            n = min(self.plan.n_real, min(len(i) for i in self.held_out_pool))
            picks = draw_per_class(self.held_out_pool, n, self.gen)
            held_out = self.train_x[picks.to(self.plan.device)]
        ctx = StepContext(self.net, real, self.labels, self.data.num_classes,
                          seed=int(torch.randint(2**31 - 1, (1,), generator=self.gen)),
                          augment=self.plan.augment, held_out=held_out,
                          pixel_mean=self.data.mean, pixel_std=self.data.std,
                          compile=self.plan.compile,
                          ce_weight=self.plan.ce_weight * self.drawn.accuracy()
                          if self.drawn is not None and self.plan.ce_weight else 0.0)
        terms: dict = {}
        if one_pass:
            self.net.requires_grad_(True)
            bound = self.objective.bind(replace(ctx, trained_rows=self.plan.n_update))
            terms = self.updater.gradient(
                self.net, self.net_opt, bound.trained, real[:, :self.plan.n_update],
                self.images().unflatten(0, (self.data.num_classes, -1)), self.gen)
            bound.trained = None  # spent: not kept with the box nor sent to Ray workers
            self.net.requires_grad_(False)
        else:
            bound = self.objective.bind(ctx)
        box = decoded(bound, self.rep)
        guide = {} if self.surrogate is None else {
            "guide": Autograd().estimate(decoded(self.surrogate.bind(ctx), self.rep), self.x,
                                         self.gen).grad}
        if self.plan.estimator == "autograd":
            return box, None, guide, terms
        guard = Guarded(self.pool.wrap(box) if self.pool else box, self.plan.retries)
        return guard, guard, guide, terms

    def images(self) -> torch.Tensor:
        """The images S stands for now (decoded from the stored tensor), detached."""
        with torch.no_grad():
            return self.rep.decode(self.x.detach())

    def decoded_set(self) -> SyntheticSet:
        return SyntheticSet(self.images(), self.labels, self.data.num_classes)

    def save(self, out: Path, decoded: SyntheticSet) -> None:
        """synthetic.pt (``decoded``, the decoded set), and for a stored representation other
        than pixels, representation.pt and a grid of the stored images."""
        if self.plan.representation == "pixel":
            save(decoded, out, self.data)
        else:
            save(decoded, out, self.data, stored=self.syn, representation=self.stored_as(),
                 grid_of_stored=self.plan.representation == "multi")

    def stored_as(self) -> dict:
        """How the stored tensor decodes, as representation.pt records it."""
        how = {"pixel": {}, "multi": {"factor": self.plan.factor},
               "latent": {"latent": self.plan.latent}}[self.plan.representation]
        return {"name": self.plan.representation, **how}

    def check_finite(self, since: int) -> None:
        """S is finite (then it is the new last good set), or it is put back to the last good
        one and the run ends (one check per group of log rows: no host sync per step)."""
        if bool(torch.isfinite(self.x).all()):
            self.good = self.x.detach().clone()
            return
        with torch.no_grad():
            self.x.copy_(self.good)
        raise ZoddError(f"the objective gave a non-finite gradient at step {since} or after; "
                        "lower --lr or --sigma")


def warm_start(plan: Plan, data: ImageData) -> tuple[SyntheticSet, float]:
    """``--init dm``: the stored set after ``plan.warm_iterations`` steps of distribution
    matching with exact gradients (DM's own schedule: a fresh network each step) from the real
    start, in the run's representation and with its seed, and the seconds they took."""
    cfg = plan.cfg
    warm = DistillConfig(
        dataset=cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size,
        test_fraction=cfg.test_fraction, ipc=cfg.ipc, representation=cfg.representation,
        factor=cfg.factor, latent=cfg.latent, seed=cfg.seed, device=plan.device,
        batch_size=cfg.batch_size, augment=cfg.augment, width=cfg.width, depth=cfg.depth,
        init="real", objective="dm", estimator="autograd", updater="native",
        iterations=plan.warm_iterations)
    started = time.perf_counter()
    loop = Loop(resolve(warm, data), data)
    for _ in range(plan.warm_iterations):
        loop.advance()
    loop.check_finite(loop.step)
    s = loop.syn  # its source: the real images it began from stay out of the scores' held-out
    return (SyntheticSet(loop.x.detach().cpu().clone(), s.labels.cpu(), s.num_classes, s.source),
            time.perf_counter() - started)


def distill(cfg: DistillConfig, data: ImageData, out: Path | None = None,
            on_step: Callable[[dict, torch.Tensor], None] | None = None, resume: bool = False,
            should_stop: Callable[[], bool] = lambda: False) -> Result:
    """Run one distillation. With ``out`` the run's files are written there (zodd.rundir):
    config.json at the start, one log.jsonl row per iteration, a checkpoint every
    ``cfg.checkpoint_every`` iterations (default about once a minute), synthetic.pt and grid.png
    at the end. With ``resume`` it continues from the checkpoint in ``out``. Stops at the first
    budget reached (iterations, max_seconds, max_queries) or when ``should_stop()`` turns true,
    which saves a checkpoint first. ``on_step(row, images)`` sees each log row and the set after
    that step; its time is not counted in the run's seconds. With ``cfg.workers`` above 0
    candidates are evaluated on Ray actors started and shut down here."""
    plan = resolve(cfg, data)
    pool, loop, log, result = None, None, None, None
    try:
        if cfg.workers > 0:  # resolve() refused workers for autograd
            from zodd.parallel import RayPool

            pool = RayPool(cfg.workers, cfg.seed, cfg.ray_address)
        loop = Loop(plan, data, pool, resuming=resume)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if resume:
                state = rundir.read_checkpoint(out)
                rundir.check_resumable(DistillConfig.from_dict(json.loads(state["config"])), cfg)
                rundir.restore(loop, state)
            rundir.write_config(out, cfg.to_dict(), plan.to_dict())
        log = rundir.Log(out, loop.step if resume else None)
        result = Result(loop.syn, log.rows, estimator=plan.estimator)
        _run(loop, result, out, log, on_step, should_stop)
    finally:
        if pool is not None:
            pool.close()
        if log:
            log.close()
        if loop is not None:
            loop.x.requires_grad_(False)
            final = loop.decoded_set()
            if result is not None:
                result.synthetic = final
            if out is not None and out.is_dir():
                loop.save(out, final)
    return result


def _run(loop: Loop, result: Result, out: Path | None, log: rundir.Log, on_step,
         should_stop) -> None:
    cfg = loop.plan.cfg
    last_checkpoint = time.perf_counter()

    def flush() -> None:  # S checked, the rows' values fetched in one transfer and written
        started = time.perf_counter()
        loop.check_finite(log.pending[0]["step"])
        images = loop.images() if on_step else None  # the set after the group's last step
        for row in log.flush():
            if on_step:
                on_step(row, images)
        loop.seconds += time.perf_counter() - started

    while loop.step < cfg.iterations:
        started = time.perf_counter()
        log.add(loop.advance())
        loop.seconds += time.perf_counter() - started
        log.pending[-1]["seconds"] = round(loop.seconds, 4)
        if loop.failures > cfg.max_failures:
            flush()
            last = log.rows[-1]
            raise ZoddError(
                f"the black box failed {loop.failures} times, more than --max-failures "
                f"{cfg.max_failures} (last: {last.get('fault', last.get('skipped'))})"
                + (f"; the last good set is saved in {out}" if out else ""))
        if cfg.max_seconds is not None and loop.seconds >= cfg.max_seconds:
            result.stopped_by = "max_seconds"
        elif cfg.max_queries is not None and loop.queries >= cfg.max_queries:
            result.stopped_by = "max_queries"
        elif should_stop():
            result.stopped_by = "interrupted"
        due = (loop.step % cfg.checkpoint_every == 0 if cfg.checkpoint_every
               else time.perf_counter() - last_checkpoint >= loop.plan.checkpoint_seconds)
        # a checkpoint also at the end, so a finished run can be extended with --resume
        end = result.stopped_by != "iterations" or loop.step >= cfg.iterations
        if due or end or len(log.pending) >= loop.plan.log_every:
            flush()
        if out is not None and (due or end):
            started = time.perf_counter()
            rundir.save_checkpoint(rundir.loop_state(loop), out)
            last_checkpoint = time.perf_counter()
            loop.seconds += last_checkpoint - started
        if result.stopped_by != "iterations":
            break
