"""What a run will do: every setting a config leaves open ("auto" or None), filled in once.

``check(cfg)`` checks every name in a config against its registry and the rules that tie
settings together (it needs no data, so ``zodd.settings``, the one way user input becomes a
config, runs it once before anything is loaded); ``resolve(cfg, data)`` fills in the rest and
returns a frozen :class:`Plan`: the same config with every open setting filled in, plus what
the data decides, which ``zodd.loop.Loop`` runs without looking anything else up.
``config.json`` keeps the settings as asked and the plan under ``resolved``.

Why each default is what it is (the figures are in BENCHMARKS.md):

* **estimator** ``auto``: autograd where the objective is differentiable (exact and cheapest);
  for the scores es (OpenES: antithetic pairs, rank-shaped, Adam), which in each of the four
  paired runs (1-NN from real images on pixels and on codes and from a DM start, an MLP from
  a DM start; digits IPC 1, BENCHMARKS.md "Outside evaluators") moved the held-out error at
  least as far as the paper's gaussian estimator (Algorithm 2) in the same time, where
  gaussian at the scores' σ = 0.3 mostly did not move a piecewise-constant score at all;
  gaussian with ``--surrogate`` (its guide is a gaussian-estimator feature).
* **optimizer** ``auto``: the objective's ``default_optimizer`` at its ``default_lr`` for
  matching objectives, exact or zero-order: SGD with momentum 0.5 for dm (1.0) and gm (0.1),
  Adam for krr (0.01; its loss scales with the features); SGD beat the paper's decaying step
  s = 0.1 / sqrt(1 + E) on digits DM at equal queries; the scores, whose queries are whole
  evaluations, keep the paper's rule. ``lr``: the objective's ``default_lr``; 0.1 for the paper's
  rule. With ``--estimator es`` (rank-shaped estimates, in no loss's units) Adam at ``ES_LR``,
  as OpenES does.
* **init** ``auto``: ``real`` for the matching objectives; ``dm`` for the scores (prototype,
  trained, command): DM with exact gradients (``--updater native``, no queries) before the
  first query. A black box's budget is whole evaluations, and from a random real start a few
  hundred of them moved outside evaluators by 0-3 points where 6 s of DM moved them by 15-25
  (digits IPC 1, BENCHMARKS.md "Outside evaluators"); the warm start's seconds count against
  ``--max-seconds``. **warm_iterations**: ``WARM_ITERATIONS`` DM steps where the run cannot
  score on fold 0; where it can (below), at most ``WARM_MOST``, ended by the score: DM stops
  after ``WARM_PATIENCE`` fold-0 scorings found no better set (or at ``WARM_SHARE`` of
  ``--max-seconds``) and hands on the best set scored. On Fashion-MNIST IPC 1, DM's sets kept
  improving 1-NN's error on unseen images to about step 100 (44.6 % at 20 steps, 39.1 % at
  120) while an MLP's was flat from step 10 (37-38 %): no fixed count suits both, and the
  score itself says which (BENCHMARKS.md, "Black-box queries on data the scorer never saw").
* **folds** 5, **select_every** ``SELECT_EVERY`` for the scores that can hold data out
  (prototype and trained on zodd's held-out images, a ``--command`` taking ``{fold}``), else
  0: the search's steps score on folds 1-4 with a fresh ``{seed}`` each, and the run keeps the
  best set on fold 0 (seed 0), not the last. A search of thousands of queries fits what its
  scorer holds fixed: against scorers with one seed and one set of images (whose searches
  also saw unclipped pixels), the scored images' error fell 6-11 points while unseen error
  moved by -1.3 to +0.5. Choosing costs a fifth of the scorer's data and one evaluation in
  five steps of ``2 x directions + 1``.
* **sigma**, **directions**: the objective's (dm and gm: 0.01 and 128, a candidate costs one pass
  of S, cheap next to the real batch; scores: 0.3 and 32, piecewise constant, so a radius that
  crosses decision boundaries, and a query is a whole evaluation).
* **lowres** ``None``: 1 for ``--representation latent`` (codes, not images); 2 for a zero-order estimator whose estimate covers more than
  ``AUTO_LOWRES_ABOVE`` values (a class of S when blockwise, else all of S) on images of even size,
  else 1. With M = 128 directions a full-resolution estimate's cosine with the gradient is about
  sqrt(M / d); on Fashion-MNIST IPC 10 (d = 7,840 a class) that noise made sets worse than their
  initialisation, and directions at half resolution did not. 1 for autograd, a surrogate (its
  guide is full-resolution) and nevergrad (its own search).
* **device** ``auto``: the first CUDA GPU when torch sees one, else the CPU; Ray workers
  evaluate on the CPU, so ``--workers`` runs there.
* **width**, **depth**: ConvNet-3 of width 128 for 28-32 px images, ConvNet-2 of width 64 for
  the 8 px digits (models.default_shape).
* **flip**: the data set's (a mirrored image keeps its class: Fashion-MNIST, CIFAR-10).
* **reinit_every**, **model_steps**, **train_on_synthetic** (the network's schedule; a value
  the config gives wins): with an updater, a fresh network every ``REINIT_EVERY`` iterations and
  ``MODEL_STEPS`` updater step per iteration. ``--updater native`` follows the objective's own
  schedule: DM (and krr) a fresh network every iteration; GM Dataset Condensation's, from its
  ``schedule`` table by IPC (IPC 1: outer 1 / inner 1; IPC 10: 10 / 50; IPC 50: 50 / 10): a
  fresh network every ``outer`` updates of S, trained on S for ``inner`` steps after each
  (``--model-steps`` sets the inner steps there).
* **batch_size**: real images per class, at most the smallest class; **update_batch**: of
  those, the first ``update_batch`` per class train the network (None: all of them, the
  paper's Algorithm 1 as zodd has always read it: one batch serves the update and the matching;
  with IDM's queue or FRePo's pool, ``QUEUE_BATCH`` shared out by the classes).
* **one_pass** off: the update makes its own forward pass over the (unaugmented) real batch and
  the matching sees the updated network, the paper's order. ``--one-pass`` (dm, robust or ce)
  trains on the embeddings dm's own pass computed (the step's augmented images) and steps the
  network after S's step, so the matching sees the network from before the update: one pass
  over the real batch instead of two (BENCHMARKS.md, "One pass over the real batch").
* **compile** off: ``--compile`` runs dm's pass over the real batch and the updater's forward
  and backward through torch.compile (zodd.compiled); it changes values by float rounding and
  costs a compile at the start of each run, so it is asked for, not assumed.
* **the queue** (``--queue-size N``, ``--recipe idm``): IDM's published defaults, their sources in
  zodd.networks' docstring (``QUEUE_EVERY``, ``QUEUE_MODEL_STEPS``, ``QUEUE_BATCH``, ``CE_WEIGHT``).
* **labels** ``onehot``: every method but the kernel family's keeps one class an image.
  ``learn`` (zodd.labels): the labels start as FRePo's centred one-hot; ``label_lr`` None: the
  images' lr (FRePo moves both with one LAMB, whose trust ratio scales each tensor's step by
  its own norm). Directions then cover the packed images and labels, so ``lowres`` is 1.
* **the pool** (``--pool-size N``, ``--recipe frepo``): FRePo's model pool (zodd.networks.
  ModelPool): ``POOL_STEPS`` (FRePo's ``max_online_updates`` 100) steps before a network is
  reset, each trained by Adam at ``POOL_LR`` (FRePo's 3e-4), with ``--updater ce`` or
  ``robust`` on ``update_batch`` real images a class a step, ``QUEUE_BATCH`` shared out as for
  IDM's queue (a real-data step of the same size as IDM's); ``--recipe frepo`` sets FRePo's
  ``num_nn_state`` 10 networks, its Conv (``--network frepo``), its regression
  (``--objective frepo``: ridge 1e-6, the label margin term), LAMB at 0.01, not FRePo's 3e-4
  (zodd.recipes says why; constant: FRePo decays it by a cosine to a tenth over its fixed
  step count, which a run stopped by ``--max-seconds`` does not know), learned labels, no
  augmentation in the regression, and ``batch_size`` 102 (FRePo regresses 1,024 real images a step, drawn from
  the whole set: about 102 of each of 10 classes).
* **checkpoint_seconds**: a checkpoint about once a minute when ``checkpoint_every`` is None.
* **log_every**: 1 on the CPU; on a GPU ``LOG_EVERY_GPU``: reading a loss back to the host waits
  for the GPU, which costs a small step its overlap of Python and GPU work, so rows are fetched
  (and S checked for non-finite values) in groups; checkpoints, budgets and the end flush too.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from objectives import OBJECTIVES
from zodd.config import DistillConfig
from zodd.data import DATASETS, ImageData, canonical
from zodd.estimators import ESTIMATORS
from zodd.labels import LABELS
from zodd.models import check_model, default_shape
from zodd.networks import POOL_LR
from zodd.robust import CLUSTER_SPACES, CVAR_TAILS, CVAR_TERMS, UPDATERS, updates_on_real
from zodd.steppers import NEVERGRAD_PREFIX, STEPPERS, check_optimizer
from zodd.augment import AUGMENTS
from zodd.recipes import RECIPES, with_recipe
from zodd.representation import REPRESENTATIONS
from zodd.synthetic import INITS
from zodd.types import ZoddError, resolve_device

REINIT_EVERY = 10  # a fresh network every 10 iterations (diverse training stages)
MODEL_STEPS = 1  # the updater's network steps per iteration
AUTO_LOWRES_ABOVE = 4096  # values per estimated block above which directions are drawn at 1/2
CHECKPOINT_SECONDS = 60.0  # between checkpoints when checkpoint_every is None
PAPER_LR = 0.1  # eq. 18: s = 0.1 / sqrt(1 + E)
FALLBACK_LR = 0.1  # a torch optimiser on an objective that names no step size
WARM_ITERATIONS = 20  # --init dm: a few seconds on digits, about a minute on Fashion-MNIST (CPU)
WARM_MOST = 200  # --init dm when the run chooses on fold 0: at most; the scorings end it
WARM_PATIENCE = 3  # fold-0 scorings in a row with no better set end the warm start
WARM_SHARE = 0.5  # of --max-seconds at most, so the queries get the rest
SELECT_EVERY = 5  # steps between scorings of S on fold 0 (one evaluation each)
ES_LR = 0.01  # Adam's step on standardised pixels for the es estimator (OpenES's usual value)
LOG_EVERY_GPU = 25  # on a GPU, log values are fetched every N iterations, not after each
QUEUE_EVERY = ((1, 5), (2, 30))  # (ipc from, interval): IDM's --net_generate_interval
QUEUE_MODEL_STEPS = 10  # IDM's --model_train_steps
QUEUE_BATCH = 256  # IDM's --trained_bs: real images per training step, shared by the classes
CE_WEIGHT = ((1, 0.5), (11, 0.1))  # (ipc from, weight): IDM's --ce_weight
POOL_STEPS = 100  # FRePo's max_online_updates
POOL_SIZE = 10  # FRePo's num_nn_state (--recipe frepo)
MAX_VALUES = 2**30  # directions x set size above which a zero-order estimate will not fit

FIELDS = {f.name for f in dataclasses.fields(DistillConfig)}
Config = DistillConfig | dict | str | os.PathLike | None  # what ``settings`` starts from
CHECKED = "_checked"  # the mark ``check`` leaves on the config it passed

# every DistillConfig field whose value is a name, and the registry it comes from ("auto" and
# "ng:NAME" are handled beside); the command line builds its choices and help from these
REGISTRIES = {"dataset": DATASETS, "init": INITS, "representation": REPRESENTATIONS,
              "augment": AUGMENTS, "objective": OBJECTIVES,
              "estimator": ESTIMATORS, "optimizer": STEPPERS, "updater": UPDATERS,
              "cvar_tail": CVAR_TAILS, "cvar_terms": CVAR_TERMS, "cluster_space": CLUSTER_SPACES,
              "recipe": RECIPES, "labels": LABELS}


@dataclass(frozen=True, kw_only=True)
class Plan(DistillConfig):
    """A config with every setting it left open ("auto" or None) filled in, and what the data
    decides beside them: the one settings object a run reads (the loop, zodd.build and the
    driver read ``plan.alpha`` as ``plan.lr``, whichever the user gave). Filled in place:
    estimator (an ESTIMATORS name, or the ``ng:NAME`` spec when a nevergrad optimiser asks for
    its own candidates), optimizer, lr, label_lr (learned labels), sigma, directions, lowres,
    device, width, depth, init, warm_iterations, reinit_every (0: none, the queue's or the
    pool's networks), model_steps, batch_size (at most the smallest class), update_batch,
    queue_every, pool_steps, pool_lr and ce_weight (0.0: none)."""

    flip: bool  # the data set's: a mirrored image keeps its class
    uses_network: bool  # the objective (or the surrogate) is bound to a network
    train_on_synthetic: int  # network steps on S after each update (native GM), 0: none
    checkpoint_seconds: float
    log_every: int  # log rows fetched from the device in groups of this many


def settings(config: Config = None, **given) -> DistillConfig:
    """The checked config of user input, and the one way to make one (the command line, the
    Python API's ``zodd.distill(config, **given)``, a config file, a sweep's trial, a
    benchmark's flags): ``config`` (a DistillConfig, a dict, or a JSON file such as a run's
    config.json), then ``recipe``'s settings under the ones given, then the ones given (``None``
    values are left out); checked once (``check``): a checked config given on its own comes
    back as it is."""
    given = {k: v for k, v in given.items() if v is not None}
    if is_checked(config) and not given:
        return config
    unknown = sorted(set(given) - FIELDS)
    if unknown:
        raise ZoddError(f"unknown setting: {unknown[0]!r} (zodd distill --help lists them)")
    values = _config_values(config)
    recipe = given.pop("recipe", None)
    if recipe == "list":
        raise ZoddError("recipe 'list' is the command line's listing: see zodd.recipes.RECIPES")
    if recipe is not None and isinstance(config, (str, os.PathLike)):
        raise ZoddError("--recipe and --config: the config file holds every setting already; "
                        "give one of them")
    values = with_recipe(values, recipe)
    values.update(given)
    return check(DistillConfig(**{k: v for k, v in values.items() if k in FIELDS}))


def _config_values(config: Config) -> dict:
    if config is None:
        return {}
    if isinstance(config, DistillConfig):
        return config.to_dict()
    if isinstance(config, dict):
        return DistillConfig.from_dict(config).to_dict()
    try:
        raw = json.loads(Path(config).read_text())
    except FileNotFoundError:
        raise ZoddError(f"config file {config} not found") from None
    except (OSError, ValueError) as exc:
        raise ZoddError(f"config file {config} is not readable JSON ({exc})") from None
    return DistillConfig.from_dict(raw).to_dict()


def check(cfg: DistillConfig) -> DistillConfig:
    """The config's values (``cfg.validate``), its names against the registries, and the rules
    that tie names together; returns ``cfg``, with a data set given as a path made absolute
    (zodd.data.canonical)."""
    cfg.validate()
    for name, registry in REGISTRIES.items():
        value = getattr(cfg, name)
        if name == "optimizer":
            check_optimizer(value)
        elif value is None:  # an optional name (recipe) not given
            continue
        elif name == "dataset":
            cfg = dataclasses.replace(cfg, dataset=canonical(value))
        elif name == "init" and value not in registry and value != "auto":
            cfg = dataclasses.replace(cfg, init=_start_path(value))
        else:
            registry.check(value, name.replace("_", "-"),
                           extra=("auto",) if name in ("estimator", "init") else ())
    objective = OBJECTIVES[cfg.objective]
    estimator = _estimator(cfg.estimator, objective.differentiable, cfg.surrogate)
    if cfg.workers > 0 and estimator == "autograd":
        raise _bad(cfg, "workers", "parallel workers serve zero-order estimators only")
    if cfg.optimizer.startswith(NEVERGRAD_PREFIX) and estimator == "autograd":
        raise _bad(cfg, "optimizer", "a nevergrad optimiser is zero-order: give --estimator "
                   "gaussian (its --directions are the candidates asked per step)")
    if cfg.surrogate is not None:
        smooth = [n for n, o in OBJECTIVES.items() if o.differentiable]
        if cfg.surrogate not in smooth:
            raise _bad(cfg, "surrogate", "choose a differentiable objective: " + ", ".join(smooth))
        if estimator != "gaussian" or cfg.optimizer.startswith(NEVERGRAD_PREFIX):
            raise _bad(cfg, "surrogate", "a surrogate guides --estimator gaussian only")
    if cfg.queue_size is None:
        for name in ("queue_every", "ce_weight"):
            if getattr(cfg, name):
                raise _bad(cfg, name, "it belongs to IDM's queue of networks: give --queue-size "
                           "(or --recipe idm)")
    else:
        _check_queue(cfg, objective)
    if cfg.one_pass:
        _check_one_pass(cfg, objective)
    if cfg.labels == "learn":
        _check_labels(cfg, objective)
    elif cfg.label_lr is not None:
        raise _bad(cfg, "label_lr", "it is the step size of learned labels: give --labels learn")
    if cfg.select_every and not chooses_on_fold(cfg):
        raise _bad(cfg, "select_every", "it chooses the kept set on fold 0 of a score's data: "
                   "prototype and trained hold one out, a --command holds one out when it "
                   "takes {fold}, a matching objective has none")
    if cfg.pool_size is not None:
        _check_pool(cfg, objective)
    else:
        for name in ("pool_steps", "pool_lr"):
            if getattr(cfg, name) is not None:
                raise _bad(cfg, name, "it belongs to the model pool: give --pool-size (or "
                           "--recipe frepo)")
    check_model(cfg.network)
    object.__setattr__(cfg, CHECKED, True)  # not a field: a changed copy is unchecked
    return cfg


def chooses_on_fold(cfg: DistillConfig) -> bool:
    """Whether the run's objective scores data with a part its search never sees (fold 0),
    on which the set to keep can be chosen (``--select-every``)."""
    objective = OBJECTIVES[cfg.objective]
    return (not objective.differentiable
            and bool(getattr(objective, "chooses_on_fold", lambda c: False)(cfg.command)))


def is_checked(cfg) -> bool:
    """Whether ``cfg`` is a DistillConfig that ``check`` passed (``dataclasses.replace`` makes
    a new, unchecked one)."""
    return type(cfg) is DistillConfig and getattr(cfg, CHECKED, False)


def _check_labels(cfg: DistillConfig, objective) -> None:
    """``--labels learn``: an objective that reads labels; directions over the packed pair."""
    readers = [n for n, o in OBJECTIVES.items() if o.reads_labels]
    if not objective.reads_labels:
        raise _bad(cfg, "labels", f"objective {cfg.objective} reads no labels (it matches "
                   "per-class statistics); choose " + ", ".join(readers))
    if cfg.surrogate is not None:
        raise _bad(cfg, "surrogate", "a surrogate's guide covers images only, not learned labels")
    if (cfg.lowres or 1) > 1:
        raise _bad(cfg, "lowres", "directions cover images and labels packed together; drop "
                   "--lowres with --labels learn")


def _check_pool(cfg: DistillConfig, objective) -> None:
    """FRePo's pool: its networks are drawn by the objective, and it replaces the queue."""
    if not objective.uses_network:
        raise _bad(cfg, "pool_size", f"objective {cfg.objective} uses no network")
    for name, why in (("queue_size", "choose one: IDM's queue or FRePo's pool"),
                      ("one_pass", "the pool trains its networks after S's step"),
                      ("reinit_every", "the pool resets its networks after --pool-steps")):
        if getattr(cfg, name):
            raise _bad(cfg, name, why)


def _check_queue(cfg: DistillConfig, objective) -> None:
    """IDM's queue: its networks are trained by the updater and drawn by the objective."""
    if not updates_on_real(cfg.updater):
        raise _bad(cfg, "queue_size", "the queue's networks are trained by the updater: choose "
                   "--updater ce (IDM) or robust (IDM + RDD)")
    if not objective.uses_network:
        raise _bad(cfg, "queue_size", f"objective {cfg.objective} uses no network")
    for name, why in (("one_pass", "the queue trains its networks on batches of their own"),
                      ("reinit_every", "the queue replaces networks every --queue-every "
                       "iterations")):
        if getattr(cfg, name):
            raise _bad(cfg, name, why)
    if cfg.ce_weight and cfg.objective != "dm":
        raise _bad(cfg, "ce_weight", "the class-aware term is part of dm's value; choose "
                   "--objective dm")


def _check_one_pass(cfg: DistillConfig, objective) -> None:
    """``--one-pass`` needs an updater with a pass to share, an objective that embeds the real
    batch (``shares_real_pass``) and one update a step (the shared forward serves one)."""
    sharing = [n for n, o in OBJECTIVES.items() if o.shares_real_pass]
    if not updates_on_real(cfg.updater):
        raise _bad(cfg, "one_pass", f"--updater {cfg.updater} makes no pass over the real "
                   "batch to share; choose --updater robust or ce")
    if cfg.objective not in sharing:
        raise _bad(cfg, "one_pass", f"objective {cfg.objective} has no forward pass to share; "
                   "choose " + ", ".join(sharing))
    if (cfg.model_steps or MODEL_STEPS) != 1:
        raise _bad(cfg, "one_pass", "the shared forward serves one network update a step; "
                   "drop --model-steps")


def _start_path(value: str) -> str:
    """``--init PATH``: a distilled set to start from, made absolute so the run's config reads
    anywhere (zodd.sets reads it when a run starts, not when it resumes: the set may be gone)."""
    path = Path(value).expanduser()
    if not value.strip() or not ("/" in value or os.sep in value or path.exists()):
        raise ZoddError(f"invalid init: {value!r} (choose one of {', '.join(INITS)}, or the path "
                        "of a distilled set: a zodd run directory or any file zodd evaluate reads)")
    return str(path.resolve())


def resolve(cfg: DistillConfig, data: ImageData) -> Plan:
    """The plan of a run of ``cfg`` on ``data`` (see the module docstring for each default).
    A config ``zodd.settings`` made was checked there; any other (made by hand, or a Plan
    changed with ``dataclasses.replace``, as a warm start's DM settings are) is checked here.
    Then what the data's sizes refuse."""
    if not is_checked(cfg):
        cfg = check(DistillConfig(**{name: getattr(cfg, name) for name in FIELDS}))
    settings = cfg.to_dict()
    objective = OBJECTIVES[cfg.objective]
    estimator = _estimator(cfg.estimator, objective.differentiable, cfg.surrogate)
    optimizer, default_lr = cfg.optimizer, objective.default_lr
    if optimizer == "auto" and estimator == "es":
        optimizer, default_lr = "adam", ES_LR  # rank-shaped estimates have no loss scale
    elif optimizer == "auto":
        optimizer = objective.default_optimizer if objective.default_lr is not None else "paper"
    lr = cfg.lr or (PAPER_LR if optimizer == "paper" else default_lr or FALLBACK_LR)
    width, depth = default_shape(data.image_size)
    item = REPRESENTATIONS[cfg.representation].values_per_image(cfg, data)
    if cfg.labels == "learn":
        item += data.num_classes  # the packed row: an image's values and its label vector
    set_size = cfg.ipc * data.num_classes * item  # values of the stored set
    lowres = _lowres(cfg, estimator, set_size // (data.num_classes if cfg.blockwise else 1),
                     data.image_size)
    reinit_every, model_steps, on_synthetic = _schedule(cfg, objective)
    select_every = ((SELECT_EVERY if chooses_on_fold(cfg) else 0) if cfg.select_every is None
                    else cfg.select_every)
    queue = cfg.queue_size is not None
    n_update = cfg.update_batch or (max(1, round(QUEUE_BATCH / data.num_classes))
                                    if queue or cfg.pool_size else None)
    device = str(resolve_device(cfg.device if cfg.workers == 0 else "cpu"))
    n_real = min(cfg.batch_size, min(int((data.train_y == c).sum())
                                     for c in range(data.num_classes)))
    settings.update(
        estimator=optimizer if optimizer.startswith(NEVERGRAD_PREFIX) else estimator,
        optimizer=optimizer, lr=lr,
        label_lr=(cfg.label_lr or lr) if cfg.labels == "learn" else None,
        sigma=cfg.sigma or objective.default_sigma,
        directions=cfg.directions or objective.default_directions, lowres=lowres,
        device=device, width=cfg.width or width, depth=cfg.depth or depth,
        init=("real" if objective.differentiable else "dm") if cfg.init == "auto" else cfg.init,
        warm_iterations=cfg.warm_iterations or (WARM_MOST if select_every else WARM_ITERATIONS),
        select_every=select_every,
        reinit_every=reinit_every, model_steps=model_steps,
        batch_size=n_real, update_batch=min(n_update or n_real, n_real),
        queue_every=(cfg.queue_every or _from_ipc(QUEUE_EVERY, cfg.ipc)) if queue else None,
        pool_steps=(cfg.pool_steps or POOL_STEPS) if cfg.pool_size else None,
        pool_lr=(cfg.pool_lr or POOL_LR) if cfg.pool_size else None,
        ce_weight=(cfg.ce_weight if cfg.ce_weight is not None else
                   _from_ipc(CE_WEIGHT, cfg.ipc) if queue and cfg.objective == "dm" else 0.0))
    plan = Plan(**settings, flip=data.flip, train_on_synthetic=on_synthetic,
                uses_network=objective.uses_network or cfg.surrogate is not None,
                checkpoint_seconds=CHECKPOINT_SECONDS,
                log_every=1 if device == "cpu" else LOG_EVERY_GPU)
    _check_sizes(plan, data, set_size)
    return plan


def _schedule(cfg: DistillConfig, objective) -> tuple[int, int, int]:
    """(reinit_every, model_steps, train_on_synthetic): the network's schedule (module
    docstring); a value the config gives wins."""
    reinit, on_synthetic = REINIT_EVERY, 0
    if cfg.queue_size is not None:  # the queue's own schedule (zodd.networks)
        return 0, cfg.model_steps or QUEUE_MODEL_STEPS, 0
    if cfg.pool_size is not None:  # the pool's own schedule: one step a drawn network
        return 0, 1, 0
    if not updates_on_real(cfg.updater) and objective.native == "reinit":
        reinit = 1
    elif not updates_on_real(cfg.updater) and objective.native == "train":
        reinit, inner = _by_ipc(objective.schedule, cfg.ipc)
        on_synthetic = cfg.model_steps or inner  # native: no real-data steps; these are on S
    return cfg.reinit_every or reinit, cfg.model_steps or MODEL_STEPS, on_synthetic


def _from_ipc(table: tuple[tuple[int, float], ...], ipc: int):
    """The value of the last ``(ipc from, value)`` row of ``table`` that ``ipc`` reaches."""
    return [value for start, value in table if ipc >= start][-1]


def _by_ipc(table: tuple[tuple[int, int, int], ...], ipc: int) -> tuple[int, int]:
    """The (outer, inner) row of ``table`` ((ipc, outer, inner) rows) for the largest listed
    IPC at most ``ipc`` (the first row below it)."""
    row = max((r for r in table if r[0] <= ipc), default=table[0], key=lambda r: r[0])
    return row[1], row[2]


def _estimator(name: str, differentiable: bool, surrogate: str | None = None) -> str:
    if name == "auto":
        return "autograd" if differentiable else "gaussian" if surrogate else "es"
    if name == "autograd" and not differentiable:
        raise ZoddError("the objective is not differentiable: --estimator autograd cannot run; "
                        "choose a zero-order estimator such as --estimator gaussian")
    return name


def _lowres(cfg: DistillConfig, estimator: str, block: int, image_size: int) -> int:
    if cfg.labels == "learn":  # directions cover the packed images and labels
        return 1
    if not REPRESENTATIONS[cfg.representation].has_pixels:  # codes have none to coarsen
        if (cfg.lowres or 1) > 1:
            raise ZoddError(f"invalid lowres: --representation {cfg.representation} stores "
                            "codes, not images; drop --lowres")
        return 1
    if cfg.lowres is not None:
        return cfg.lowres
    if estimator == "autograd" or cfg.surrogate or cfg.optimizer.startswith(NEVERGRAD_PREFIX):
        return 1
    return 2 if block > AUTO_LOWRES_ABOVE and image_size % 2 == 0 else 1


def _check_sizes(plan: Plan, data: ImageData, set_size: int) -> None:
    """What only the data's sizes can refuse."""
    if data.image_size >> plan.depth < 1:
        raise ZoddError(f"invalid depth: {plan.depth} (pools {data.name}'s {data.image_size} px "
                        "images below 1 px)")
    if plan.estimator != "autograd" and plan.directions * set_size > MAX_VALUES:
        raise ZoddError(f"invalid directions: {plan.directions} (directions x set size = "
                        f"{plan.directions * set_size:,} values, over 2^30)")
    if plan.representation != "pixel" and data.image_size % plan.factor:
        raise ZoddError(f"invalid factor: {plan.factor} (must divide {data.name}'s image size "
                        f"{data.image_size})")
    if data.image_size % plan.lowres:
        raise ZoddError(f"invalid lowres: {plan.lowres} (must divide {data.name}'s image size "
                        f"{data.image_size})")
    if plan.estimator == "coordinate":
        coords = set_size // plan.lowres ** 2 // (data.num_classes if plan.blockwise else 1)
        if plan.directions > coords:
            raise ZoddError(f"invalid directions: {plan.directions} (the coordinate estimator "
                            f"has {coords} coordinates to choose from here)")


def _bad(cfg: DistillConfig, name: str, why: str) -> ZoddError:
    return ZoddError(f"invalid {name.replace('_', '-')}: {getattr(cfg, name)!r} ({why})")
