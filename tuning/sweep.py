"""A sweep: Ray Tune runs the trials; this module sets it up, resumes it, and turns its results
into files other tools read.

Files in the sweep's directory:

* ``tune.json``      the sweep's settings (what ``--resume`` continues);
* ``sweep/``         Ray Tune's experiment directory (trial logs, checkpoints, its own state);
* ``results.csv``    one row per trial: its settings, status, last validation scores;
* ``best.json``      the best trial's settings as a config for ``zodd distill --config``;
* ``score-vs-alpha.png``  score, accuracy and Cluster-min against alpha (when alpha varies);
* ``best/``          the best config distilled on the whole training data and evaluated once on
                     the test set (``metrics.json``); skipped with ``final=False``.

Nothing here prints: progress, the summary and the final table go to ``say(text, err)``, a
callback the command line turns into output (None: silent).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuning import space as spaces
from tuning.results import COLUMNS, fmt, best_row, plot_alpha, summary, write_csv
from tuning.trial import METRIC_NAMES, Scoring, coerce, run_trial, trial_config, validation_split
from zodd.config import DistillConfig
from zodd.evaluation import PROTOCOLS
from zodd.plan import settings
from zodd.rundir import save_json
from zodd.steppers import nevergrad_optimizer
from zodd.types import Registry, ZoddError

Say = Callable[..., None]  # say(text, err=False): one message for the user; err: a progress note

SETTINGS, EXPERIMENT = "tune.json", "sweep"
SEARCHES = Registry("search", [  # and ng:NAME, any nevergrad optimiser
    ("random", None, "Ray Tune's random sampling"),
    ("grid", None, "every combination of listed values once"),
    ("nevergrad", "ng:NGOpt", "nevergrad's NGOpt through Ray Tune"),
])
SCHEDULERS = Registry("scheduler", [
    ("asha", "asha", "stop poor trials early at the reports"),
    ("fifo", "fifo", "run every trial to the end"),
])



class Interrupted(Exception):
    """The sweep stopped before every trial ended; ``--resume`` continues it."""


@dataclass(frozen=True)
class SweepOptions:
    """What a sweep is asked: ``zodd tune``'s options, ``zodd.tune``'s keywords (the same
    names), each default written here once. ``params``: the searched settings as ``NAME=SPEC``
    (a,b,c; lo:hi; lo:hi:log), beside alpha, clusters and batch size unless ``default_space``
    is off; ``num_samples`` None: 8 trials for random and nevergrad search (a grid runs each
    combination once)."""

    params: tuple[str, ...] = ()
    default_space: bool = True
    search: str = "random"
    num_samples: int | None = None
    scheduler: str = "asha"
    reports: int = Scoring.reports  # validation scores along each trial (early stopping's rungs)
    metric: str = Scoring.metric
    mix: float = Scoring.mix
    validation: float = 0.2  # of each class's training images, held out for the scores
    eval_seeds: int = Scoring.seeds
    eval_epochs: int = Scoring.epochs
    cpus: int | None = None  # local cluster size; None: every core
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    dashboard: bool = False
    final: bool = True
    final_seeds: int = 3
    trial_retries: int = 2  # a failed trial started again from its last checkpoint, this often

    def sweep(self, base: DistillConfig, pinned: set[str] = frozenset()) -> "Sweep":
        """The checked sweep of these options from ``base`` (``pinned``: the settings the
        user fixed, which may not be searched as well)."""
        space = spaces.build(list(self.params), self.search, base.ipc,
                             defaults=self.default_space)
        both = [p.name for p in space if p.name in pinned]
        if both:
            raise ZoddError(f"{both[0]} is both --set and searched; choose one")
        if self.search == "grid" and self.num_samples is not None:
            raise ZoddError("grid search runs every combination once; --num-samples is for "
                            "random and nevergrad search")
        scoring = Scoring(metric=self.metric.replace("-", "_"), mix=self.mix,
                          seeds=self.eval_seeds, epochs=self.eval_epochs, reports=self.reports)
        return Sweep(base=base.to_dict(), params=space, search=self.search,
                     num_samples=self.num_samples or Sweep.num_samples, scheduler=self.scheduler,
                     scoring=scoring, validation=self.validation, cpus=self.cpus,
                     cpus_per_trial=self.cpus_per_trial, gpus_per_trial=self.gpus_per_trial,
                     address=self.address, dashboard=self.dashboard, final=self.final,
                     final_seeds=self.final_seeds, trial_retries=self.trial_retries).validate()


@dataclass
class Sweep:
    """A sweep as it runs and is saved (sweep.json); made from :class:`SweepOptions`."""

    base: dict  # the DistillConfig every trial starts from
    params: list = field(default_factory=list)  # tuning.space.Param
    search: str = SweepOptions.search
    num_samples: int = 8
    scheduler: str = SweepOptions.scheduler
    scoring: Scoring = field(default_factory=Scoring)
    validation: float = SweepOptions.validation
    cpus: int | None = None  # local cluster size; None: every core
    cpus_per_trial: float = SweepOptions.cpus_per_trial
    gpus_per_trial: float = SweepOptions.gpus_per_trial
    address: str | None = None
    dashboard: bool = False
    final: bool = True
    final_seeds: int = SweepOptions.final_seeds
    final_epochs: int = 300
    trial_retries: int = SweepOptions.trial_retries

    def validate(self) -> "Sweep":
        settings(self.base)
        PROTOCOLS.check(self.scoring.protocol, "protocol")
        if not (self.search in SEARCHES or self.search.startswith("ng:")):
            raise ZoddError(f"invalid search {self.search!r}: choose random, grid, nevergrad or "
                            "ng:OPTIMISER")
        if self.search.startswith("ng:"):
            _nevergrad_optimizer(self.search)
        if self.scheduler not in SCHEDULERS:
            raise ZoddError(f"invalid scheduler {self.scheduler!r}: choose asha or fifo")
        if self.scoring.metric not in METRIC_NAMES:
            raise ZoddError(f"invalid metric {self.scoring.metric!r}: choose acc, cluster-min "
                            "or mix")
        if not 0 <= self.scoring.mix <= 1:
            raise ZoddError(f"invalid mix weight {self.scoring.mix} (must be in [0, 1])")
        for name, value in (("num-samples", self.num_samples), ("reports", self.scoring.reports),
                            ("eval-seeds", self.scoring.seeds),
                            ("eval-epochs", self.scoring.epochs),
                            ("final-seeds", self.final_seeds),
                            ("final-epochs", self.final_epochs)):
            if value < 1:
                raise ZoddError(f"invalid {name}: {value} (must be at least 1)")
        if self.trial_retries < 0:
            raise ZoddError(f"invalid trial-retries: {self.trial_retries} (must be at least 0)")
        if not 0 < self.validation < 1:
            raise ZoddError(f"invalid validation: {self.validation} (a fraction in (0, 1))")
        if self.cpus is not None and self.cpus < 1:
            raise ZoddError(f"invalid cpus: {self.cpus} (must be at least 1)")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ZoddError("invalid resources per trial: cpus above 0, gpus at least 0")
        if self.cpus is not None and self.cpus_per_trial > self.cpus:
            raise ZoddError(f"cpus-per-trial {self.cpus_per_trial} is more than the "
                            f"{self.cpus} CPUs of the cluster: no trial could start")
        return self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["params"] = spaces.to_dict(self.params)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "Sweep":
        try:
            raw = dict(raw)
            raw["params"] = spaces.from_dict(raw["params"])
            raw["scoring"] = Scoring(**raw["scoring"])
            return cls(**raw).validate()
        except (KeyError, TypeError) as exc:
            raise ZoddError(f"{SETTINGS} is not a zodd sweep ({type(exc).__name__}: {exc})") \
                from None


def _nevergrad_optimizer(search: str):
    return nevergrad_optimizer(SEARCHES.get(search) or search)


def load_settings(out: Path) -> Sweep:
    path = out / SETTINGS
    if not path.exists():
        raise ZoddError(f"no sweep in {out} ({SETTINGS} missing)")
    try:
        return Sweep.from_dict(json.loads(path.read_text()))
    except ValueError as exc:
        raise ZoddError(f"{path} is not readable JSON ({exc})") from None


# --- running ------------------------------------------------------------------------------------
def _trainable(sweep: Sweep, data):
    from ray import tune

    fn = tune.with_parameters(run_trial, base=sweep.base,
                              data=validation_split(data, sweep.validation),
                              scoring=sweep.scoring, threads=max(1, int(sweep.cpus_per_trial)))
    return tune.with_resources(fn, {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})


def _searcher(sweep: Sweep):
    if sweep.search in ("random", "grid"):
        return None  # Ray Tune's basic variant generator: grid_search / sampled distributions
    from ray.tune.search.nevergrad import NevergradSearch

    return NevergradSearch(optimizer=_nevergrad_optimizer(sweep.search), metric="score",
                           mode="max")


def _scheduler(sweep: Sweep):
    if sweep.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=sweep.scoring.reports,
                         grace_period=1, reduction_factor=2)


def _progress_callback(say: Say):
    from ray import tune

    class Progress(tune.Callback):
        """One note per report and per failure."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            values = ", ".join(f"{k} {fmt(trial.config.get(k))}" for k in sorted(trial.config))
            say(f"trial {trial.trial_id} ({values}): iteration {result.get('iterations')}, "
                f"score {result['score']:.2f} (acc {result['acc']:.2f}, cluster-min "
                f"{result['cluster_min']:.2f})", err=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            say(f"trial {trial.trial_id} failed: {_error_line(trial)}", err=True)

    return Progress()


def _silent(text: str, err: bool = False) -> None:
    pass


def _error_line(trial) -> str:
    text = str(getattr(trial, "error_msg", None) or "")
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return line.strip()[:300]
    return "see its error.txt"


def run(sweep: Sweep, out: Path, resume: bool = False, say: Say | None = None,
        load_data: Callable | None = None) -> dict:
    """Run (or continue) the sweep in ``out``; returns the summary (also in the files)."""
    say = say or _silent
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no banner on stdout
    # a snapshot per report is what lets --resume continue a trial; no need to warn about it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from zodd import data as datasets
    from zodd.parallel import start_ray

    sweep.validate()
    base = DistillConfig.from_dict(sweep.base)
    data = (load_data or datasets.load)(base.dataset, base.data_dir, **base.data_options())
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        save_json(sweep.to_dict(), out / SETTINGS)
    # Ray Tune's own notes (how to restore, metrics of unstarted trials) say what ours say
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    ray, owns = start_ray(sweep.cpus, sweep.address, sweep.dashboard, purpose="zodd tune",
                          extra="tune")
    try:
        try:
            from ray import tune
        except ImportError:
            raise ZoddError("zodd tune needs Ray Tune: pip install 'zodd[tune]'") from None
        trainable = _trainable(sweep, data)
        path = str((out / EXPERIMENT).resolve())
        if resume:
            if not tune.Tuner.can_restore(path):
                raise ZoddError(f"nothing to resume in {out}: no Ray Tune state in {path}")
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True,
                                       resume_errored=False)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=spaces.to_ray(sweep.params, sweep.search),
                tune_config=tune.TuneConfig(
                    metric="score", mode="max", search_alg=_searcher(sweep),
                    scheduler=_scheduler(sweep),
                    num_samples=1 if sweep.search == "grid" else sweep.num_samples),
                run_config=tune.RunConfig(
                    name=EXPERIMENT, storage_path=str(out.resolve()), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=sweep.trial_retries),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    callbacks=[_progress_callback(say)]))
        grid = tuner.fit()
    finally:
        if owns and ray.is_initialized():
            ray.shutdown()
    rows = result_rows(grid, sweep)
    unfinished = [r for r in rows if r["status"] in ("pending", "running", "paused")]
    write_csv(rows, sweep, out / "results.csv")
    if unfinished or len(rows) < _expected(sweep):
        raise Interrupted(f"{len(rows) - len(unfinished)} of {_expected(sweep)} trials ended")
    return finish(sweep, rows, out, data, say)


def _expected(sweep: Sweep) -> int:
    return spaces.grid_size(sweep.params) if sweep.search == "grid" else sweep.num_samples


def result_rows(grid, sweep: Sweep) -> list[dict]:
    """One row per trial from Ray Tune's ResultGrid."""
    names = [p.name for p in sweep.params]
    target = DistillConfig.from_dict(sweep.base).iterations
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = coerce(result.config or {})
        row = {"trial": metrics.get("trial_id") or Path(str(result.path)).name}
        row.update({n: config.get(n) for n in names})
        if result.error is not None:
            row["status"] = "failed"
            row["error"] = _last_line(str(result.error))
            metrics = {**metrics, "attempts": sweep.trial_retries + 1}  # Tune gave up after
        elif not metrics or "score" not in metrics:
            row["status"] = "pending"
        elif metrics.get("iterations", 0) >= target:
            row["status"] = "done"
        elif metrics.get("done"):
            row["status"] = "stopped early"
        else:
            row["status"] = "running"
        for key in COLUMNS[2:-1]:
            row[key] = metrics.get(key)
        row["seconds"] = metrics.get("time_total_s")
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("score") is None, -(r.get("score") or 0.0)))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else text[:300]


def best_config(sweep: Sweep, row: dict) -> DistillConfig:
    return trial_config(sweep.base, {p.name: row[p.name] for p in sweep.params})


def finish(sweep: Sweep, rows: list[dict], out: Path, data, say: Say = _silent) -> dict:
    """The summary, best.json, the plot and, once, the test-set evaluation of the best config."""
    best = best_row(rows)
    cfg = best_config(sweep, best)
    save_json(cfg.to_dict(), out / "best.json")
    plotted = plot_alpha(rows, out / "score-vs-alpha.png", sweep.scoring.metric)
    report = {"trials": len(rows), "failed": sum(r["status"] == "failed" for r in rows),
              "stopped_early": sum(r["status"] == "stopped early" for r in rows),
              "best": {k: best.get(k) for k in ("trial", "score", "acc", "cluster_min")},
              "best_settings": {p.name: best[p.name] for p in sweep.params},
              "metric": sweep.scoring.metric, "plot": plotted}
    say(summary(rows, sweep))
    say(f"best trial {best['trial']}: " + ", ".join(
        f"{k} {fmt(v)}" for k, v in report["best_settings"].items())
        + f" -> validation {sweep.scoring.metric} {best['score']:.2f}")
    say(f"wrote {out / 'results.csv'}, {out / 'best.json'}"
        + (f", {out / 'score-vs-alpha.png'}" if plotted else ""))
    if sweep.final:
        report["test"] = final_test(cfg, sweep, out / "best", data, say)
    save_json(report, out / "summary.json")
    return report


def final_test(cfg: DistillConfig, sweep: Sweep, out: Path, data, say: Say = _silent) -> dict:
    """The best config distilled on the whole training set (what ``zodd distill --config
    best.json`` does) and evaluated on the test set: the sweep's one look at it."""
    from zodd.driver import distill
    from zodd.evaluation import evaluate, protocol_config
    from zodd.report import format_table

    say(f"distilling the best config on the whole training set into {out} ...", err=True)
    result = distill(cfg, data, out)
    ecfg = protocol_config(sweep.scoring.protocol, data.name, seeds=sweep.final_seeds,
                           epochs=sweep.final_epochs, width=cfg.width, depth=cfg.depth)
    report = evaluate(result.synthetic, data, ecfg)
    save_json({**report, "set": "synthetic", "run": str(out)}, out / "metrics.json")
    say(format_table({f"best on test ({cfg.dataset} ipc{cfg.ipc})": report}))
    return {m: report[m] for m in ("acc", "cluster_min", "noise", "blur", "invert")}
