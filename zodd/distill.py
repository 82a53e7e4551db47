"""The distillation loop: update theta -> bind the objective -> estimate -> step S.

One seed makes one root generator; network initialisations, real subsamples, augmentation seeds
and estimator directions are all drawn from it, so a run is reproducible on one machine. A
checkpoint holds the whole loop state (S, both optimisers, the scheduler, the network, the
generator, the counters), so a resumed run continues bit for bit as if never interrupted.
"""
from __future__ import annotations

import json
import math
import shlex
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from objectives import OBJECTIVES
from zodd import estimators
from zodd.config import DistillConfig, run_metadata
from zodd.data import ImageData, draw_per_class
from zodd.models import build_model, default_shape
from zodd.robust import RobustUpdater
from zodd.synthetic import SyntheticSet, atomic_write, initialise, save, save_json
from zodd.guard import Guarded
from zodd.types import Estimate, EvaluationError, StepContext, ZoddError, resolve_device

FLIP_OK = {"fashion-mnist", "cifar10"}  # data sets where a mirrored image keeps its class
DEFAULT_LR = {"dm": 1.0, "gm": 0.1}  # SGD step sizes, exact or zero-order (BENCHMARKS.md)
PAPER_LR = 0.1  # eq. 18: s = 0.1 / sqrt(1 + E)
DEFAULT_SIGMA = 0.01  # smoothing radius for smooth objectives; scores declare their own
DEFAULT_DIRECTIONS = 128  # for dm/gm, whose candidates are cheap next to the real batch
AUTO_LOWRES_ABOVE = 4096  # values per estimated block above which directions are drawn at 1/2
CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
CHECKPOINT_FORMAT = "zodd-checkpoint-1"
CHECKPOINT_SECONDS = 60.0  # when checkpoint_every is None
# settings that a resumed run may change: they end the run sooner or later, not differently
RESUMABLE_CHANGES = {"iterations", "max_seconds", "max_queries", "checkpoint_every", "data_dir",
                     "workers", "ray_address", "max_failures", "device"}


def make_objective(cfg: DistillConfig, name: str | None = None):
    """The objective ``name`` (default: the run's ``--objective``) for this run's data set."""
    name = name or cfg.objective
    flip = cfg.dataset in FLIP_OK
    if name == "command":
        argv = tuple(shlex.split(cfg.command or ""))
        if not argv or not (shutil.which(argv[0]) or Path(argv[0]).is_file()):
            raise ZoddError(f"--command: program {argv[0] if argv else ''!r} not found")
        return OBJECTIVES["command"](argv=argv, timeout=cfg.command_timeout, flip=flip)
    return OBJECTIVES[name](flip=flip)


def auto_lowres(cfg: DistillConfig, estimator: str, set_size: int, classes: int,
                image_size: int) -> int:
    """``--lowres`` when not given: 2 for a zero-order estimator whose estimate covers more than
    AUTO_LOWRES_ABOVE values (a class's images when blockwise, else all of S) on images of even
    size, else 1. With M = 128 directions a full-resolution estimate's cosine with the gradient
    is about sqrt(M / d); on Fashion-MNIST IPC 10 (d = 7,840 per class) that noise made worse
    sets than the initialisation, and directions at half resolution did not (BENCHMARKS.md)."""
    if cfg.lowres is not None:
        return cfg.lowres
    if estimator == "autograd" or cfg.surrogate or cfg.optimizer.startswith("ng:"):
        return 1
    block = set_size // (classes if cfg.blockwise else 1)
    return 2 if block > AUTO_LOWRES_ABOVE and image_size % 2 == 0 else 1


@dataclass
class Result:
    synthetic: SyntheticSet
    rows: list[dict] = field(default_factory=list)
    stopped_by: str = "iterations"
    estimator: str = ""

    @property
    def queries(self) -> int:
        return self.rows[-1]["queries"] if self.rows else 0


def _paper_decay(epoch: int) -> float:
    return (1 + epoch) ** -0.5


def _constant(epoch: int) -> float:
    return 1.0


def _optimizer(cfg: DistillConfig, x: torch.Tensor):
    kind = cfg.optimizer
    if kind == "auto":  # the paper's decaying step only where no better one was measured
        kind = "sgd" if cfg.objective in DEFAULT_LR else "paper"
    lr = cfg.lr or (PAPER_LR if kind == "paper" else DEFAULT_LR.get(cfg.objective, 0.1))
    if kind == "adam":
        opt = torch.optim.Adam([x], lr=lr)
    else:
        opt = torch.optim.SGD([x], lr=lr, momentum=0.0 if kind == "paper" else 0.5)
    decay = _paper_decay if kind == "paper" else _constant
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, decay)


class NevergradStep:
    """S driven by a nevergrad optimiser through ask/tell. The optimiser sees a change of S from
    its initial value (at 1/lowres resolution, upsampled: a low-dimensional parameterisation);
    each step asks ``directions`` candidates, evaluates them and the current S in one call (one
    query each), tells the losses and moves S to the optimiser's recommendation."""

    def __init__(self, spec: str, x: torch.Tensor, sigma: float, asks: int, lowres: int,
                 seed: int):
        import nevergrad as ng
        import numpy as np

        from zodd.config import nevergrad_optimizer

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

    def step(self, box, x: torch.Tensor) -> Estimate:
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


class Loop:
    """The state of one distillation and the step that advances it."""

    def __init__(self, cfg: DistillConfig, data: ImageData):
        self.cfg, self.data = cfg.validate(), data
        # S, the network and each step's batches live on the device; the data set and the
        # generator stay on the CPU (see resolve_device). Ray workers evaluate on the CPU.
        self.device = resolve_device(cfg.device if cfg.workers == 0 else "cpu")
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.syn = initialise(data, cfg.ipc, cfg.init, self.gen)
        self.syn.images = self.syn.images.to(self.device)
        self.syn.labels = self.syn.labels.to(self.device)
        self.objective = make_objective(cfg)
        self.surrogate = make_objective(cfg, cfg.surrogate) if cfg.surrogate else None
        self.guide_box = None  # the surrogate bound to the step's context
        self.estimator_name = estimators.choose(cfg.estimator, self.objective.differentiable)
        self.sigma = cfg.sigma or getattr(self.objective, "default_sigma", DEFAULT_SIGMA)
        self.directions = cfg.directions or getattr(self.objective, "default_directions",
                                                    DEFAULT_DIRECTIONS)
        self.lowres = auto_lowres(cfg, self.estimator_name, self.syn.images.numel(),
                                  data.num_classes, data.image_size)
        self.estimator = estimators.ESTIMATORS[self.estimator_name](
            replace(cfg, sigma=self.sigma, directions=self.directions, lowres=self.lowres))
        self.updater = RobustUpdater(mode=cfg.updater, alpha=cfg.alpha, tail=cfg.cvar_tail,
                                     terms=cfg.cvar_terms,
                                     clusters=cfg.clusters, cluster_space=cfg.cluster_space,
                                     lr=cfg.model_lr, steps=cfg.model_steps)
        depth = cfg.depth or default_shape(data.image_size)[1]
        if data.image_size >> depth < 1:
            raise ZoddError(f"invalid depth: {depth} (pools {data.name}'s {data.image_size} px "
                            "images below 1 px)")
        if self.estimator_name != "autograd" and self.directions * self.syn.images.numel() > 2**30:
            raise ZoddError(f"invalid directions: {self.directions} (directions x set size = "
                            f"{self.directions * self.syn.images.numel():,} values, over 2^30)")
        if data.image_size % self.lowres:
            raise ZoddError(f"invalid lowres: {self.lowres} (must divide {data.name}'s image size "
                            f"{data.image_size})")
        if self.estimator_name == "coordinate":
            coords = self.syn.images.numel() // self.lowres ** 2 // (
                data.num_classes if cfg.blockwise else 1)
            if self.directions > coords:
                raise ZoddError(f"invalid directions: {self.directions} (the coordinate "
                                f"estimator has {coords} coordinates to choose from here)")
        self.x = self.syn.images.requires_grad_(True)
        self.nevergrad = None
        if cfg.optimizer.startswith("ng:"):
            self.nevergrad = NevergradStep(cfg.optimizer, self.x, self.sigma, self.directions,
                                           self.lowres,
                                           int(torch.randint(2**31 - 1, (1,), generator=self.gen)))
            self.estimator_name = cfg.optimizer
        self.opt, self.schedule = _optimizer(cfg, self.x)
        self.per_class = data.class_indices()
        self.n_real = min(cfg.batch_size, min(len(i) for i in self.per_class))
        # real images kept apart from S's initialisation, for scores on held-out data
        used = self.syn.source if self.syn.source is not None else torch.empty(0, dtype=torch.long)
        self.held_out_pool = [i[~torch.isin(i, used)] for i in self.per_class]
        self.pool = None  # a RayPool when workers > 0 (set by distill)
        self.step, self.queries, self.seconds, self.failures = 0, 0, 0.0, 0
        self.net: torch.nn.Module | None = None
        self.net_opt: torch.optim.Optimizer | None = None

    def _new_network(self) -> None:
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.gen))
        d = self.data
        self.net = build_model(d.channels, d.num_classes, d.image_size, self.cfg.width,
                               self.cfg.depth, seed=seed).to(self.device)
        self.net_opt = self.updater.optimizer(self.net)

    def advance(self) -> dict:
        """One iteration: update theta on a real subsample, bind the objective, estimate, step S.
        Returns its log row (without the time)."""
        self._refresh_network()  # before the real batch: the order of draws from self.gen
        picks = draw_per_class(self.per_class, self.n_real, self.gen)
        real = self.data.train_x[picks].to(self.device)  # [classes, n, ch, h, w]
        terms = self._update_network(real)
        box, guard = self._bind(real)
        row: dict = {}
        try:
            if self.nevergrad is not None:
                estimate = self.nevergrad.step(box, self.x)
            else:
                estimate = self.estimator.estimate(box, self.x, self.gen, **self._guide())
        except EvaluationError as exc:  # f(S) failed: the step is skipped
            estimate, row = None, {"skipped": str(exc)}
        if estimate is not None and self.nevergrad is None:  # a failed step leaves S as it was
            if not torch.isfinite(estimate.grad).all():
                raise ZoddError(f"the objective gave a non-finite gradient at step "
                                f"{self.step + 1}; lower --lr or --sigma")
            self.x.grad = estimate.grad
            self.opt.step()
        if self.nevergrad is None:
            self.schedule.step()
        if self.cfg.updater == "native" and self.cfg.objective == "gm":
            _train_on_synthetic(self.net, self.net_opt, self.syn, self.cfg.model_steps)  # DC's
        self.step += 1
        self.queries += estimate.queries if estimate else self.estimator_queries()
        if guard is not None and (guard.failures or guard.retried):
            self.failures += guard.failures
            row.update(failures=guard.failures, retried=guard.retried,
                       fault=guard.messages[-1][:200])
        loss = estimate.loss if estimate else None  # None: a skipped step (JSON has no NaN)
        return {"step": self.step, "queries": self.queries, "loss": loss, **terms, **row}

    def _refresh_network(self) -> None:
        """A fresh network when due (every iteration for native DM); none for objectives that
        score S alone."""
        if not getattr(self.objective, "uses_network", True) and self.surrogate is None:
            return
        native = self.cfg.updater == "native"
        period = 1 if native and self.cfg.objective == "dm" else self.cfg.reinit_every
        if self.net is None or self.step % period == 0:
            self._new_network()

    def _update_network(self, real: torch.Tensor) -> dict[str, float]:
        """The updater's steps on the real subsample (none for ``native``)."""
        if self.net is None:
            return {}
        terms: dict[str, float] = {}
        if self.cfg.updater != "native":
            self.net.requires_grad_(True)
            terms = self.updater.step(self.net, self.net_opt, real,
                                      self.syn.by_class(self.x.detach()), self.gen)
        self.net.requires_grad_(False)
        return terms

    def _bind(self, real: torch.Tensor):
        """The step's black box (guarded and maybe parallel on the zero-order path)."""
        held_out = None
        if getattr(self.objective, "needs_held_out", False):
            n = min(self.n_real, min(len(i) for i in self.held_out_pool))
            picks = draw_per_class(self.held_out_pool, n, self.gen)
            held_out = self.data.train_x[picks].to(self.device)
        ctx = StepContext(self.net, real, self.syn.labels, self.data.num_classes,
                          seed=int(torch.randint(2**31 - 1, (1,), generator=self.gen)),
                          augment=self.cfg.augment, held_out=held_out,
                          pixel_mean=self.data.mean, pixel_std=self.data.std)
        box = self.objective.bind(ctx)
        if self.surrogate is not None:
            self.guide_box = self.surrogate.bind(ctx)
        if self.estimator_name == "autograd":
            return box, None
        guard = Guarded(self.pool.wrap(box) if self.pool else box, self.cfg.retries)
        return guard, guard

    def _guide(self) -> dict:
        """The surrogate's exact gradient at S, as the estimator's ``guide`` (not a query of the
        black box)."""
        if self.guide_box is None:
            return {}
        return {"guide": estimators.Autograd().estimate(self.guide_box, self.x, self.gen).grad}

    def estimator_queries(self) -> int:
        if self.nevergrad is not None:
            return self.nevergrad.asks + 1
        return self.estimator.queries() if hasattr(self.estimator, "queries") else 1

    # --- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "config": json.dumps(self.cfg.to_dict()),
            "step": self.step, "queries": self.queries, "seconds": self.seconds,
            "failures": self.failures, "images": self.x.detach().cpu().clone(),
            "optimizer": self.opt.state_dict(),
            "schedule": self.schedule.state_dict(), "generator": self.gen.get_state(),
            "net": None if self.net is None else self.net.state_dict(),
            "net_optimizer": None if self.net_opt is None else self.net_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.x.copy_(state["images"])
        self.opt.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.gen.set_state(state["generator"])
        self.step, self.queries, self.seconds = state["step"], state["queries"], state["seconds"]
        self.failures = state.get("failures", 0)
        if state["net"] is not None:
            saved = self.gen.get_state()
            self._new_network()  # the architecture; its weights are replaced just below
            self.gen.set_state(saved)
            self.net.load_state_dict(state["net"])
            self.net_opt.load_state_dict(state["net_optimizer"])


def save_checkpoint(loop: Loop, out: Path) -> None:
    """Atomically write checkpoint.pt, keeping the one before as checkpoint.prev.pt."""
    state = loop.state_dict()
    current = out / CHECKPOINT
    if current.exists():
        current.replace(out / PREVIOUS)
    atomic_write(current, lambda f: torch.save(state, f))


def read_checkpoint(out: Path) -> dict:
    """The newest readable checkpoint in ``out``; falls back to the previous one (with a
    warning) when the newest is damaged."""
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = out / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}")
            continue
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            problems.append(f"{name}: not a zodd checkpoint")
            continue
        if problems:
            warnings.warn(f"{out}/{CHECKPOINT} is unreadable ({problems[0]}); resuming from "
                          f"{name} at step {state['step']}")
        return state
    if problems:
        raise ZoddError(f"no usable checkpoint in {out} ({'; '.join(problems)})")
    raise ZoddError(f"no checkpoint in {out}")


def check_resumable(saved: DistillConfig, wanted: DistillConfig) -> None:
    for name, value in wanted.to_dict().items():
        if name not in RESUMABLE_CHANGES and getattr(saved, name) != value:
            raise ZoddError(f"cannot resume: {name.replace('_', '-')} is {value!r} here but "
                            f"{getattr(saved, name)!r} in the checkpoint")


def distill(cfg: DistillConfig, data: ImageData, out: Path | None = None,
            on_step: Callable[[dict], None] | None = None, resume: bool = False,
            should_stop: Callable[[], bool] = lambda: False, pool=None) -> Result:
    """Run one distillation. With ``out`` the run's files are written there: config.json at the
    start, one log.jsonl row per iteration, a checkpoint every ``cfg.checkpoint_every``
    iterations (default about once a minute), synthetic.pt and grid.png at the end. With
    ``resume`` it continues from the checkpoint in ``out``. Stops at the first budget reached
    (iterations, max_seconds, max_queries) or when ``should_stop()`` turns true, which saves a
    checkpoint first. With ``cfg.workers`` above 0 candidates are evaluated on Ray actors
    (``pool``, or a local pool started and shut down here)."""
    loop = Loop(cfg, data)
    result = Result(loop.syn, estimator=loop.estimator_name)
    log, own_pool = None, None
    if cfg.workers > 0:  # validate() refused workers for autograd
        from zodd.parallel import RayPool

        loop.pool = pool or RayPool(cfg.workers, cfg.seed, cfg.ray_address)
        own_pool = None if pool else loop.pool
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            if loop.nevergrad is not None:
                raise ZoddError("a run driven by a nevergrad optimiser cannot be resumed (its "
                                "state is not in the checkpoint); its set is in synthetic.pt")
            state = read_checkpoint(out)
            check_resumable(DistillConfig.from_dict(json.loads(state["config"])), cfg)
            loop.load_state_dict(state)
            result.rows = _read_log(out / "log.jsonl", loop.step)
            atomic_write(out / "log.jsonl", lambda f: f.write(
                "".join(json.dumps(r) + "\n" for r in result.rows).encode()))
        save_json({**cfg.to_dict(), "estimator_resolved": loop.estimator_name,
                   "sigma_resolved": loop.sigma, "directions_resolved": loop.directions,
                   "device_resolved": str(loop.device), "lowres_resolved": loop.lowres,
                   **run_metadata()},
                  out / "config.json")
        log = open(out / "log.jsonl", "a")
    start = time.perf_counter() - loop.seconds
    last_checkpoint = time.perf_counter()
    try:
        while loop.step < cfg.iterations:
            row = loop.advance()
            loop.seconds = time.perf_counter() - start
            row["seconds"] = round(loop.seconds, 4)
            result.rows.append(row)
            if log:
                log.write(json.dumps(row) + "\n")
                log.flush()
            if on_step:
                on_step(row)
            if loop.failures > cfg.max_failures:
                raise ZoddError(
                    f"the black box failed {loop.failures} times, more than --max-failures "
                    f"{cfg.max_failures} (last: {row.get('fault', row.get('skipped'))})"
                    + (f"; the last good set is saved in {out}" if out else ""))
            if cfg.max_seconds is not None and loop.seconds >= cfg.max_seconds:
                result.stopped_by = "max_seconds"
            elif cfg.max_queries is not None and loop.queries >= cfg.max_queries:
                result.stopped_by = "max_queries"
            elif should_stop():
                result.stopped_by = "interrupted"
            due = (loop.step % cfg.checkpoint_every == 0 if cfg.checkpoint_every
                   else time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS)
            # a checkpoint also at the end, so a finished run can be extended with --resume
            end = result.stopped_by != "iterations" or loop.step >= cfg.iterations
            if out is not None and (due or end):
                save_checkpoint(loop, out)
                last_checkpoint = time.perf_counter()
            if result.stopped_by != "iterations":
                break
    finally:
        loop.x.requires_grad_(False)
        if own_pool is not None:
            own_pool.close()
        if log:
            log.close()
        if out is not None:
            save(loop.syn, out, data)
    return result


def _read_log(path: Path, upto: int) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                break  # a line cut by the crash
            if row.get("step", upto + 1) > upto:
                break
            rows.append(row)
    return rows


def _train_on_synthetic(net, opt, syn: SyntheticSet, steps: int) -> None:
    net.requires_grad_(True)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(syn.images.detach()), syn.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.requires_grad_(False)
