"""zodd as a library: what each command does, callable from Python.

    import zodd

    run = zodd.distill(dataset="digits", ipc=1, iterations=50)   # a Run: images, labels, log
    report = zodd.evaluate(run, seeds=1, epochs=50)               # a Report: metrics.json's record
    print(report.table())

The command line (zodd.cli) is a thin client of these functions. Each takes its command's
settings by the option's name (``zodd distill --batch-size 64`` is
``zodd.distill(batch_size=64)``), checks them the same way and raises
:class:`zodd.types.ZoddError` with the same one-line message. Progress goes to a
:class:`zodd.types.Progress` (nothing by default); the library never prints.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Sequence

from zodd import data as datasets
from zodd import export as export_sets
from zodd import distributed, rundir, sets
from zodd.config import DistillConfig
from zodd.plan import Config, check, settings
from zodd.representation import REPRESENTATIONS
from zodd.report import Evaluation, Report, difference, differences, evaluate
from zodd.synthetic import Run, SyntheticSet
from zodd.types import Progress, ZoddError

__all__ = ["Evaluation", "Report", "Run", "compare", "default_out", "distill", "evaluate",
           "export", "load", "settings", "train_prior", "tune"]



# --- distill -------------------------------------------------------------------------------
def default_out(cfg: DistillConfig) -> Path:
    """Where ``zodd distill`` writes a run given no ``--out``."""
    return Path("runs") / rundir.run_name(datasets.short_name(cfg.dataset), cfg)


def distill(config: Config = None, *, out: str | os.PathLike | None = None,
            overwrite: bool = False, resume: str | os.PathLike | None = None,
            progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
            **given) -> Run:
    """Distil a set. Settings as for :func:`settings`; ``out``: the run directory (None: keep
    nothing on disk, no checkpoints); ``resume``: a run directory to continue from its last
    checkpoint (then only budgets may be given). ``should_stop()`` turning true ends the run
    after the current step, with a checkpoint; ``Run.stopped_by`` says why it ended."""
    from zodd.driver import distill as run_loop

    progress = progress or Progress()
    if resume is not None:
        if config is not None or out is not None:
            raise ZoddError("--resume takes its settings and output directory from the run; "
                            "drop --config and --out")
        out = Path(resume)
        if not rundir.has_checkpoint(out):
            raise ZoddError(f"no checkpoint in {resume} to resume from")
        config = DistillConfig.from_dict(rundir.load_config(out))
    cfg = settings(config, **given)
    if out is not None and resume is None and distributed.writes_here():
        rundir.check_out(Path(out), overwrite)  # (rank 0's to check and write; zodd.driver)
    data = datasets.for_config(cfg, progress=progress)
    prior = (train_prior(data, cfg.latent, cfg.data_dir, progress=progress)[0]
             if REPRESENTATIONS[cfg.representation].needs_prior else None)

    def on_step(row: dict, images) -> None:
        progress.update("distilling", row["step"], cfg.iterations, row)

    return run_loop(cfg, data, None if out is None else Path(out), on_step,
                    resume=resume is not None, should_stop=should_stop or (lambda: False),
                    note=progress.note, prior=prior)


def train_prior(data: datasets.ImageData, latent: int, data_dir: str | None = None,
                steps: int | None = None, seed: int = 0, progress: Progress | None = None):
    """The data set's learned prior for ``representation="latent"`` (zodd.prior), trained now
    unless cached; returns (the network, its cache path)."""
    from zodd import prior as priors

    progress = progress or Progress()
    root = datasets.data_root(data_dir)
    path = priors.cache_path(data, latent, seed, steps, root)
    if not path.is_file():
        progress.note(f"no cached prior for {data.name} (latent {latent}): training it once, "
                      f"kept in {path}")
    net = priors.load_or_train(data, latent, seed, steps, root, lambda step, total, loss:
                               progress.update("training the prior", step, total,
                                               {"loss": loss}))
    return net, path


# --- load ------------------------------------------------------------------------------------
def load(path: str | os.PathLike, dataset: str | None = None, pixels: str = "auto",
         experiment: int = 0, data_dir: str | None = None) -> Run | SyntheticSet:
    """A set zodd reads: a run directory gives a :class:`Run` (its set, config, plan and log);
    any other file (zodd's synthetic.pt, a Dataset Condensation / DSA / DM result, an MTT-style
    pair) a SyntheticSet, standardised like ``dataset`` (which those files do not name)."""
    located = sets.locate(path)
    if located.format == "run":
        raw = rundir.load_config(located.path)
        return Run(sets.zodd_set(located), rundir.read_log(located.path / rundir.LOG_FILE, 2**62),
                   None, raw.get("resolved", {}), DistillConfig.from_dict(raw), located.path)
    if located.format == "zodd":
        return sets.zodd_set(located)
    if dataset is None:
        raise ZoddError(f"{path} is a {located.format} file, which does not name its data set: "
                        "pass --dataset")
    data = datasets.for_config(check(DistillConfig(dataset=dataset)), data_dir)
    return sets.read(located, data, pixels, experiment).set


def export(path: str | os.PathLike, format: str, out: str | os.PathLike,
           overwrite: bool = False) -> list[Path]:
    """A zodd run directory's set written in another tool's layout (``zodd.export.EXPORTS``: ``dc``
    a file, ``mtt`` a folder), normalised with the constants that tool's code uses for the
    run's data set; the paths written."""
    export_sets.EXPORTS.check(format, "format")  # before the data set is read
    located = sets.locate(path)
    if located.format != "run":
        raise ZoddError(f"{path} is not a zodd run directory (config.json + synthetic.pt): "
                        "export needs the run's data set")
    out = Path(out)
    if format == "mtt":  # a folder, checked as a run's output folder is
        rundir.check_out(out, overwrite)
    elif out.is_dir():
        raise ZoddError(f"--out {out} is a directory; the dc format is one file")
    elif out.exists() and not overwrite:
        raise ZoddError(f"--out {out} exists; choose another name or pass --overwrite")
    elif not rundir.writable(out.parent):
        raise ZoddError(f"--out {out} is not writable")
    cfg = DistillConfig.from_dict(rundir.load_config(located.path))
    data = datasets.for_config(check(cfg), cfg.data_dir)
    return export_sets.write(sets.zodd_set(located), data, format, out)


# --- tune ------------------------------------------------------------------------------------
def tune(config: Config = None, *, options=None, out: str | os.PathLike | None = None,
         overwrite: bool = False, resume: str | os.PathLike | None = None,
         say: Callable[..., None] | None = None, **given) -> dict:
    """A Ray Tune sweep over distillation settings (``zodd tune``); returns its summary (also
    in ``out``/summary.json). ``options``: a ``tuning.sweep.SweepOptions`` (``zodd.SweepOptions``:
    the searched settings, the search, scheduler, scoring and resources); ``given``: its fields
    by name over it, and distillation settings every trial keeps (as for :func:`settings`).
    ``resume``: continue the sweep in that directory (only cpus, address and dashboard may be
    given). Raises ``tuning.sweep.Interrupted`` when trials were left unfinished."""
    from tuning.sweep import Interrupted, SweepOptions, load_settings, run

    known = {f.name for f in dataclasses.fields(SweepOptions)}
    asked = dataclasses.replace(options or SweepOptions(), **{
        k: (tuple(v) if k == "params" else v) for k, v in given.items()
        if k in known and v is not None})
    pinned = {k: v for k, v in given.items() if k not in known and v is not None}
    if resume is not None:
        out_dir = Path(resume)
        sweep = load_settings(out_dir)
        sweep.cpus = asked.cpus if asked.cpus is not None else sweep.cpus
        sweep.address = asked.address or sweep.address
        sweep.dashboard = asked.dashboard
    else:
        base = settings(config, **pinned)
        sweep = asked.sweep(base, set(pinned))
        out_dir = Path(out) if out else Path("runs") / f"tune-{base.dataset}-ipc{base.ipc}"
        rundir.check_out(out_dir, overwrite)
    try:
        return run(sweep, out_dir, resume=resume is not None, say=say)
    except Interrupted as exc:
        exc.out = out_dir  # where --resume continues it
        raise


# --- compare ---------------------------------------------------------------------------------
def compare(files: Sequence[str | os.PathLike], any_protocol: bool = False) -> dict:
    """Metrics files' rows for one table, each after the first followed by its difference from
    the first; files made under different protocols (model, epochs, lr, batch, augmentation,
    seeds, network shape, shifts) are refused unless ``any_protocol``."""
    from zodd.evaluation import METRICS

    reports = {}
    for f in map(str, files):
        try:
            rep = json.loads(Path(f).read_text())
        except (OSError, ValueError) as exc:
            raise ZoddError(f"{f} is not a readable metrics file ({type(exc).__name__})") from None
        if not isinstance(rep, dict) or not all(isinstance(rep.get(m), dict) for m in METRICS) \
                or not isinstance(rep.get("protocol"), dict):
            raise ZoddError(f"{f} is not a zodd metrics file (no metrics or protocol)")
        reports[f] = rep
    name, first = next(iter(reports.items()))
    rows = {}
    for f, rep in reports.items():
        differ = differences(first["protocol"], rep["protocol"])
        if differ and not any_protocol:
            said = ", ".join(f"{k} {first['protocol'].get(k)!r} vs {rep['protocol'].get(k)!r}"
                             for k in differ)
            raise ZoddError(f"{f} was made under another protocol than {name} ({said}); "
                            "pass --any-protocol to compare anyway")
        rows[f + (f" [protocol differs: {', '.join(differ)}]" if differ else "")] = rep
        if f != name:
            rows[f"  minus {name}"] = difference(rep, first)
    return rows
