"""Every setting of a distillation run, in one frozen dataclass.

CLI flags map one-to-one onto the fields below; each run writes the config as JSON beside its
output, and ``DistillConfig.from_dict`` reads it back, validating field by field so that a bad
value names its field. This module checks values that need no vocabulary (ranges, types, which
flags go together); names (data sets, objectives, estimators, ...) are checked against their
registries by ``zodd.plan.check``, and ``None``/"auto" settings are filled in by
``zodd.plan.resolve``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from zodd.types import ZoddError, check_device_name

# what a run's config.json holds beside the settings: zodd's version and git SHA, the resolved
# plan (zodd.plan), and the flat *_resolved keys that files written before the plan carry
METADATA_KEYS = ("version", "git_sha", "resolved", "estimator_resolved", "sigma_resolved",
                 "directions_resolved", "device_resolved", "lowres_resolved")


@dataclass(frozen=True)
class DistillConfig:
    # what to distil
    dataset: str = "digits"
    data_dir: str | None = None  # None: $ZODD_DATA, else the user cache dir
    image_size: int | None = None  # resize every image to this side; None: the data's own size
    test_fraction: float = 0.2  # a folder tree without train/ and test/: share held out per class
    ipc: int = 10  # synthetic images per class
    init: str = "auto"  # zodd.synthetic.INITS or a set's path; auto: zodd.plan
    warm_iterations: int | None = None  # --init dm: its DM steps; None: zodd.plan
    representation: str = "pixel"  # how S is stored: pixel, or multi (F x F images per image)
    factor: int = 2  # --representation multi: each stored image holds factor^2 images
    latent: int = 32  # --representation latent: numbers a code (the prior's width)
    labels: str = "onehot"  # zodd.labels.LABELS: onehot (fixed) or learn (a vector an image)
    label_lr: float | None = None  # --labels learn: the labels' step size; None: --lr's
    recipe: str | None = None  # the named preset the settings started from (zodd.recipes)
    seed: int = 0
    device: str = "auto"  # auto: the first CUDA GPU when torch sees one, else the CPU

    # how S is updated
    objective: str = "dm"  # key of objectives.OBJECTIVES
    estimator: str = "auto"  # key of zodd.estimators.ESTIMATORS; auto: zodd.plan
    optimizer: str = "auto"  # paper: s = lr / sqrt(1 + E) (eq. 18); sgd/adam: torch; ng:NAME: nevergrad
    lr: float | None = None  # None: the objective's default (zodd.plan)
    sigma: float | None = None  # smoothing radius (standardised pixels); None: the objective's
    directions: int | None = None  # M per zero-order estimate; None: 128 for dm/gm, 32 for scores
    lowres: int | None = None  # directions at 1/lowres resolution; None: auto (zodd.plan)
    blockwise: bool = True  # one finite difference per class from one call (separable objectives)
    surrogate: str | None = None  # a differentiable objective whose gradient guides gaussian
    augment: str = "affine"  # Siamese augmentation in the objective: affine, dsa or none
    command: str | None = None  # --objective command: the program and its arguments ({input})
    command_timeout: float = 60.0  # seconds per call of the program
    # a score's data in folds (zodd.binding): the search's steps score on folds 1..folds-1 (one
    # drawn with each step's seed; a command's {fold}), the set kept is chosen on fold 0
    folds: int = 5
    select_every: int | None = None  # steps between scorings of S on fold 0; 0: the last set
    # is kept; None: zodd.plan

    # evaluating black boxes: parallelism and faults
    workers: int = 0  # Ray actors evaluating candidates; 0: in-process, Ray not imported
    ray_address: str | None = None  # join this Ray cluster instead of starting a local one
    retries: int = 2  # further tries of a failed evaluation
    worker_retries: int = 3  # times a chunk is scored again when its Ray worker dies (restarted)
    max_failures: int = 10  # failed evaluations (after retries) tolerated before the run ends

    # the robust model updater (Algorithm 1)
    updater: str = "robust"  # robust: CE + mean CVaR + max CVaR; ce: CE only; native: no real-data update
    alpha: float = 0.8  # CVaR tail fraction, in (0, 1]
    cvar_tail: str = "upper"  # upper: mean of the largest alpha-fraction; lower: of the smallest
    cvar_terms: str = "mean+max"  # which cluster CVaR aggregates join CE: mean+max, mean or max
    clusters: int = 10  # cluster centres per class when ipc > 10
    cluster_space: str = "pixel"  # pixel: Euclidean on images; feature: network embedding
    batch_size: int = 256  # real samples per class drawn each iteration
    update_batch: int | None = None  # of those, per class, the network update trains on; None: all
    one_pass: bool = False  # the update shares the objective's forward pass over the real batch
    compile: bool = False  # the network's passes over the real batch through torch.compile
    model_lr: float = 0.01
    model_steps: int | None = None  # network updates per iteration; None: zodd.plan
    reinit_every: int | None = None  # a fresh network every N iterations; None: zodd.plan
    # IDM's queue of networks (zodd.networks): None: no queue (one network, reinit_every)
    queue_size: int | None = None  # networks kept (IDM's net_num); the oldest leaves
    queue_every: int | None = None  # a new network every N iterations; None: zodd.plan
    queue_train: int = 2  # networks the updater trains each iteration (IDM's fetch_net_num)
    ce_weight: float | None = None  # dm: the synthetic images' CE under the drawn queue network,
    # times its training accuracy in percent (IDM's syn_ce); None: zodd.plan (0 without a queue)
    # FRePo's model pool (zodd.networks.ModelPool): None: no pool
    pool_size: int | None = None  # networks kept (FRePo's num_nn_state)
    pool_steps: int | None = None  # a network's training steps before it is reset; None: zodd.plan
    pool_lr: float | None = None  # the pool networks' Adam step; None: zodd.networks.POOL_LR
    network: str = "convnet"  # the step's network: a zodd.models name or ConvNet variant
    width: int | None = None  # None: 128 for 28-32 px, 64 for 8 px
    depth: int | None = None  # None: 3 for 28-32 px, 2 for 8 px

    # budgets: the first one reached stops the run
    iterations: int = 300
    max_seconds: float | None = None
    max_queries: int | None = None
    checkpoint_every: int | None = None  # iterations between checkpoints; None: about once a minute

    def validate(self) -> "DistillConfig":
        def bad(name: str, why: str) -> ZoddError:
            return ZoddError(f"invalid {name.replace('_', '-')}: {getattr(self, name)!r} ({why})")

        for name in ("ipc", "clusters", "batch_size", "iterations", "factor", "queue_train"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        for name in ("width", "depth", "max_queries", "checkpoint_every", "directions", "lowres",
                     "update_batch", "model_steps", "reinit_every", "warm_iterations",
                     "queue_size", "queue_every", "pool_size", "pool_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise bad(name, "must be at least 1")
        if not 2 <= self.latent <= 4096:
            raise bad("latent", "must lie between 2 and 4096")
        if self.image_size is not None and not 4 <= self.image_size <= 512:
            raise bad("image_size", "must lie between 4 and 512")
        if not 0.0 < self.test_fraction < 1.0:
            raise bad("test_fraction", "must lie in (0, 1)")
        for name, most in (("width", 4096), ("depth", 10), ("directions", 1_000_000),
                           ("model_steps", 10_000), ("factor", 8)):
            if (getattr(self, name) or 0) > most:
                raise bad(name, f"must be at most {most}")
        if self.ce_weight is not None and not (math.isfinite(self.ce_weight)
                                               and self.ce_weight >= 0):
            raise bad("ce_weight", "must be a finite number, 0 or above")
        if self.folds < 2:
            raise bad("folds", "must be at least 2: fold 0 chooses the set, the others search")
        for name in ("workers", "retries", "worker_retries", "max_failures", "select_every"):
            if (getattr(self, name) or 0) < 0:
                raise bad(name, "must be at least 0")
        if (self.objective == "command") != bool(self.command and self.command.strip()):
            raise ZoddError("--objective command and --command go together: give both or neither")
        check_device_name(self.device)
        if self.workers > 0 and self.device not in ("auto", "cpu"):
            raise bad("workers", "Ray workers evaluate on the CPU: use --device cpu (or auto)")
        if self.surrogate is not None and self.lowres not in (None, 1):
            raise bad("surrogate", "a surrogate's guide is full-resolution: use --lowres 1")
        if not (0.0 < self.alpha <= 1.0):
            raise bad("alpha", "must be in (0, 1]")
        for name in ("sigma", "model_lr", "lr", "label_lr", "pool_lr", "max_seconds",
                     "command_timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise bad(name, "must be a finite number above 0")
        if self.seed < 0:
            raise bad("seed", "must be at least 0")
        return self

    def data_options(self) -> dict[str, Any]:
        """The keyword arguments ``zodd.data.load`` takes beside the name and the data dir."""
        return {"image_size": self.image_size, "test_fraction": self.test_fraction}

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "DistillConfig":
        """Build a config from JSON-like data, naming the first bad field."""
        if not isinstance(raw, dict):
            raise ZoddError("config must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in METADATA_KEYS:
                continue
            if key not in known:
                raise ZoddError(f"unknown config field: {key!r}")
            if key == "augment" and isinstance(value, bool):  # files from before AUGMENTS
                value = "affine" if value else "none"
            values[key] = _coerce(key, known[key].type, value)
        return cls(**values).validate()


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    text = str(annotation)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise ZoddError(f"invalid config field {name!r}: null is not allowed")
    if text.startswith("bool"):
        if isinstance(value, bool):
            return value
    elif text.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif text.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif text.startswith("str"):
        if isinstance(value, str):
            return value
    raise ZoddError(f"invalid config field {name!r}: {value!r} is not of type {text}")
