"""One trial of a sweep: distil with the trial's settings on the training data less a validation
split, and score the set on that split, several times along the way for early stopping.

The test set is never seen here: ``validation_split`` carves the validation images out of the
training data with a fixed seed and hands them to ``evaluate`` in the test set's place.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from zodd.config import DistillConfig
from zodd.data import ImageData
from zodd.evaluation import DEFAULT_PROTOCOL
from zodd.types import Registry, ZoddError

SPLIT_SEED = 0
METRIC_NAMES = Registry("metric", [
    ("acc", "acc", "validation accuracy"),
    ("cluster_min", "cluster_min", "validation Cluster-min"),
    ("mix", "mix", "(1 - mix) x accuracy + mix x Cluster-min"),
])
PROGRESS = "trial.json"  # inside a trial's checkpoint: how many reports it has made
ATTEMPTS = "attempts.txt"  # in a trial's directory: how many times it has started


@dataclass(frozen=True)
class Scoring:
    """How a trial is scored: the metric, and the evaluation that measures it."""

    metric: str = "acc"  # acc, cluster_min, or mix: (1 - mix) * acc + mix * cluster_min
    mix: float = 0.5
    seeds: int = 1
    epochs: int = 300  # the protocol's epochs for a trial's score (a cheaper custom protocol)
    protocol: str = DEFAULT_PROTOCOL  # the zodd.evaluation.PROTOCOLS preset of the scores
    reports: int = 4  # scores reported along each trial (the rungs of early stopping)

    def score(self, report: dict) -> float:
        acc, worst = report["acc"]["mean"], report["cluster_min"]["mean"]
        if self.metric == "acc":
            return acc
        if self.metric == "cluster_min":
            return worst
        return (1 - self.mix) * acc + self.mix * worst


def split_indices(data: ImageData, fraction: float, seed: int = SPLIT_SEED):
    """(kept, held-out) training indices: ``fraction`` of every class held out (at least one
    image), stratified, with a fixed seed."""
    if not 0 < fraction < 1:
        raise ZoddError(f"invalid validation fraction: {fraction} (must be in (0, 1))")
    gen = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for idx in data.class_indices():
        order = idx[torch.randperm(len(idx), generator=gen)]
        n = max(1, round(fraction * len(idx)))
        if n >= len(order):
            raise ZoddError(f"validation fraction {fraction} leaves no training images of a class")
        held.append(order[:n])
        keep.append(order[n:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def validation_split(data: ImageData, fraction: float, seed: int = SPLIT_SEED) -> ImageData:
    """The training data split in two: ``train_x`` keeps the rest, ``test_x`` holds the
    validation images (``split_indices``); the real test set is dropped."""
    keep, held = split_indices(data, fraction, seed)
    return replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                   test_x=data.train_x[held], test_y=data.train_y[held])


def coerce(values: dict) -> dict:
    """Plain Python numbers: searchers hand out numpy scalars, which configs refuse."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def trial_config(base: dict, values: dict) -> DistillConfig:
    """The trial's config: the sweep's base settings with the trial's values over them."""
    from zodd.plan import settings

    return settings({**base, **coerce(values)})


def report_points(iterations: int, reports: int) -> list[int]:
    """The iterations after which a trial reports: ``reports`` evenly spread, the last at the end."""
    reports = max(1, min(reports, iterations))
    return sorted({math.ceil(iterations * (r + 1) / reports) for r in range(reports)})


def run_trial(values: dict, *, base: dict, data: ImageData, scoring: Scoring,
              threads: int = 1) -> None:
    """Ray Tune's function trainable, on ``data`` from ``validation_split`` (it distils on the
    train part and scores on the held-out part). Each report carries the run directory as a
    checkpoint, so a sweep resumed after an interruption, or a trial started again after a
    failure (``Sweep.trial_retries``), continues where it stopped; each report says which start
    of the trial made it (``attempts``)."""
    from ray import tune

    from zodd.driver import distill
    from zodd.evaluation import TestSets, evaluate, protocol_config
    from zodd.rundir import save_json

    torch.set_num_threads(threads)
    attempt = _count_attempt(Path(tune.get_context().get_trial_dir()))
    cfg = trial_config(base, values)
    work = Path(tempfile.mkdtemp(prefix="zodd-trial-"))
    done = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as saved:
            shutil.copytree(saved, work, dirs_exist_ok=True)
        done = _read_progress(work)
    ecfg = protocol_config(scoring.protocol, data.name, seeds=scoring.seeds,
                           epochs=scoring.epochs, width=cfg.width, depth=cfg.depth)
    tests = TestSets.build(data)
    try:
        for n, upto in enumerate(report_points(cfg.iterations, scoring.reports)):
            if n < done:
                continue
            result = distill(replace(cfg, iterations=upto), data, work, resume=n > 0)
            report = evaluate(result.synthetic, data, ecfg, tests=tests)
            save_json({"reports": n + 1}, work / PROGRESS)
            metrics = {m: report[m]["mean"] for m in ("acc", "cluster_min", "noise", "blur",
                                                      "invert")}
            last = result.rows[-1] if result.rows else {}
            tune.report({"score": scoring.score(report), **metrics, "iterations": upto,
                         "attempts": attempt,
                         "queries": last.get("queries", 0),
                         "distill_seconds": last.get("seconds", 0.0)},
                        checkpoint=tune.Checkpoint.from_directory(str(work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _count_attempt(trial_dir: Path) -> int:
    """This start of the trial, counted in its directory (1, then 2 after a failure that
    ``--trial-retries`` starts again from the trial's last checkpoint)."""
    path = trial_dir / ATTEMPTS
    try:
        attempt = int(path.read_text()) + 1
    except (OSError, ValueError):
        attempt = 1
    trial_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(str(attempt))
    return attempt


def _read_progress(work: Path) -> int:
    import json

    try:
        return int(json.loads((work / PROGRESS).read_text())["reports"])
    except (OSError, ValueError, KeyError):
        return 0
