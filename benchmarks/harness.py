"""The benchmarks' one harness: how a benchmark runs zodd (``sh``, the CLI as a user types it),
budgets, a resumable grid of named settings with its locks (``ensure_run``), the yardsticks that
compare sets on the objective itself (``HeldOutDM``), statistics over seeds (``mean_std``,
``paired``) and the table and plot writers. The metric list is zodd.evaluation's.

The evidence benchmarks (paper.py, ablation.py) run a grid of named settings, each distilled
with several seeds and evaluated with several networks, resumable.

A run is the directory ``OUT/FOLDER/NAME-sSEED`` (FOLDER: the budget's, by default its data set) holding the CLI's files (config.json, synthetic.pt,
log.jsonl, metrics.json); a run whose metrics.json exists is not run again, so a script resumes
where it stopped and two scripts pointed at the same OUT with the same budget share their runs.
The random-real baseline of an IPC and seed is ``metrics_random.json`` inside a run of that IPC
and seed (``zodd evaluate --baseline random``).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from fnmatch import fnmatch
from pathlib import Path


import torch

from zodd.config import DistillConfig
from zodd.evaluation import METRICS, metrics_file
from zodd.types import StepContext

CONFIG_FIELDS = {f.name for f in fields(DistillConfig)}


@dataclass(frozen=True)
class Budget:
    dataset: str
    ipcs: tuple[int, ...]
    objectives: tuple[str, ...]
    seeds: int  # distillation seeds
    eval_seeds: int  # networks trained per distilled set
    iterations: int
    batch_size: int
    alphas: tuple[float, ...] = ()
    epochs: int = 300  # evaluation epochs
    folder: str = ""  # where its runs live under OUT; "": the data set's name
    trained_ipcs: tuple[int, ...] = ()  # IPCs where ablation.py also trains theta for longer
    max_seconds: float | None = None  # distillation time per set (then iterations is a cap)
    augments: tuple[str, ...] = ("affine",)  # evaluation augmentations, each its metrics file

    def __post_init__(self):
        if not self.folder:
            object.__setattr__(self, "folder", self.dataset)

    def describe(self) -> str:
        length = (f"{self.max_seconds:g} s of distillation per set" if self.max_seconds
                  else f"{self.iterations} iterations")
        return (f"{self.dataset}, {length}, {self.batch_size} real images per "
                f"class, {self.seeds} distillation seeds x {self.eval_seeds} evaluation networks "
                f"({self.epochs} epochs; evaluation augmentation {', '.join(self.augments)})")


# The budgets of the evidence benchmarks. paper.py and ablation.py use the same ones, so runs of a
# setting they share (native, robust-upper at alpha 0.8) are made once when both write to one OUT.
BUDGETS = {
    # digits: minutes; a smoke test of the benchmark more than evidence
    "quick": Budget("digits", ipcs=(1, 10), objectives=("dm",), seeds=2, eval_seeds=2,
                    iterations=100, batch_size=256, alphas=(0.2, 1.0), folder="digits-quick",
                    trained_ipcs=(1, 10)),
    # digits with the evidence's seeds: minutes
    "digits": Budget("digits", ipcs=(1, 10), objectives=("dm", "gm"), seeds=3, eval_seeds=3,
                     iterations=100, batch_size=256, alphas=(0.2, 0.5, 1.0)),
    # Fashion-MNIST on this 2-core machine: an IPC-10 run is ~2 min of distillation and ~5 min of
    # evaluation (3 networks x 300 epochs), an IPC-1 run ~1 min in all
    "cpu": Budget("fashion-mnist", ipcs=(1, 10), objectives=("dm", "gm"), seeds=3, eval_seeds=3,
                  iterations=100, batch_size=32, alphas=(0.2, 0.5, 1.0), trained_ipcs=(1,)),
    # the paper's iteration count, for a GPU machine
    "full": Budget("fashion-mnist", ipcs=(1, 10), objectives=("dm", "gm"), seeds=3, eval_seeds=3,
                   iterations=1000, batch_size=256, alphas=(0.2, 0.5, 1.0),
                   folder="fashion-mnist-full", trained_ipcs=(1, 10)),
    # recipes.py: every recipe at one equal time budget, evaluated with and without DSA
    "recipes-quick": Budget("digits", ipcs=(1, 10), objectives=(), seeds=3, eval_seeds=3,
                            iterations=100_000, batch_size=256, max_seconds=20,
                            folder="digits-recipes", augments=("affine", "dsa")),
    # Fashion-MNIST, one lent GPU shared by parallel runs (recipes.py --jobs): one seed
    "recipes-gpu": Budget("fashion-mnist", ipcs=(1, 10), objectives=(), seeds=1, eval_seeds=3,
                          iterations=100_000, batch_size=256, max_seconds=60,
                          folder="fashion-mnist-recipes-gpu", augments=("affine", "dsa")),
    # the CPU budget: 15 minutes of distillation per set on the 2-core machine (hours)
    "recipes-cpu": Budget("fashion-mnist", ipcs=(1, 10), objectives=(), seeds=3, eval_seeds=3,
                          iterations=100_000, batch_size=256, max_seconds=900,
                          folder="fashion-mnist-recipes", augments=("affine", "dsa")),
}


def sh(cmd: list) -> None:
    """Run a CLI command; ``zodd`` is this interpreter's (``python -m zodd.cli``), so the zodd
    on PYTHONPATH serves the whole grid (a frozen copy, while the working tree changes)."""
    cmd = [str(c) for c in cmd]
    if cmd[0] == "zodd":
        cmd = [sys.executable, "-m", "zodd.cli", *cmd[1:]]
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def selected(name: str, only: list[str] | None) -> bool:
    return not only or any(fnmatch(name, pattern) for pattern in only)


def ensure_run(out: Path, name: str, flags: list, seed: int, budget: Budget) -> dict | None:
    """Distil and evaluate one setting and seed unless already done; its metrics (means), or
    None when another process holds the run (two scripts may share OUT)."""
    run = run_dir(out, budget, name, seed)
    if not all((run / metrics_file(a)).exists() for a in budget.augments):
        with claimed(run) as mine:
            if not mine:
                print(f"  {run} is being made by another process: skipped", flush=True)
                return None
            if not (run / metrics_file(budget.augments[0])).exists():
                timed = ["--max-seconds", budget.max_seconds] if budget.max_seconds else []
                sh(["zodd", "distill", "--dataset", budget.dataset, *flags, "--seed", seed,
                    "--iterations", budget.iterations, "--batch-size", budget.batch_size, *timed,
                    "--out", run, "--overwrite", "--quiet"])
            for augment in budget.augments:
                if not (run / metrics_file(augment)).exists():
                    started = time.perf_counter()
                    sh(["zodd", "evaluate", run, "--seeds", budget.eval_seeds, "--epochs",
                        budget.epochs, "--augment", augment, "--no-vs-random", "--quiet"])
                    print(f"  evaluated ({augment}) in {time.perf_counter() - started:.0f} s",
                          flush=True)
    return read_metrics(run / metrics_file(budget.augments[0])) | {
        "distill_s": distill_seconds(run)}


@contextmanager
def claimed(run: Path):
    """Yields whether this process got the run: a lock file beside it, made exclusively."""
    lock = run.parent / f"{run.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        yield False
        return
    os.close(fd)
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)


def ensure_random(out: Path, name: str, seed: int, budget: Budget,
                  augment: str = "affine") -> dict | None:
    """The random-real baseline drawn with the run ``name``'s data set, IPC and seed."""
    run = run_dir(out, budget, name, seed)
    target = run / metrics_file(augment, "random")
    ipc = name.split("-", 1)[0]  # the random set depends on data set, IPC and seed only
    twins = sorted(run.parent.glob(f"{ipc}-*-s{seed}/{target.name}"))
    if not target.exists() and twins:
        shutil.copy(twins[0], target)  # another objective's run drew the same set
    if not target.exists():
        with claimed(run.parent / f"{run.name}-random") as mine:
            if not mine:
                return None
            sh(["zodd", "evaluate", run, "--baseline", "random", "--seeds", budget.eval_seeds,
                "--epochs", budget.epochs, "--augment", augment, "--quiet"])
    return read_metrics(target)


def read_metrics(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    return {m: metrics[m]["mean"] for m in METRICS}


def run_dir(out: Path, budget: Budget, name: str, seed: int) -> Path:
    return out / budget.folder / f"{name}-s{seed}"


def present(out: Path, budget: Budget, names: list[str],
            file: str = "metrics.json") -> dict[str, list[dict]]:
    """Metrics of the evaluated runs, per setting: seeds 0, 1, ... up to the first missing one
    (paired differences match seeds)."""
    results: dict[str, list[dict]] = {}
    for name in names:
        for seed in range(budget.seeds):
            path = run_dir(out, budget, name, seed) / file
            if not path.exists():
                break
            results.setdefault(name, []).append(read_metrics(path))
    return results


def distill_seconds(run: Path) -> float | None:
    lines = (run / "log.jsonl").read_text().splitlines() if (run / "log.jsonl").exists() else []
    return json.loads(lines[-1]).get("seconds") if lines else None


def per_iteration(run: Path, skip: int = 0) -> float | None:
    """Median seconds of one iteration of a run (the differences of its log's cumulative
    seconds), leaving out the first ``skip`` differences (steps that warm the caches)."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in rows]
    steps = [b - a for a, b in zip(seconds, seconds[1:])][skip:]
    return statistics.median(steps) if steps else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (ddof 0) over distillation seeds."""
    return statistics.mean(values), statistics.pstdev(values)


def summarise(results: dict[str, list[dict]]) -> dict[str, dict[str, tuple[float, float]]]:
    return {name: {m: mean_std([r[m] for r in rows]) for m in METRICS}
            for name, rows in results.items() if rows}


def paired(results: dict[str, list[dict]], a: str, b: str) -> dict | None:
    """a - b per distillation seed (same seed, same initialisation), mean and std over seeds."""
    if not results.get(a) or not results.get(b):
        return None
    n = min(len(results[a]), len(results[b]))
    return {m: mean_std([results[a][i][m] - results[b][i][m] for i in range(n)])
            for m in METRICS} | {"seeds": n}


def beyond_spread(diff: tuple[float, float]) -> bool:
    """The paired difference's mean exceeds its std over seeds (a weak, stated test)."""
    mean, std = diff
    return abs(mean) > std


def markdown_table(table: dict, label: str = "setting") -> str:
    lines = [f"| {label} | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m][0]:.2f} ± {row[m][1]:.2f}"
                                                 for m in METRICS) + " |")
    return "\n".join(lines)


def markdown_pairs(diffs: dict[str, dict]) -> str:
    lines = ["| comparison (paired over distillation seeds) | seeds | Δ acc | Δ Cluster-min | "
             "verdict on Cluster-min |", "|---|---|---|---|---|"]
    for label, d in diffs.items():
        verdict = ("beyond the spread" if beyond_spread(d["cluster_min"]) else "within the spread")
        lines.append(f"| {label} | {d['seeds']} | {d['acc'][0]:+.2f} ± {d['acc'][1]:.2f} | "
                     f"{d['cluster_min'][0]:+.2f} ± {d['cluster_min'][1]:.2f} | {verdict} |")
    return "\n".join(lines)


def stats(values: list[float]) -> dict:
    """``{"mean", "std"}`` (population std, 0 for one value) for the JSON tables."""
    mean, std = mean_std(values) if len(values) > 1 else (float(values[0]), 0.0)
    return {"mean": mean, "std": std}


class HeldOutDM:
    """DM measured on ``nets`` fixed networks and real batches that no run sees: a yardstick for
    comparing synthetic sets (estimators, budgets) on the objective itself.

    The networks are ConvNets of the data's default shape seeded ``net_seed + k``; each draws
    ``per_class`` real images per class with a generator seeded ``seed``. Deterministic: the
    same arguments give the same yardstick.
    """

    def __init__(self, data, nets: int = 5, per_class: int = 64, seed: int = 123,
                 net_seed: int = 1000):
        from objectives.distribution import BoundDM
        from zodd.data import draw_per_class
        from zodd.models import build_model

        gen = torch.Generator().manual_seed(seed)
        self.boxes = []
        for k in range(nets):
            net = build_model(data.channels, data.num_classes, data.image_size,
                              seed=net_seed + k).requires_grad_(False)
            real = data.train_x[draw_per_class(data.class_indices(), per_class, gen)]
            self.boxes.append(BoundDM(StepContext(net, real, None, data.num_classes, seed=k),
                                      flip=False))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> float:
        """The mean DM of one synthetic set ``[classes * ipc, C, H, W]`` over the networks."""
        return sum(float(box(images.detach().cpu()[None])) for box in self.boxes) / len(self.boxes)


def config_from_flags(flags: str, base: DistillConfig) -> DistillConfig:
    """``base`` with ``zodd distill`` flags applied (a string, read by the command line's own
    parser, so a benchmark speaks the flags a user types)."""
    from zodd.cli import distill as command
    from zodd.plan import settings
    from zodd.recipes import with_recipe

    ctx = command.make_context("distill", shlex.split(flags))
    given = {k: v for k, v in ctx.params.items() if v is not None and k in CONFIG_FIELDS}
    return settings({**base.to_dict(), **with_recipe(given, given.pop("recipe", None))})


def labelled(spec: str) -> tuple[str, str]:
    """``LABEL=FLAGS`` -> (label, flags); a bare label is an estimator name."""
    label, _, flags = spec.partition("=")
    return label, flags or f"--estimator {label}"
