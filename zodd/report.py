"""``zodd.evaluate``: a set evaluated under a protocol, beside the random-real baseline of its
size, as one :class:`Report` (what ``zodd evaluate`` prints and writes).

What is evaluated can be a :class:`zodd.synthetic.Run`, a SyntheticSet, a run directory or any file
``zodd.sets`` reads; networks are trained by ``zodd.evaluation``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from zodd import data as datasets
from zodd import baselines, rundir, sets, synthetic
from zodd.config import DistillConfig
from zodd.evaluation import (DEFAULT_PROTOCOL, METRICS, EvalConfig, TestSets,
                             evaluate as evaluate_set, metrics_file, protocol_config,
                             protocol_model, protocol_record, shift_description)
from zodd.models import build_network, check_model
from zodd.plan import check
from zodd.synthetic import Run, SyntheticSet
from zodd.types import Progress, ZoddError, resolve_device
from zodd.zca import whitened


# what two metrics files' protocol records must agree on to be compared
COMPARED = ("model", "seeds", "epochs", "lr", "batch_size", "augment", "width", "depth",
            "optimizer", "shifts")


def differences(a: dict, b: dict) -> list[str]:
    """The protocol settings two metrics files' ``protocol`` records disagree on (versions,
    device and the way seeds were scheduled are not settings)."""
    return [k for k in COMPARED if a.get(k) != b.get(k)]


def difference(a: dict, b: dict) -> dict[str, float]:
    """Per metric, mean of ``a`` minus mean of ``b`` (two reports of the same protocol)."""
    return {m: a[m]["mean"] - b[m]["mean"] for m in METRICS}


def format_table(rows: dict[str, dict]) -> str:
    """A plain-text table, one row per named report, one column per metric (mean ± std); a row
    of plain numbers per metric (a ``difference``) is printed signed."""
    name_w = max(8, *(len(n) for n in rows))
    head = f"{'set':<{name_w}}  " + "  ".join(f"{m:>13}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for name, rep in rows.items():
        cells = "  ".join(f"{rep[m]:+13.2f}" if isinstance(rep[m], float)
                          else f"{rep[m]['mean']:6.2f} ± {rep[m]['std']:4.2f}" for m in METRICS)
        lines.append(f"{name:<{name_w}}  {cells}")
    return "\n".join(lines)


@dataclass
class Report:
    """``record`` is the metrics file's content (``report["acc"]["mean"]``), ``rows`` the
    table's rows, ``summary`` the lines under the table."""

    record: dict
    rows: dict
    summary: str
    path: Path | None = None  # where the record was written

    def __getitem__(self, key: str):
        return self.record[key]

    def table(self) -> str:
        return format_table(self.rows)


@dataclass
class Target:
    """What is evaluated: its set (None: read once the data is loaded), the config naming its
    data set, the run directory or file it came from (None: in memory), and its format."""

    cfg: DistillConfig
    located: sets.Located | None
    set: SyntheticSet | None
    format: str

    @property
    def is_run(self) -> bool:
        return self.format == "run"

    @property
    def run_dir(self) -> Path | None:
        return self.located.path if self.is_run and self.located is not None else None

    def default_file(self, name: str) -> Path:
        """Where ``zodd evaluate`` writes: in the run directory, or beside the set's file."""
        if self.located is None:
            raise ZoddError("an in-memory set has no place of its own: pass out")
        if self.is_run:
            return self.located.path / name
        return self.located.path.parent / f"{self.located.path.stem}-{name}"


def target(what, dataset: str | None, image_size: int | None, baseline: str | None) -> Target:
    """``what`` (a Run, a SyntheticSet or a path) as a :class:`Target`; a set that does not
    name its data set needs ``dataset``."""
    if isinstance(what, Run) and what.path is not None:
        what = what.path
    if isinstance(what, Run):
        return Target(what.config, None, what.synthetic, "run")
    located = None if isinstance(what, SyntheticSet) else sets.locate(what)
    if located is not None and located.format == "run":
        if dataset is not None or image_size is not None:
            raise ZoddError("a run directory names its own data set: drop --dataset and "
                            "--image-size")
        cfg = check(DistillConfig.from_dict(rundir.load_config(located.path)))
        return Target(cfg, located, sets.zodd_set(located), "run")
    if dataset is None:
        kind = located.format if located else "in-memory"
        raise ZoddError(f"{what if located else 'the set'} is a {kind} set, which does not name "
                        "its data set: pass --dataset")
    if baseline is not None:
        raise ZoddError("--baseline needs a run directory (its data set, IPC and seed)")
    syn = what if located is None else sets.zodd_set(located) if located.format == "zodd" else None
    return Target(check(DistillConfig(dataset=dataset, image_size=image_size)), located, syn,
                  located.format if located else "zodd")


def _foreign(tgt: Target, data: datasets.ImageData, pixels: str,
             experiment: int) -> sets.ForeignSet:
    """The set standardised like ``data``, its shape checked against it."""
    if tgt.set is None:
        return sets.read(tgt.located, data, pixels, experiment)
    syn = tgt.set
    if syn.images.shape[1:] != data.train_x.shape[1:] or syn.num_classes > data.num_classes:
        raise ZoddError(f"{tgt.located.path if tgt.located else 'the set'} does not fit "
                        f"{data.name}: images {tuple(syn.images.shape[1:])}, "
                        f"{syn.num_classes} classes")
    return sets.ForeignSet(syn, tgt.format, "learned" if syn.labels.ndim == 2 else "hard")


def _models(models: str | Sequence[str]) -> list[str]:
    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models)
             if m.strip()]
    if not names:
        raise ZoddError("invalid models: give at least one name")
    for name in names:
        check_model(name)
    return names


@dataclass(frozen=True)
class Evaluation:
    """How a set is evaluated: ``zodd evaluate``'s options, ``zodd.evaluate``'s keywords.

    ``dataset``/``image_size``: the data set of a set that does not name its own; ``protocol``
    and the overrides ``epochs``, ``lr``, ``batch_size``, ``augment`` (zodd.evaluation);
    ``models``: the networks trained (default: the protocol's); ``baseline``: evaluate a
    baseline of the run instead (zodd.baselines); ``vs_random``: beside the same-protocol
    random-real set; ``ablate_augment``: the same rows without augmentation; ``scores``:
    DD-Ranking's IOR, HLR, LRS and ARS (zodd.scores; ``full_epochs``: the full-data networks'
    epochs); ``pixels``/``experiment``: how another tool's file is read (zodd.sets); ``out``:
    write the record there; ``write``: where ``zodd evaluate`` writes it (in the run
    directory, or beside the set's file)."""

    dataset: str | None = None
    protocol: str = DEFAULT_PROTOCOL
    models: str | Sequence[str] | None = None
    seeds: int = 3
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    augment: str | None = None
    baseline: str | None = None
    vs_random: bool = True
    ablate_augment: bool = False
    scores: bool = False
    full_epochs: int | None = None
    device: str = "auto"
    pixels: str = "auto"
    experiment: int = 0
    data_dir: str | None = None
    image_size: int | None = None
    out: str | os.PathLike | None = None
    write: bool = False

    def check(self, tgt: "Target") -> None:
        """What needs no data to refuse."""
        resolve_device(self.device)  # a bad or missing device is reported before any work
        if tgt.format in ("run", "zodd") and self.pixels not in ("auto", "standardised"):
            raise ZoddError("zodd's own sets are standardised: drop --pixels")
        if self.scores and (self.baseline is not None or not self.vs_random):
            raise ZoddError("--scores compares the set with its random baseline: drop "
                            + ("--baseline" if self.baseline is not None else "--no-vs-random"))
        if self.full_epochs is not None and not self.scores:
            raise ZoddError("--full-epochs sets the full-data networks of --scores: add --scores")
        if self.out is None and self.write:
            where = tgt.default_file("metrics.json").parent
            if not rundir.writable(where):
                raise ZoddError(f"{where} is not writable: pass --out")

    def configs(self, names: list[str], cfg: DistillConfig) -> dict[str, EvalConfig]:
        """Each network's EvalConfig under the protocol (ConvNet at the run's shape)."""
        chosen = {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                  "augment": self.augment}
        return {name: protocol_config(self.protocol, cfg.dataset, seeds=self.seeds,
                                      device=self.device, model=name, **chosen,
                                      **({"width": cfg.width, "depth": cfg.depth}
                                         if name == "convnet" else {})) for name in names}


def evaluate(what, dataset: str | None = None, *, settings: Evaluation | None = None,
             progress: Progress | None = None, **given) -> Report:
    """Train fresh networks on a set (a Run, a SyntheticSet, a run directory or any file
    ``zodd.load`` reads) and test them on the data set's test split and its shifts, beside the
    random-real baseline of the same size under the same protocol: ``settings`` (an
    :class:`Evaluation`), with ``dataset`` and the keywords ``given`` over it. A run's earlier
    random baseline under the same protocol is reused."""
    try:
        ev = dataclasses.replace(settings or Evaluation(), **given,
                                 **({"dataset": dataset} if dataset is not None else {}))
    except TypeError as exc:
        raise ZoddError(f"zodd.evaluate: {exc}") from None
    progress = progress or Progress()
    names = _models(ev.models or protocol_model(ev.protocol))
    tgt = target(what, ev.dataset, ev.image_size, ev.baseline)
    ev.check(tgt)
    cfg = tgt.cfg
    data = datasets.for_config(cfg, ev.data_dir, progress)
    if ev.pixels == "zca":
        progress.note(f"whitening {data.name}'s train and test images (ZCA, as MTT's --zca)")
        data = whitened(data)
    foreign = _foreign(tgt, data, ev.pixels, ev.experiment)
    for name in names:  # a network the images are too small for is refused before any work
        build_network(name, data.channels, data.num_classes, data.image_size, cfg.width,
                      cfg.depth)
    ipc, seed = (cfg.ipc, cfg.seed) if tgt.is_run else (sets.random_ipc(foreign.set), 0)
    random_set = synthetic.initialise(data, ipc, "real", torch.Generator().manual_seed(seed))
    if ev.scores and foreign.labels not in ("hard", "learned"):
        raise ZoddError("--scores need hard labels or a zodd run's learned ones; this set's "
                        "are " + foreign.labels)
    vs_random = ev.vs_random
    if ev.baseline is not None:
        made = baselines.make(ev.baseline, foreign.set, random_set, data, cfg)
        foreign = sets.ForeignSet(made, ev.baseline,
                                  "hard" if made.labels.ndim == 1 else "learned")
        vs_random = False
    configs = ev.configs(names, cfg)
    label = ev.baseline or ("synthetic" if tgt.is_run else tgt.format)
    rows, record = _train_all(foreign.set, random_set if vs_random else None, data, configs,
                              label, ev.ablate_augment or ev.scores, tgt.run_dir, progress)
    if ev.scores:
        _score_all(record, foreign, random_set, data, cfg, configs, ev.full_epochs, progress)
    head = record[names[0]]
    report = {**head["set"], "set": label, "format": foreign.format, "labels": foreign.labels,
              "source": str(tgt.located.path) if tgt.located else "in-memory",
              "dataset": cfg.dataset, "note": foreign.note,
              **({"random": head["random"], "vs_random": head["vs_random"]} if vs_random else {}),
              **({"scores": head["scores"]} if ev.scores else {}),
              "runs": record, **({"run": str(tgt.run_dir)} if tgt.run_dir else {})}
    first = configs[names[0]]
    path = Path(ev.out) if ev.out is not None else (
        tgt.default_file(metrics_file(first.augment, ev.baseline, ev.protocol))
        if ev.write else None)
    if path is not None:
        rundir.save_json(report, path)
    return Report(report, rows, _summary(record, names, foreign, first, ev.scores), path)


def _score_all(record: dict, foreign, random_set, data, cfg, configs: dict, full_epochs,
               progress: Progress) -> None:
    """DD-Ranking's scores for each network (``--scores``), into ``record``; for learned
    labels HLR's hard-label accuracy is the set's images with one-hot labels."""
    hard = None
    if foreign.labels == "learned":
        hard = baselines.make("onehot", foreign.set, random_set, data, cfg)
    for name, ecfg in configs.items():
        hard_acc = None if hard is None else evaluate_set(
            hard, data, ecfg, on_seed=_seed_note(progress, ecfg.seeds))["acc"]["mean"]
        record[name]["scores"] = _scores(record, name, data, ecfg, len(foreign.set.labels),
                                         full_epochs, progress, hard_acc)


def _summary(record: dict, names: list[str], foreign, first: EvalConfig, scores: bool) -> str:
    """The lines under the table: labels, the hardest class, the protocol, the shifts."""
    worst = min(record[names[0]]["set"]["per_class"].items(), key=lambda kv: kv[1])
    return (f"labels {foreign.labels}; hardest class ({names[0]}): {worst[0]} "
            f"{worst[1]:.2f}; protocol {first.label}: {first.epochs} epochs, lr "
            f"{first.lr:g}, batch {first.batch_size}, augment {first.augment}"
            + (f"; {foreign.note}" if foreign.note else "") + "\n" + shift_description()
            + "".join(f"\nscores ({name}): " + _score_line(record[name]["scores"])
                      for name in names if scores))


def _train_all(syn: SyntheticSet, random_set: SyntheticSet | None, data,
               configs: dict[str, EvalConfig], label: str, ablate_augment: bool,
               run_dir: Path | None, progress: Progress) -> tuple[dict, dict]:
    """Each model's networks on the set (and with augmentation off when ``ablate_augment``),
    beside the random baseline when one is given: the table's rows and the record's runs."""
    tests = TestSets.build(data)
    rows, record = {}, {}
    for name, ecfg in configs.items():
        variants = {"": ecfg}
        if ablate_augment and ecfg.augment != "none":
            variants["no augment"] = dataclasses.replace(
                ecfg, augment="none", custom=tuple(sorted({*ecfg.custom, "augment"})))
        for tag, vcfg in variants.items():
            key = name + (f", {tag}" if tag else "")
            progress.note(f"{key}: training {vcfg.seeds} network(s), {vcfg.epochs} epochs, "
                          f"augment {vcfg.augment}")
            rep = evaluate_set(syn, data, vcfg, tests=tests,
                               on_seed=_seed_note(progress, vcfg.seeds))
            entry = {"set": rep}
            rows[f"{label} ({key})"] = rep
            if random_set is not None:
                base = _random_report(run_dir, random_set, data, vcfg, tests, progress)
                entry["random"], entry["vs_random"] = base, difference(rep, base)
                rows[f"random real ({key})"] = base
                rows[f"difference ({key})"] = entry["vs_random"]
            record[key] = entry
    return rows, record


def _scores(record: dict, name: str, data, ecfg: EvalConfig, set_size: int,
            full_epochs: int | None, progress: Progress, hard_acc: float | None = None) -> dict:
    """DD-Ranking's scores of model ``name`` from its rows (zodd.scores); ``hard_acc``: the
    set's accuracy with one-hot labels, for a set whose labels are learned."""
    from zodd import scores

    entry = record[name]
    plain = record.get(f"{name}, no augment", entry)  # the protocol has no augmentation: same
    epochs = full_epochs or scores.full_epochs(ecfg, set_size, len(data.train_y))
    full = scores.full_data_accuracy(data, ecfg, epochs, progress=progress)
    return {**scores.scores(entry["set"]["acc"]["mean"], entry["random"]["acc"]["mean"],
                            full["acc"]["mean"], plain["set"]["acc"]["mean"],
                            plain["random"]["acc"]["mean"], hard_acc=hard_acc),
            "full_data_epochs": epochs}


def _score_line(s: dict) -> str:
    return (f"IOR {s['ior']:+.2f}, HLR {s['hlr']:.2f} (full data {s['full_data_acc']:.2f}, "
            f"{s['full_data_epochs']} epochs), "
            f"LRS {s['lrs']:.2f}, ARS {s['ars']:.2f} (DD-Ranking's definitions, weight "
            f"{s['weight']:g})")


def _seed_note(progress: Progress, seeds: int):
    def on_seed(k: int, metrics: dict) -> None:
        progress.update("evaluating", k + 1, seeds, metrics)
        progress.note(f"  seed {k}: " + ", ".join(f"{a} {v:.2f}" for a, v in metrics.items()))
    return on_seed


def _random_report(run_dir: Path | None, random_set, data, ecfg, tests,
                   progress: Progress) -> dict:
    """The random-real baseline under ``ecfg``: a run's earlier metrics_random file when its
    protocol is the same, else evaluated now (and, for a run, kept in that file)."""
    cached = None
    if run_dir is not None and ecfg.model == "convnet":
        cached = run_dir / metrics_file(ecfg.augment, "random", ecfg.protocol)
        try:
            old = json.loads(cached.read_text())
            if not differences(old.get("protocol", {}), protocol_record(ecfg)):
                return old
        except (OSError, ValueError, AttributeError):
            pass
    progress.note(f"random real: training {ecfg.seeds} network(s)")
    rep = evaluate_set(random_set, data, ecfg, tests=tests)
    if cached is not None and rundir.writable(cached.parent):
        rundir.save_json({**rep, "set": "random", "run": str(run_dir)}, cached)
    return rep
