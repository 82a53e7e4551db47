"""Command line: ``zodd distill``, ``evaluate``, ``compare``, ``prior`` and ``tune``, each a thin
client of ``zodd.api``; with zodd.console the only module that imports click, prints or exits.
"""
from __future__ import annotations

import math
import sys
from dataclasses import fields

import click

from objectives import OBJECTIVES
from zodd import __version__, api, console, distributed, plan, recipes
from zodd.console import Bar, StopOnSignal, number
from zodd.augment import AUGMENTS
from zodd.config import DistillConfig
from zodd.data import for_config
from zodd.baselines import BASELINES
from zodd.evaluation import DEFAULT_PROTOCOL, PROTOCOLS
from zodd.report import format_table
from zodd.models import MODELS, default_shape
from zodd.options import EXTRA, GROUPS, OPTIONS, PATTERNS, group_of, help_text
from zodd.export import EXPORTS
from zodd.sets import PIXELS
from zodd.types import ZoddError
from tuning.sweep import SCHEDULERS, SEARCHES, Interrupted, SweepOptions
from tuning.trial import METRIC_NAMES

FIELDS, DEFAULTS = {f.name: f for f in fields(DistillConfig)}, DistillConfig()
HELP_DEFAULTS = {**{k: v for k, v in vars(plan).items() if k.isupper()}, **OBJECTIVES,
                 "small": default_shape(8), "large": default_shape(28)}  # zodd.options' {NAME}s


def _finite(ctx, param, value):
    """click's FLOAT accepts 'nan' and 'inf'; no flag of ours wants them."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number")
    return value


def setting(name: str):
    """The ``--NAME`` option of DistillConfig field ``name``: type from the field, choices from
    its registry (zodd.plan.REGISTRIES), text from zodd.options, default from the config or,
    decided at run time, from where it lives (zodd.plan, the objectives, zodd.models)."""
    flag, kind = "--" + name.replace("_", "-"), str(FIELDS[name].type)
    text = help_text(name, HELP_DEFAULTS)
    registry, pattern = plan.REGISTRIES.get(name), PATTERNS.get(name, "")
    if registry is not None:
        described = {**EXTRA.get(name, {}), **registry.descriptions}
        text += " " + "; ".join([f"{k}: {v}" for k, v in described.items()]
                                + ([pattern] if pattern else [])) + "."
    default = getattr(DEFAULTS, name)
    if default is not None:
        shown = ("on" if default else "off") if kind.startswith("bool") else default
        text += f" [default: {shown}]"
    if kind.startswith("bool"):
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=text.strip())
    chosen = (click.Choice(list(described)) if registry is not None and not pattern
              else {"int": int, "float": float}.get(kind.split(" ")[0], str))
    return click.option(flag, name, type=chosen, help=text.strip(),
                        callback=_finite if chosen is float else None)


class Grouped(click.Command):
    """--help with the options under zodd.options' headings."""

    def format_options(self, ctx, formatter) -> None:
        groups: dict[str, list] = {g: [] for g in GROUPS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                groups[group_of(param.name)].append(record)
        for group, records in groups.items():
            if records:
                with formatter.section(group):
                    formatter.write_dl(records)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zodd")
def cli() -> None:
    """zodd: zero-order and robust dataset distillation."""


def _settings(command):
    for name in reversed(list(OPTIONS)):
        command = setting(name)(command)
    return command


@cli.command(cls=Grouped)
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
    checkpoints (zodd.api.distill)."""
    if flags["recipe"] == "list":
        return click.echo(recipes.listing())
    if no_robust:
        if flags["updater"] not in (None, "ce"):
            raise ZoddError("--no-robust contradicts --updater " + flags["updater"])
        flags["updater"] = "ce"
    quiet = quiet or not distributed.writes_here()  # rank 0 of N processes speaks for them
    if resume_dir is None:  # the settings checked once; --resume takes the run's own
        cfg = api.settings(config_file, **flags)
        config_file, flags, out = cfg, {}, out or api.default_out(cfg)
    stop = StopOnSignal()
    try:
        with Bar(quiet, first_step=stop.install) as bar:
            run = api.distill(config_file, out=out, overwrite=overwrite, resume=resume_dir,
                              progress=bar, should_stop=lambda: stop.stop, **flags)
    finally:
        stop.restore()
    if run.stopped_by == "interrupted":
        if distributed.writes_here():
            click.echo(f"zodd: interrupted at step {run.log[-1]['step']}; checkpoint and set "
                       f"saved; continue with: zodd distill --resume {run.path}", err=True)
        sys.exit(130)
    if not quiet:
        first, last = run.log[0], run.log[-1]
        click.echo(f"{run.path}: {last['step']} iterations ({run.stopped_by}), estimator "
                   f"{run.plan['estimator']}, {last['queries']} queries, {last['seconds']:.1f} "
                   f"s, loss {number(first['loss'])} -> {number(last['loss'])}")
        if run.kept is not None:
            click.echo(f"kept the set of step {run.kept['step']}: the best on fold 0 "
                       f"({number(run.kept['held_out'])}; --select-every)")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--dataset", help="The data set of a set from another tool (a run directory "
              "names its own): a name or a PATH, as for distill.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Override the run's data dir.")
@click.option("--image-size", type=click.IntRange(4, 512),
              help="With --dataset: resize its images to N x N.")
@click.option("--pixels", type=click.Choice(list(PIXELS)), default="auto",
              show_default=True, help="A set from another tool: how its pixels are stored: "
              + PIXELS.help() + ".")
@click.option("--experiment", type=click.IntRange(min=0), default=0, show_default=True,
              help="A Dataset Condensation file holding several experiments' sets: which one.")
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default=DEFAULT_PROTOCOL,
              show_default=True, help="How the networks are trained: " + PROTOCOLS.help()
              + ". Each setting below overrides it.")
@click.option("--models", default=None,
              help="Comma-separated networks, one row each: " + MODELS.help()
              + ". [default: the protocol's network, convnet unless it names one]")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Networks trained (one per seed).")
@click.option("--epochs", type=click.IntRange(min=1), help="[default: the protocol's]")
@click.option("--lr", type=float, callback=_finite, help="[default: the protocol's]")
@click.option("--batch-size", type=click.IntRange(min=1), help="[default: the protocol's]")
@click.option("--augment", type=click.Choice(list(AUGMENTS)), help="Augmentation of the "
              "training images (dsa: one operation a batch, as DSA's code): " + AUGMENTS.help()
              + " [default: the protocol's].")
@click.option("--baseline", type=click.Choice(list(BASELINES)), help="Evaluate a baseline "
              "instead of the run's set (" + BASELINES.help() + "); writes "
              "metrics_BASELINE.json.")
@click.option("--vs-random/--no-vs-random", default=True, show_default=True,
              help="Also evaluate the random-real baseline of the same size under the same "
              "protocol (a run's earlier one is reused) and print the difference.")
@click.option("--ablate-augment", is_flag=True,
              help="Also evaluate the set (and the baseline) with augmentation off.")
@click.option("--scores", is_flag=True, help="Also DD-Ranking's fairness scores: improvement "
              "over random (IOR), hard-label recovery (HLR: networks on the whole training set, "
              "trained once and cached), the label- and augmentation-robust scores (LRS, ARS).")
@click.option("--full-epochs", type=click.IntRange(min=1), help="[with --scores] Epochs of the "
              "full-data networks [default: 20, or more where the set's training makes more "
              "optimiser steps, at most the protocol's epochs].")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Metrics file [default: in the run directory, or beside the set's file].")
@click.option("--device", default="auto", show_default=True, help="Where the networks train: "
              "auto (a CUDA GPU when there is one), cpu, cuda, cuda:N or mps.")
@click.option("--quiet", is_flag=True, help="Print nothing; only write the metrics file.")
def evaluate(path, quiet, **options) -> None:
    """Train fresh networks on a distilled set; print and save the metrics beside the
    same-protocol random-real baseline (zodd.api.evaluate). PATH: a zodd run directory or
    synthetic.pt, a Dataset Condensation / DSA / DM result file ({'data': [[images, labels]]}),
    or an MTT-style images_best.pt + labels_best.pt pair (their folder or the images file)."""
    with Bar(quiet) as bar:
        report = api.evaluate(path, write=True, progress=bar, **options)
    if not quiet:
        click.echo(report.table())
        click.echo(report.summary)
        click.echo(f"wrote {report.path}")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--format", "format", type=click.Choice(list(EXPORTS)), required=True,
              help=EXPORTS.help() + ".")
@click.option("--out", type=click.Path(), required=True,
              help="The file (dc) or folder (mtt) to write.")
@click.option("--overwrite", is_flag=True, help="Replace what --out holds.")
def export(path, format, out, overwrite) -> None:
    """Write a run's set for another tool, normalised with that tool's constants for the
    run's data set (zodd.api.export)."""
    for written in api.export(path, format, out, overwrite):
        click.echo(f"wrote {written}")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--any-protocol", is_flag=True,
              help="Compare files made under different protocols (the table says which).")
def compare(files, any_protocol) -> None:
    """Metrics files side by side, each against the first; refused when their protocols
    differ (model, epochs, lr, batch, augmentation, seeds, network shape, shifts)."""
    click.echo(format_table(api.compare(files, any_protocol)))


@cli.command()
@click.argument("dataset")
@click.option("--latent", type=click.IntRange(2, 4096), default=32, show_default=True,
              help="Numbers a code.")
@click.option("--steps", type=click.IntRange(min=1), help="Adam steps of the autoencoder "
              "(mini-batches of 256) [default: 2000, the prior --representation latent uses].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets live.")
@click.option("--image-size", type=click.IntRange(4, 512), help="Resize the images to N x N.")
@click.option("--quiet", is_flag=True)
def prior(dataset, latent, steps, seed, data_dir, image_size, quiet) -> None:
    """Train (or find) the learned prior of --representation latent for DATASET: a small
    autoencoder on its training images, cached in the data dir; an interrupted training resumes."""
    from zodd.prior import reconstruction_error

    with Bar(quiet) as bar:
        cfg = api.settings(dataset=dataset, image_size=image_size, data_dir=data_dir)
        data = for_config(cfg, progress=bar)
        net, path = api.train_prior(data, latent, data_dir, steps, seed, progress=bar)
    if not quiet:
        click.echo(f"{path}: test reconstruction error {reconstruction_error(net, data):.4f} "
                   "(mean squared, standardised pixels)")


RESUME_RUNTIME = {"resume_dir", "quiet", "cpus", "address", "dashboard"}  # --resume may change


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="JSON config every trial starts from (e.g. a run's config.json).")
@setting("dataset")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets live.")
@click.option("--ipc", type=int, help="Synthetic images per class [default: 10].")
@click.option("--iterations", type=int, help="Distillation iterations per trial [default: 300].")
@click.option("--set", "fixed", multiple=True, metavar="NAME=VALUE",
              help="Any other zodd distill setting, fixed for every trial (repeatable).")
@click.option("--param", "params", multiple=True, metavar="NAME=SPEC",
              help="A setting to search: a,b,c (values), lo:hi (range) or lo:hi:log "
                   "(repeatable; adds to or replaces the default alpha, clusters, batch-size).")
@click.option("--default-space/--no-default-space", default=True,
              help="Also search alpha, clusters and batch-size [default: on].")
@click.option("--search", default=SweepOptions.search, show_default=True,
              help=SEARCHES.help() + "; ng:OPTIMISER: any nevergrad optimiser.")
@click.option("--num-samples", type=int, help="Trials, for random and nevergrad search (grid "
              "runs every combination once) [default: 8].")
@click.option("--scheduler", type=click.Choice(list(SCHEDULERS)), default=SweepOptions.scheduler,
              show_default=True, help=SCHEDULERS.help() + ".")
@click.option("--reports", type=int, default=SweepOptions.reports, show_default=True,
              help="Validation scores reported along each trial (early-stopping rungs).")
@click.option("--metric", type=click.Choice([m.replace("_", "-") for m in METRIC_NAMES]),
              default=SweepOptions.metric, show_default=True, help="What a trial is scored on: "
              + METRIC_NAMES.help() + ".")
@click.option("--mix", type=float, default=SweepOptions.mix, show_default=True, callback=_finite,
              help="With --metric mix: the weight of Cluster-min (the rest is accuracy).")
@click.option("--validation", type=float, default=SweepOptions.validation, show_default=True,
              callback=_finite,
              help="Fraction of each class's training images held out for scoring trials.")
@click.option("--eval-seeds", type=int, default=SweepOptions.eval_seeds, show_default=True,
              help="Networks trained per score.")
@click.option("--eval-epochs", type=int, default=SweepOptions.eval_epochs, show_default=True)
@click.option("--cpus", type=int, help="CPUs of the local Ray cluster [default: all].")
@click.option("--cpus-per-trial", type=float, default=SweepOptions.cpus_per_trial,
              show_default=True, callback=_finite)
@click.option("--gpus-per-trial", type=float, default=SweepOptions.gpus_per_trial,
              show_default=True, callback=_finite)
@click.option("--trial-retries", type=click.IntRange(min=0), default=SweepOptions.trial_retries,
              show_default=True,
              help="Times a failed trial (its process killed, its run ended by an error) is "
              "started again from its last checkpoint.")
@click.option("--address", type=str, help="Run on this Ray cluster instead of a local one.")
@click.option("--dashboard", is_flag=True, help="Start Ray's dashboard (local cluster).")
@click.option("--final/--no-final", default=True, show_default=True, help="Distil the best "
              "config on the whole training set and evaluate it on the test set.")
@click.option("--final-seeds", type=int, default=SweepOptions.final_seeds, show_default=True)
@click.option("--out", type=click.Path(), help="Sweep directory [default: "
              "runs/tune-<dataset>-ipc<ipc>].")
@click.option("--overwrite", is_flag=True, help="Allow a non-empty --out.")
@click.option("--resume", "resume_dir", type=click.Path(),
              help="Continue the interrupted sweep in this directory.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
@click.pass_context
def tune(ctx, config_file, fixed, resume_dir, quiet, **options) -> None:
    """Search distillation settings with Ray Tune (zodd.api.tune); trials are scored on a
    validation split of the training data, and the test set is used once, for the best
    config."""
    from tuning.space import fixed as parse_fixed

    if resume_dir is not None:
        given = [name for name in ctx.params if name not in RESUME_RUNTIME
                 and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise ZoddError("--resume takes the sweep's settings from its directory; drop --"
                            + given[0].replace("_", "-").replace("config-file", "config"))
    pinned = dict(parse_fixed(text) for text in fixed)
    if pinned.get("recipe") is not None and config_file:
        raise ZoddError("--set recipe and --config: the config file holds every setting "
                        "already; give one of them")
    try:
        api.tune(config_file, resume=resume_dir, **options, **pinned,
                 say=None if quiet else lambda text, err=False: click.echo(text, err=err))
    except Interrupted as exc:
        click.echo(f"zodd: sweep interrupted ({exc}); continue with: zodd tune --resume "
                   f"{exc.out}", err=True)
        sys.exit(130)


def main() -> None:
    console.main(cli)


if __name__ == "__main__":
    main()
