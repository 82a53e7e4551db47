"""Command line: ``zodd distill``, ``zodd evaluate`` and ``zodd tune``.

The only module that imports click and the only one that prints or exits: every ZoddError (and
every usage error) becomes one line on stderr and exit status 2.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import dataclasses
from dataclasses import fields
from pathlib import Path

import click

from zodd import __version__, recipes, rundir
from zodd.config import DistillConfig
from tuning.sweep import SCHEDULERS, SEARCHES
from tuning.trial import METRIC_NAMES
from zodd.augment import AUGMENTS
from zodd.evaluate import (BASELINES, PROTOCOLS, TestSets, difference, differences,
                           evaluate as run_eval, format_table, metrics_file, protocol_config,
                           protocol_record, shift_description)
from zodd.models import MODELS, build_network, check_model
from zodd.sets import PIXELS
from zodd import synthetic
from zodd.plan import REGISTRIES, check, resolve
from zodd.types import ZoddError, resolve_device


def _finite(ctx, param, value):
    """click's FLOAT accepts 'nan' and 'inf'; no flag of ours wants them."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zodd")
def cli() -> None:
    """zodd: zero-order and robust dataset distillation."""


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ZoddError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ZoddError(f"--out {out} is not empty; choose another directory or pass --overwrite")
    if not str(out).strip():
        raise ZoddError("--out is empty")
    parent = out if out.exists() else next(p for p in out.absolute().parents if p.exists())
    if not _writable(parent):
        raise ZoddError(f"--out {out} is not writable")


def _writable(directory: Path) -> bool:
    """A real probe: os.access says yes to root even on read-only file systems."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=directory, prefix=".zodd-probe-"))
    except OSError:
        return False
    return True


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _progress_text(row: dict | None) -> str:
    if not row:
        return ""
    text = f"loss {_number(row['loss'])}  queries {row['queries']}"
    return text + (f"  failures {row['failures']}" if row.get("failures") else "")


class _StopOnSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step (it then saves a checkpoint);
    a second SIGINT interrupts at once."""

    def __init__(self):
        self._stop, self.active = False, False

    def requested(self) -> bool:
        return self._stop

    def _handle(self, signum, frame):
        if self._stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop = True

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self.active = True
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self.active = False


class _ProgressLine:
    """One stderr line rewritten in place at most once a second, the first time after ``wait``
    seconds; the last call (``last``) is shown when a line is open; ``end()`` closes a line an
    error left open."""

    def __init__(self, quiet: bool, wait: float):
        self.quiet, self.open = quiet, False
        self.at = time.monotonic() + wait - 1.0

    def show(self, text: str, last: bool) -> None:
        now = time.monotonic()
        if not self.quiet and (now - self.at >= 1.0 or (self.open and last)):
            self.at, self.open = now, not last
            click.echo(f"\r{text}", err=True, nl=last)

    def end(self) -> None:
        if self.open:
            click.echo("", err=True)
            self.open = False


def _load_data(cfg: DistillConfig, data_dir: str | None, quiet: bool):
    """The config's data set; a folder tree whose reading takes over a second shows how far it
    has got (stderr)."""
    from zodd import data as datasets

    line = _ProgressLine(quiet, wait=1.0)
    try:
        return datasets.load(cfg.dataset, data_dir, **cfg.data_options(), progress=lambda d, t:
                             line.show(f"reading images {d}/{t}", d == t))
    finally:
        line.end()


def _config_file(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ZoddError(f"config file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise ZoddError(f"config file {path} is not readable JSON ({exc})") from None
    return check(DistillConfig.from_dict(raw)).to_dict()


FIELDS = {f.name: f for f in fields(DistillConfig)}
DEFAULTS = DistillConfig()


def setting(name: str, help: str = "", extra: dict[str, str] | None = None,
            pattern: str = ""):
    """The ``--NAME`` option of the DistillConfig field ``name``: its type from the field, its
    choices and their descriptions from the field's registry (zodd.plan.REGISTRIES; ``extra``:
    names the registry does not hold, such as auto; ``pattern``: a described family of names,
    such as ng:NAME, that makes the option free text checked later), and the default from the
    config."""
    flag = "--" + name.replace("_", "-")
    kind = str(FIELDS[name].type)
    default = getattr(DEFAULTS, name)
    registry = REGISTRIES.get(name)
    if registry is not None:
        described = {**(extra or {}), **registry.descriptions}
        help = " ".join(t for t in (help, "; ".join(f"{k}: {v}" for k, v in described.items())
                                    + (f"; {pattern}" if pattern else "") + ".") if t)
    if default is not None:
        shown = ("on" if default else "off") if kind.startswith("bool") else default
        help += f" [default: {shown}]"
    if kind.startswith("bool"):
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help)
    if registry is not None and not pattern:
        return click.option(flag, name, type=click.Choice(list(described)), help=help)
    if kind.startswith("int"):
        return click.option(flag, name, type=int, help=help)
    if kind.startswith("float"):
        return click.option(flag, name, type=float, callback=_finite, help=help)
    return click.option(flag, name, type=str, help=help)


DATASET_PATH = ("PATH: your own data, a folder tree (PATH/train/<class>/*.png and "
                "PATH/test/<class>/..., or PATH/<class>/... split by --test-fraction) or an .npz "
                "with x_train, y_train, x_test, y_test")

DISTILL_SETTINGS = [
    setting("recipe", "Start from a named method's settings; flags given here override them.",
            extra={"list": "print the recipes and their settings"}),
    setting("dataset", pattern=DATASET_PATH),
    setting("data_dir", "Where data sets live (None: $ZODD_DATA, else ~/.cache/zodd)."),
    setting("image_size", "Resize every image to N x N (needed when a folder's images differ "
            "in size)."),
    setting("test_fraction", "A folder tree without train/ and test/: the share of each class "
            "held out as the test set (seed 0)."),
    setting("ipc", "Synthetic images per class (stored; --representation multi decodes each "
            "into factor^2)."),
    setting("init", extra={"auto": "real for the matching objectives, dm for the scores "
                           "(prototype, trained, command)"},
            pattern="PATH: start from a distilled set (a zodd run directory, or any file zodd "
            "evaluate reads), with IPC x decoded images per stored image in each class; a run "
            "of the same representation gives its stored tensor as it is"),
    setting("warm_iterations", "With --init dm: its distribution-matching steps (default 20; "
            "their time counts against --max-seconds)."),
    setting("representation"), setting("factor", "With --representation multi: each stored "
                                       "image holds factor x factor images."),
    setting("latent", "With --representation latent: numbers a code (the learned prior's "
            "width)."),
    setting("seed"),
    setting("device", "auto, cpu, cuda, cuda:N or mps (auto: a CUDA GPU when there is one)."),
    setting("objective"),
    setting("estimator", extra={"auto": "autograd when the objective is differentiable, else "
                                        "es (gaussian with --surrogate)"}),
    setting("optimizer", "Step rule for S.",
            extra={"auto": "sgd at the objective's lr for dm and gm, paper for scores"},
            pattern="ng:NAME: a nevergrad optimiser, asked --directions candidates a step"),
    setting("lr", "Learning rate for S (default: the objective's, e.g. 1 for dm, 0.1 for gm)."),
    setting("sigma", "Smoothing radius (default: the objective's: 0.01 for dm/gm, 0.3 for "
            "scores)."),
    setting("directions", "Directions per zero-order estimate (default: the objective's: 128 "
            "for dm and gm, 32 for scores)."),
    setting("lowres", "Zero-order directions drawn at 1/N resolution and upsampled (default: "
            "2 where one estimate covers over 4,096 values, e.g. Fashion-MNIST IPC 10; else 1)."),
    setting("blockwise", "One finite difference per class from each call (dm, gm)."),
    setting("surrogate", "A differentiable objective (dm, gm) whose gradient at S guides "
            "--estimator gaussian: its direction gets its own finite difference, the random "
            "directions span the rest (unbiased; one more query a step)."),
    setting("augment", "Siamese augmentation of real and synthetic batches in the objective."),
    setting("command", "With --objective command: the program scoring candidates, e.g. "
            "'python eval.py {input}' (see README)."),
    setting("command_timeout", "Seconds per call of --command."),
    setting("workers", "Ray actors evaluating candidates (0: in-process)."),
    setting("ray_address", "Join this Ray cluster instead of a local one."),
    setting("retries", "Further tries of a failed evaluation."),
    setting("max_failures", "Failed evaluations tolerated before the run ends."),
    setting("updater"),
    setting("alpha", "CVaR fraction in (0, 1]."), setting("cvar_tail"),
    setting("cvar_terms", "CVaR aggregates over clusters added to CE (--updater ce: none)."),
    setting("clusters", "Cluster centres per class when IPC > 10."), setting("cluster_space"),
    setting("batch_size", "Real samples per class each iteration."),
    setting("update_batch", "Of those, per class, the network update trains on (default: all: "
            "one batch serves the update and the matching)."),
    setting("one_pass", "The network update shares dm's forward pass over the real batch "
            "(its augmented images): one pass instead of two; the matching then sees the "
            "network before the step's update, which lands after S's step."),
    setting("compile", "Run the network's passes over the real batch (dm's embedding, the "
            "updater's forward and backward) through torch.compile: faster per iteration "
            "after a one-time compile of about 10-30 s; values differ from eager by float "
            "rounding. Needs a C++ compiler on the CPU."),
    setting("model_lr", "Network learning rate."),
    setting("model_steps", "Network updates per iteration."),
    setting("reinit_every", "Fresh network every N iterations."),
    setting("queue_size", "IDM's queue of networks: networks kept, each trained by the updater "
            "between uses, one drawn each iteration (default: none; --recipe idm: 100)."),
    setting("queue_every", "With --queue-size: a new network every N iterations (default: 5 at "
            "IPC 1, else 30: IDM's)."),
    setting("queue_train", "With --queue-size: networks trained each iteration, --model-steps "
            "steps each (with a queue --model-steps defaults to IDM's 10)."),
    setting("ce_weight", "With --queue-size and dm: the synthetic images' cross-entropy under "
            "the drawn network, times its training accuracy in percent (default: 0.5 at IPC up "
            "to 10, else 0.1: IDM's)."),
    setting("width", "ConvNet width (default: by image size: 128 for 28-32 px, 64 for 8 px)."),
    setting("depth", "ConvNet depth (default: by image size: 3 for 28-32 px, 2 for 8 px)."),
    setting("iterations"),
    setting("max_seconds", "Stop once this much time is spent (checked after each iteration: "
            "the last may end past it)."),
    setting("max_queries", "Stop once this many objective queries are spent (checked after "
            "each iteration)."),
    setting("checkpoint_every", "Iterations between checkpoints (default: about once a "
            "minute)."),
]


def _settings(command):
    for option in reversed(DISTILL_SETTINGS):
        command = option(command)
    return command


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="JSON config (e.g. a run's config.json); flags given here override it.")
@_settings
@click.option("--no-robust", is_flag=True, help="Plain CE network update (same as --updater ce).")
@click.option("--resume", "resume_dir", type=click.Path(),
              help="Continue the run in this directory from its last checkpoint; only budgets "
                   "(--iterations, --max-seconds, --max-queries) may change.")
@click.option("--out", type=click.Path(), help="Output directory [default: runs/<settings>].")
@click.option("--overwrite", is_flag=True, help="Allow a non-empty --out.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def distill(config_file, no_robust, resume_dir, out, overwrite, quiet, **flags) -> None:
    """Distil a synthetic set; writes synthetic.pt, config.json, grid.png, log.jsonl and
    checkpoints."""
    from zodd import data as datasets
    from zodd.distill import distill as run

    if resume_dir is not None:
        if config_file or out:
            raise ZoddError("--resume takes its settings and output directory from the run; "
                            "drop --config and --out")
        resume_path = Path(resume_dir)
        if not rundir.has_checkpoint(resume_path):
            raise ZoddError(f"no checkpoint in {resume_dir} to resume from")
        values = DistillConfig.from_dict(rundir.load_config(resume_path)).to_dict()
    else:
        values = _config_file(config_file)
    recipe = flags.pop("recipe")
    if recipe == "list":
        click.echo(recipes.listing())
        return
    if recipe is not None and config_file:
        raise ZoddError("--recipe and --config: the config file holds every setting already; "
                        "give one of them")
    values = recipes.with_recipe(values, recipe)
    values.update({k: v for k, v in flags.items() if v is not None})
    if no_robust:
        if flags.get("updater") not in (None, "ce"):
            raise ZoddError("--no-robust contradicts --updater " + flags["updater"])
        values["updater"] = "ce"
    cfg = check(DistillConfig(**{k: v for k, v in values.items() if k in FIELDS}))
    if resume_dir is not None:
        out_dir = Path(resume_dir)
    else:
        out_dir = Path(out) if out else Path("runs") / (
            f"{datasets.short_name(cfg.dataset)}-ipc{cfg.ipc}-{cfg.objective}-{cfg.estimator}-{cfg.updater}-s{cfg.seed}")
        _check_out(out_dir, overwrite)
    data = _load_data(cfg, cfg.data_dir, quiet)
    if cfg.representation == "latent":
        _prior(data, cfg.latent, cfg.data_dir, quiet)
    plan = resolve(cfg, data)
    if plan.init == "dm" and resume_dir is None and not quiet:
        click.echo(f"zodd: warm start: {plan.warm_iterations} DM steps with exact gradients "
                   "before the first query (--init dm)", err=True)

    bar, stop = None, _StopOnSignal()

    def on_step(row: dict, images) -> None:
        nonlocal bar
        if not stop.active:  # after set-up (and Ray's start, which sets handlers of its own)
            stop.__enter__()
        if quiet:
            return
        if bar is None:  # opened on the first step, so set-up errors print alone
            bar = click.progressbar(length=cfg.iterations, label="distilling", file=sys.stderr,
                                    show_eta=True, width=24,
                                    item_show_func=_progress_text)
            bar.__enter__()
        bar.update(1, row)

    try:
        result = run(cfg, data, out_dir, on_step, resume=resume_dir is not None,
                     should_stop=stop.requested)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        if stop.active:
            stop.__exit__(None, None, None)
    if result.stopped_by == "interrupted":
        click.echo(f"zodd: interrupted at step {result.rows[-1]['step']}; checkpoint and set "
                   f"saved; continue with: zodd distill --resume {out_dir}", err=True)
        sys.exit(130)
    if not quiet:
        last = result.rows[-1]
        click.echo(f"{out_dir}: {last['step']} iterations ({result.stopped_by}), estimator "
                   f"{result.estimator}, {last['queries']} queries, {last['seconds']:.1f} s, "
                   f"loss {_number(result.rows[0]['loss'])} -> {_number(last['loss'])}")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--dataset", help="The data set of a set from another tool (a run directory "
              "names its own): a name or a PATH, as for distill.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Override the run's data dir.")
@click.option("--image-size", type=click.IntRange(4, 512),
              help="With --dataset: resize its images to N x N.")
@click.option("--pixels", type=click.Choice(list(PIXELS)), default="standardised",
              show_default=True, help="A set from another tool: how its pixels are stored: "
              + PIXELS.help() + ".")
@click.option("--experiment", type=click.IntRange(min=0), default=0, show_default=True,
              help="A Dataset Condensation file holding several experiments' sets: which one.")
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default="zodd",
              show_default=True, help="How the networks are trained: " + PROTOCOLS.help()
              + ". Each setting below overrides it.")
@click.option("--models", default="convnet", show_default=True,
              help="Comma-separated networks, one row each: " + MODELS.help() + ".")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Networks trained (one per seed).")
@click.option("--epochs", type=click.IntRange(min=1), help="[default: the protocol's]")
@click.option("--lr", type=float, callback=_finite, help="[default: the protocol's]")
@click.option("--batch-size", type=click.IntRange(min=1), help="[default: the protocol's]")
@click.option("--augment", type=click.Choice(list(AUGMENTS)),
              help="Augmentation of the training images, drawn per image and batch (dsa: "
              "one operation a batch, as DSA's code): "
              + AUGMENTS.help() + " [default: the protocol's].")
@click.option("--baseline", type=click.Choice(list(BASELINES)),
              help="Evaluate a baseline instead of the run's set (" + BASELINES.help()
                   + "); writes metrics_BASELINE.json.")
@click.option("--vs-random/--no-vs-random", default=True, show_default=True,
              help="Also evaluate the random-real baseline of the same size under the same "
              "protocol (a run's earlier one is reused) and print the difference.")
@click.option("--ablate-augment", is_flag=True,
              help="Also evaluate the set (and the baseline) with augmentation off.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Metrics file [default: in the run directory, or beside the set's file].")
@click.option("--device", default="auto", show_default=True,
              help="Where the networks train: auto (a CUDA GPU when there is one), cpu, cuda, "
                   "cuda:N or mps.")
@click.option("--quiet", is_flag=True, help="Print nothing; only write the metrics file.")
def evaluate(path, dataset, data_dir, image_size, pixels, experiment, protocol, models, seeds,
             epochs, lr, batch_size, augment, baseline, vs_random, ablate_augment, out, device,
             quiet) -> None:
    """Train fresh networks on a distilled set; print and save the metrics beside the
    same-protocol random-real baseline. PATH: a zodd run directory or synthetic.pt, a Dataset
    Condensation / DSA / DM result file ({'data': [[images, labels]]}), or an MTT-style
    images_best.pt + labels_best.pt pair (their folder or the images file)."""
    import torch

    from zodd import sets

    resolve_device(device)  # a bad or missing device is reported before any work
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ZoddError("invalid models: give at least one name")
    for name in names:
        check_model(name)
    located = sets.locate(path)
    if located.format == "run":
        if dataset is not None or image_size is not None:
            raise ZoddError("a run directory names its own data set: drop --dataset and "
                            "--image-size")
        cfg = check(DistillConfig.from_dict(rundir.load_config(located.path)))
    else:
        if dataset is None:
            raise ZoddError(f"{path} is a {located.format} file, which does not name its data "
                            "set: pass --dataset")
        if baseline is not None:
            raise ZoddError("--baseline needs a run directory (its data set, IPC and seed)")
        cfg = check(DistillConfig(dataset=dataset, image_size=image_size))
    if located.format in ("run", "zodd") and pixels != "standardised":
        raise ZoddError("zodd's own sets are standardised: drop --pixels")
    where = located.path if located.format == "run" else located.path.parent
    if not _writable(where) and out is None:
        raise ZoddError(f"{where} is not writable: pass --out")
    syn = sets.zodd_set(located) if located.format in ("run", "zodd") else None
    data = _load_data(cfg, data_dir or cfg.data_dir, quiet)
    if syn is not None:
        foreign = sets.ForeignSet(syn, located.format, "hard")
        if syn.images.shape[1:] != data.train_x.shape[1:] or syn.num_classes > data.num_classes:
            raise ZoddError(f"{path} does not fit {data.name}: images "
                            f"{tuple(syn.images.shape[1:])}, {syn.num_classes} classes")
    else:
        foreign = sets.read(located, data, pixels, experiment)
    for name in names:  # a network the images are too small for is refused before any work
        build_network(name, data.channels, data.num_classes, data.image_size, cfg.width,
                      cfg.depth)
    ipc = cfg.ipc if located.format == "run" else sets.random_ipc(foreign.set)
    seed = cfg.seed if located.format == "run" else 0
    random_set = synthetic.initialise(data, ipc, "real", torch.Generator().manual_seed(seed))
    if baseline is not None:
        foreign, vs_random = sets.ForeignSet(random_set, "random", "hard"), False
    chosen = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "augment": augment}
    configs = {name: protocol_config(protocol, cfg.dataset, seeds=seeds, device=device,
                                     model=name, **chosen,
                                     **({"width": cfg.width, "depth": cfg.depth}
                                        if name == "convnet" else {})) for name in names}
    first = configs[names[0]]
    file_name = metrics_file(first.augment, baseline, protocol)
    target = Path(out) if out else (
        located.path / file_name if located.format == "run"
        else located.path.parent / f"{located.path.stem}-{file_name}")
    say = (lambda text: None) if quiet else (lambda text: click.echo(text, err=True))
    label = baseline or ("synthetic" if located.format == "run" else located.format)
    tests = TestSets.build(data)
    rows, record = {}, {}
    for name, ecfg in configs.items():
        variants = {"": ecfg}
        if ablate_augment and ecfg.augment != "none":
            variants["no augment"] = dataclasses.replace(ecfg, augment="none",
                                                         protocol=ecfg.protocol + "+custom")
        for tag, vcfg in variants.items():
            key = name + (f", {tag}" if tag else "")
            say(f"{key}: training {vcfg.seeds} network(s), {vcfg.epochs} epochs, augment "
                f"{vcfg.augment}")
            rep = run_eval(foreign.set, data, vcfg, tests=tests, on_seed=lambda k, m: say(
                f"  seed {k}: " + ", ".join(f"{a} {v:.2f}" for a, v in m.items())))
            entry = {"set": rep}
            rows[f"{label} ({key})"] = rep
            if vs_random:
                base = _random_report(located, random_set, data, vcfg, tests, baseline, say)
                entry["random"] = base
                entry["vs_random"] = difference(rep, base)
                rows[f"random real ({key})"] = base
                rows[f"difference ({key})"] = entry["vs_random"]
            record[key] = entry
    head = record[names[0]]
    report = {**head["set"], "set": label, "format": foreign.format, "labels": foreign.labels,
              "source": str(located.path), "dataset": cfg.dataset, "note": foreign.note,
              **({"random": head["random"], "vs_random": head["vs_random"]} if vs_random else {}),
              "runs": record}
    if located.format == "run":
        report["run"] = str(located.path)
    rundir.save_json(report, target)
    if not quiet:
        click.echo(format_table(rows))
        worst = min(head["set"]["per_class"].items(), key=lambda kv: kv[1])
        click.echo(f"labels {foreign.labels}; hardest class ({names[0]}): {worst[0]} "
                   f"{worst[1]:.2f}; protocol {first.protocol}: {first.epochs} epochs, lr "
                   f"{first.lr:g}, batch {first.batch_size}, augment {first.augment}"
                   + (f"; {foreign.note}" if foreign.note else ""))
        click.echo(shift_description())
        click.echo(f"wrote {target}")


def _random_report(located, random_set, data, ecfg, tests, baseline, say) -> dict:
    """The random-real baseline under ``ecfg``: a run's earlier metrics_random file when its
    protocol is the same, else evaluated now (and, for a run, kept in that file)."""
    cached = None
    if located.format == "run" and ecfg.model == "convnet":
        cached = located.path / metrics_file(ecfg.augment, "random",
                                             ecfg.protocol.split("+")[0])
        try:
            old = json.loads(cached.read_text())
            if not differences(old.get("protocol", {}), protocol_record(ecfg)):
                return old
        except (OSError, ValueError, AttributeError):
            pass
    say(f"random real: training {ecfg.seeds} network(s)")
    rep = run_eval(random_set, data, ecfg, tests=tests)
    if cached is not None and _writable(cached.parent):
        rundir.save_json({**rep, "set": "random", "run": str(located.path)}, cached)
    return rep


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--any-protocol", is_flag=True,
              help="Compare files made under different protocols (the table says which).")
def compare(files, any_protocol) -> None:
    """Metrics files side by side, each against the first; refused when their protocols
    differ (model, epochs, lr, batch, augmentation, seeds, network shape, shifts)."""
    from zodd.evaluate import METRICS

    reports = {}
    for f in files:
        try:
            rep = json.loads(Path(f).read_text())
        except (OSError, ValueError) as exc:
            raise ZoddError(f"{f} is not a readable metrics file ({type(exc).__name__})") from None
        if not isinstance(rep, dict) or not all(isinstance(rep.get(m), dict) for m in METRICS) \
                or not isinstance(rep.get("protocol"), dict):
            raise ZoddError(f"{f} is not a zodd metrics file (no metrics or protocol)")
        reports[f] = rep
    first = reports[files[0]]
    rows = {}
    for f, rep in reports.items():
        differ = differences(first["protocol"], rep["protocol"])
        if differ and not any_protocol:
            said = ", ".join(f"{k} {first['protocol'].get(k)!r} vs {rep['protocol'].get(k)!r}"
                             for k in differ)
            raise ZoddError(f"{f} was made under another protocol than {files[0]} ({said}); "
                            "pass --any-protocol to compare anyway")
        tag = f" [protocol differs: {', '.join(differ)}]" if differ else ""
        rows[f + tag] = rep
        if f != files[0]:
            rows[f"  minus {files[0]}"] = difference(rep, first)
    click.echo(format_table(rows))


def _prior(data, latent: int, data_dir: str | None, quiet: bool, steps: int | None = None,
           seed: int = 0):
    """The data set's learned prior (zodd.prior), trained now unless cached; its path."""
    from zodd import data as datasets
    from zodd import prior as priors

    root = datasets.data_root(data_dir)
    path = priors.cache_path(data, latent, seed, steps, root)
    line = _ProgressLine(quiet, wait=0.0)

    def progress(step: int, total: int, loss: float) -> None:
        line.show(f"training the {data.name} prior: step {step}/{total}, loss {loss:.4f}",
                  step == total)

    if not quiet and not path.is_file():
        click.echo(f"no cached prior for {data.name} (latent {latent}): training it once, "
                   f"kept in {path}", err=True)
    try:
        return priors.load_or_train(data, latent, seed, steps, root, progress), path
    finally:
        line.end()


@cli.command()
@click.argument("dataset")
@click.option("--latent", type=click.IntRange(2, 4096), default=32, show_default=True,
              help="Numbers a code.")
@click.option("--steps", type=click.IntRange(min=1),
              help="Adam steps of the autoencoder (mini-batches of 256) [default: 2000, the "
              "prior --representation latent uses].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets live.")
@click.option("--image-size", type=click.IntRange(4, 512), help="Resize the images to N x N.")
@click.option("--quiet", is_flag=True)
def prior(dataset, latent, steps, seed, data_dir, image_size, quiet) -> None:
    """Train (or find) the learned prior of --representation latent for DATASET: a small
    autoencoder on its training images, cached in the data dir; an interrupted training resumes."""
    from zodd.prior import reconstruction_error

    cfg = check(DistillConfig(dataset=dataset, image_size=image_size, data_dir=data_dir))
    data = _load_data(cfg, data_dir, quiet)
    net, path = _prior(data, latent, data_dir, quiet, steps, seed)
    if not quiet:
        click.echo(f"{path}: test reconstruction error {reconstruction_error(net, data):.4f} "
                   "(mean squared, standardised pixels)")


RESUME_RUNTIME = {"resume_dir", "quiet", "cpus", "address", "dashboard"}  # may change on --resume


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="JSON config every trial starts from (e.g. a run's config.json).")
@setting("dataset", pattern=DATASET_PATH)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets live.")
@click.option("--ipc", type=int, help="Synthetic images per class [default: 10].")
@click.option("--iterations", type=int, help="Distillation iterations per trial [default: 300].")
@click.option("--set", "fixed", multiple=True, metavar="NAME=VALUE",
              help="Any other zodd distill setting, fixed for every trial (repeatable).")
@click.option("--param", "params", multiple=True, metavar="NAME=SPEC",
              help="A setting to search: a,b,c (values), lo:hi (range) or lo:hi:log "
                   "(repeatable; adds to or replaces the default alpha, clusters, batch-size).")
@click.option("--no-default-space", is_flag=True,
              help="Search only the --param settings, not alpha, clusters and batch-size.")
@click.option("--search", default="random", show_default=True,
              help=SEARCHES.help() + "; ng:OPTIMISER: any nevergrad optimiser.")
@click.option("--num-samples", type=int, default=8, show_default=True,
              help="Trials, for random and nevergrad search (grid runs every combination once).")
@click.option("--scheduler", type=click.Choice(list(SCHEDULERS)), default="asha",
              show_default=True, help=SCHEDULERS.help() + ".")
@click.option("--reports", type=int, default=4, show_default=True,
              help="Validation scores reported along each trial (early-stopping rungs).")
@click.option("--metric", type=click.Choice([m.replace("_", "-") for m in METRIC_NAMES]),
              default="acc", show_default=True,
              help="What a trial is scored on: " + METRIC_NAMES.help() + ".")
@click.option("--mix", type=float, default=0.5, show_default=True, callback=_finite,
              help="With --metric mix: the weight of Cluster-min (the rest is accuracy).")
@click.option("--validation", type=float, default=0.2, show_default=True, callback=_finite,
              help="Fraction of each class's training images held out for scoring trials.")
@click.option("--eval-seeds", type=int, default=1, show_default=True,
              help="Networks trained per score.")
@click.option("--eval-epochs", type=int, default=300, show_default=True)
@click.option("--cpus", type=int, help="CPUs of the local Ray cluster [default: all].")
@click.option("--cpus-per-trial", type=float, default=1.0, show_default=True, callback=_finite)
@click.option("--gpus-per-trial", type=float, default=0.0, show_default=True, callback=_finite)
@click.option("--address", type=str, help="Run on this Ray cluster instead of a local one.")
@click.option("--dashboard", is_flag=True, help="Start Ray's dashboard (local cluster).")
@click.option("--final/--no-final", default=True, show_default=True,
              help="Distil the best config on the whole training set and evaluate it on the "
                   "test set.")
@click.option("--final-seeds", type=int, default=3, show_default=True)
@click.option("--out", type=click.Path(),
              help="Sweep directory [default: runs/tune-<dataset>-ipc<ipc>].")
@click.option("--overwrite", is_flag=True, help="Allow a non-empty --out.")
@click.option("--resume", "resume_dir", type=click.Path(),
              help="Continue the interrupted sweep in this directory.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
@click.pass_context
def tune(ctx, config_file, dataset, data_dir, ipc, iterations, fixed, params, no_default_space,
         search, num_samples, scheduler, reports, metric, mix, validation, eval_seeds,
         eval_epochs, cpus, cpus_per_trial, gpus_per_trial, address, dashboard, final,
         final_seeds, out, overwrite, resume_dir, quiet) -> None:
    """Search distillation settings with Ray Tune; trials are scored on a validation split of
    the training data, and the test set is used once, for the best config."""
    from tuning import space as spaces
    from tuning.sweep import Interrupted, Sweep, load_settings, run
    from tuning.trial import Scoring

    if resume_dir is not None:
        given = [name for name in ctx.params if name not in RESUME_RUNTIME
                 and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise ZoddError("--resume takes the sweep's settings from its directory; drop --"
                            + given[0].replace("_", "-").replace("config-file", "config"))
        out_dir = Path(resume_dir)
        sweep = load_settings(out_dir)
        sweep.cpus = cpus if cpus is not None else sweep.cpus
        sweep.address = address or sweep.address
        sweep.dashboard = dashboard
    else:
        values = _config_file(config_file)
        for name, value in (("dataset", dataset), ("data_dir", data_dir), ("ipc", ipc),
                            ("iterations", iterations)):
            if value is not None:
                values[name] = value
        pinned = dict(spaces.fixed(text) for text in fixed)
        values.update(pinned)
        if pinned.get("recipe") is not None and config_file:
            raise ZoddError("--set recipe and --config: the config file holds every setting "
                            "already; give one of them")
        values = recipes.with_recipe(values, pinned.get("recipe"))
        base = check(DistillConfig(**{k: v for k, v in values.items() if k in FIELDS}))
        space = spaces.build(list(params), search, base.ipc, defaults=not no_default_space)
        both = [p.name for p in space if p.name in pinned]
        if both:
            raise ZoddError(f"{both[0]} is both --set and searched; choose one")
        if search == "grid" and ctx.get_parameter_source("num_samples") == \
                click.core.ParameterSource.COMMANDLINE:
            raise ZoddError("grid search runs every combination once; --num-samples is for "
                            "random and nevergrad search")
        sweep = Sweep(base=base.to_dict(), params=space, search=search, num_samples=num_samples,
                      scheduler=scheduler,
                      scoring=Scoring(metric=metric.replace("-", "_"), mix=mix,
                                      seeds=eval_seeds, epochs=eval_epochs, reports=reports),
                      validation=validation, cpus=cpus, cpus_per_trial=cpus_per_trial,
                      gpus_per_trial=gpus_per_trial, address=address, dashboard=dashboard,
                      final=final, final_seeds=final_seeds).validate()
        out_dir = Path(out) if out else Path("runs") / f"tune-{base.dataset}-ipc{base.ipc}"
        _check_out(out_dir, overwrite)
    try:
        run(sweep, out_dir, resume=resume_dir is not None,
            say=None if quiet else lambda text, err=False: click.echo(text, err=err))
    except Interrupted as exc:
        click.echo(f"zodd: sweep interrupted ({exc}); continue with: zodd tune --resume "
                   f"{out_dir}", err=True)
        sys.exit(130)


def main() -> None:
    import warnings

    warnings.formatwarning = lambda message, *args, **kwargs: f"zodd: warning: {message}\n"
    if len(sys.argv) == 1:
        sys.argv.append("--help")  # plain `zodd`: the overview, not an error
    try:
        cli.main(standalone_mode=False)
    except ZoddError as exc:
        click.echo(f"zodd: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("zodd: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"zodd: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("zodd: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: one line, or the traceback with ZODD_DEBUG=1
        # out of host memory, or torch's OutOfMemoryError (a RuntimeError) for a GPU's
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            click.echo(f"zodd: error: {str(exc).split('.')[0] or 'out of memory'}: lower "
                       "--batch-size, --directions or --ipc, run fewer jobs at once, or use "
                       "--device cpu", err=True)
            sys.exit(2)
        if os.environ.get("ZODD_DEBUG"):
            raise
        click.echo(f"zodd: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
