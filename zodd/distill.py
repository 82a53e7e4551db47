"""The distillation loop: update theta -> bind the objective -> estimate -> step S.

One seed makes one root generator; the network initialisations, real subsamples, augmentation
seeds and estimator directions are all drawn from it, so a run is reproducible on one machine.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from objectives import OBJECTIVES
from zodd import estimators
from zodd.config import DistillConfig, run_metadata
from zodd.data import ImageData
from zodd.models import build_model
from zodd.robust import RobustUpdater
from zodd.synthetic import SyntheticSet, initialise, save, save_json
from zodd.types import StepContext, ZoddError

FLIP_OK = {"fashion-mnist", "cifar10"}  # data sets where a mirrored image keeps its class
DEFAULT_LR = {("autograd", "dm"): 1.0, ("autograd", "gm"): 0.1}
PAPER_LR = 0.1  # eq. 18: s = 0.1 / sqrt(1 + E)


@dataclass
class Result:
    synthetic: SyntheticSet
    rows: list[dict] = field(default_factory=list)
    stopped_by: str = "iterations"
    estimator: str = ""

    @property
    def queries(self) -> int:
        return self.rows[-1]["queries"] if self.rows else 0


def _optimizer(cfg: DistillConfig, estimator: str, x: torch.Tensor):
    kind = cfg.optimizer
    if kind == "auto":
        kind = "sgd" if estimator == "autograd" else "paper"
    lr = cfg.lr or (PAPER_LR if kind == "paper" else DEFAULT_LR.get((estimator, cfg.objective), 0.1))
    if kind == "adam":
        opt = torch.optim.Adam([x], lr=lr)
    else:
        opt = torch.optim.SGD([x], lr=lr, momentum=0.0 if kind == "paper" else 0.5)
    decay = (lambda e: (1 + e) ** -0.5) if kind == "paper" else (lambda e: 1.0)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, decay)


def distill(cfg: DistillConfig, data: ImageData, out: Path | None = None,
            on_step: Callable[[dict], None] | None = None) -> Result:
    """Run one distillation. With ``out`` the run's files are written there (config.json at the
    start, one log.jsonl row per iteration, synthetic.pt and grid.png at the end or when
    interrupted). Stops at the first budget reached: iterations, max_seconds or max_queries."""
    cfg.validate()
    gen = torch.Generator().manual_seed(cfg.seed)
    syn = initialise(data, cfg.ipc, cfg.init, gen)
    objective = OBJECTIVES[cfg.objective](flip=cfg.dataset in FLIP_OK)
    est_name = estimators.choose(cfg.estimator, objective.differentiable)
    estimator = estimators.ESTIMATORS[est_name](cfg)
    updater = RobustUpdater(mode=cfg.updater, alpha=cfg.alpha, tail=cfg.cvar_tail,
                            clusters=cfg.clusters, cluster_space=cfg.cluster_space,
                            lr=cfg.model_lr, steps=cfg.model_steps)
    x = syn.images.requires_grad_(True)
    opt, schedule = _optimizer(cfg, est_name, x)
    per_class = data.class_indices()
    n_real = min(cfg.batch_size, min(len(i) for i in per_class))
    result = Result(syn, estimator=est_name)

    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_json({**cfg.to_dict(), "estimator_resolved": est_name, **run_metadata()},
                  out / "config.json")
        log = open(out / "log.jsonl", "w")
    start, queries, net, net_opt = time.perf_counter(), 0, None, None
    try:
        for step in range(cfg.iterations):
            native = cfg.updater == "native"
            if net is None or step % (1 if native and cfg.objective == "dm" else cfg.reinit_every) == 0:
                net_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
                net = build_model(data.channels, data.num_classes, data.image_size,
                                  cfg.width, cfg.depth, seed=net_seed)
                net_opt = updater.optimizer(net)
            picks = torch.stack([idx[torch.randperm(len(idx), generator=gen)[:n_real]]
                                 for idx in per_class])
            real = data.train_x[picks]  # [classes, n, ch, h, w]
            terms = {}
            if not native:
                net.requires_grad_(True)
                terms = updater.step(net, net_opt, real, syn.by_class(x.detach()), gen)
            net.requires_grad_(False)
            ctx = StepContext(net, real, syn.labels, data.num_classes,
                              seed=int(torch.randint(2**31 - 1, (1,), generator=gen)),
                              augment=cfg.augment)
            estimate = estimator.estimate(objective.bind(ctx), x, gen)
            if not torch.isfinite(estimate.grad).all():
                raise ZoddError(f"the objective gave a non-finite gradient at step {step}; "
                                "lower --lr or --sigma")
            x.grad = estimate.grad
            opt.step()
            schedule.step()
            if native and cfg.objective == "gm":  # Dataset Condensation's inner loop on S
                _train_on_synthetic(net, net_opt, syn, cfg.model_steps)
            queries += estimate.queries
            row = {"step": step + 1, "queries": queries, "loss": estimate.loss,
                   "seconds": round(time.perf_counter() - start, 4), **terms}
            result.rows.append(row)
            if log:
                log.write(json.dumps(row) + "\n")
                log.flush()
            if on_step:
                on_step(row)
            if cfg.max_seconds is not None and row["seconds"] >= cfg.max_seconds:
                result.stopped_by = "max_seconds"
                break
            if cfg.max_queries is not None and queries >= cfg.max_queries:
                result.stopped_by = "max_queries"
                break
    except KeyboardInterrupt:
        result.stopped_by = "interrupted"
        raise
    finally:
        x.requires_grad_(False)
        if log:
            log.close()
        if out is not None:
            save(syn, out, data)
    return result


def _train_on_synthetic(net, opt, syn: SyntheticSet, steps: int) -> None:
    net.requires_grad_(True)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(syn.images.detach()), syn.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.requires_grad_(False)
