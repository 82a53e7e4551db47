"""The field's fairness scores for a distilled set (DD-Ranking's definitions), from accuracies
measured under one protocol, beside a random real subset of the same size:

* ``ior``, improvement over random: acc(set) - acc(random), the set with its own labels (one-hot,
  or those it learned), random: the random real subset of the same size with one-hot labels,
  under the same protocol (DD-Ranking trains its random subset with the method's label
  strategy, a teacher's soft labels; a learned-label set has no teacher, so zodd keeps random's
  one-hot labels and reports Label Solve, random images with labels solved for them, beside:
  ``zodd evaluate --baseline label-solve``);
* ``hlr``, hard-label recovery: acc(full data) - acc(set with one-hot labels: for a set that
  learned its labels, its images with one-hot labels), the gap left to the whole training
  set (networks trained on every training image with the protocol's optimiser and augmentation
  for ``full_epochs``: at least ``FULL_EPOCHS``, or the set's own number of optimiser steps;
  ``full_data_accuracy``, cached once per data set, protocol, architecture and epochs);
* ``lrs``, label-robust score: (e^a - e^-1) / (e - e^-1), a = w ior - (1 - w) hlr;
* ``ars``, augmentation-robust score: (e^b - e^-1) / (e - e^-1),
  b = w (acc(set) - acc(random))_augmented + (1 - w) (acc(set) - acc(random))_not augmented;

with the accuracies as fractions in [0, 1] inside the exponentials and w = ``WEIGHT`` (0.5, as
DD-Ranking's default); each score is reported in percent. (DD-Ranking's README defines the
exponentials on fractions; its code passes percentage points, where any gap of a few points
saturates the map, so an LRS of 0 or 100 would say nothing: zodd follows the README.) Under a
protocol without augmentation both gaps of ``ars`` are the same one.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from zodd.data import ImageData, default_data_dir
from zodd.evaluation import EvalConfig, TestSets, evaluate
from zodd.rundir import save_json
from zodd.synthetic import SyntheticSet
from zodd.types import Progress

WEIGHT = 0.5
FULL_EPOCHS = 20  # at least; on this machine's budget the full data is a reference, not a race


def _squash(x: float) -> float:
    """DD-Ranking's map of [-1, 1] onto [0, 1]: (e^x - e^-1) / (e - e^-1)."""
    return (math.exp(x) - math.exp(-1)) / (math.e - math.exp(-1))


def label_robust(ior: float, hlr: float, weight: float = WEIGHT) -> float:
    """LRS in percent from IOR and HLR in percent points."""
    return 100 * _squash((weight * ior - (1 - weight) * hlr) / 100)


def augmentation_robust(gap_augmented: float, gap_plain: float, weight: float = WEIGHT) -> float:
    """ARS in percent from the set's gaps over random (percent points) with and without the
    protocol's augmentation."""
    return 100 * _squash((weight * gap_augmented + (1 - weight) * gap_plain) / 100)


def scores(acc: float, random_acc: float, full_acc: float, acc_plain: float,
           random_plain: float, weight: float = WEIGHT,
           hard_acc: float | None = None) -> dict[str, float]:
    """The four scores (percent) from mean accuracies in percent: the set's and random's under
    the protocol, the full data's, and the set's and random's without augmentation;
    ``hard_acc``: the set's with one-hot labels where its own are learned (None: ``acc``)."""
    ior, hlr = acc - random_acc, full_acc - (acc if hard_acc is None else hard_acc)
    return {"ior": ior, "hlr": hlr, "lrs": label_robust(ior, hlr, weight),
            "ars": augmentation_robust(acc - random_acc, acc_plain - random_plain, weight),
            "full_data_acc": full_acc, "weight": weight}


def full_epochs(cfg: EvalConfig, set_size: int, train_size: int) -> int:
    """``FULL_EPOCHS``, or more where the set's own training makes more optimiser steps than
    that many epochs of the whole training set (a small data set such as digits), at most the
    protocol's epochs: the full data never trains less than the set it is compared with."""
    steps = cfg.epochs * math.ceil(set_size / cfg.batch_size)
    return min(cfg.epochs, max(FULL_EPOCHS, math.ceil(steps / math.ceil(
        train_size / cfg.batch_size))))


def full_data_accuracy(data: ImageData, cfg: EvalConfig, epochs: int | None = None,
                       progress: Progress | None = None, cache: Path | None = None) -> dict:
    """The test accuracy (mean and std over ``cfg.seeds``) of networks trained on the whole
    training set under ``cfg`` for ``epochs`` (default ``FULL_EPOCHS``) epochs; kept in
    ``cache`` (default: the data dir's full-data/ folder), keyed by data set, protocol,
    architecture, epochs and seeds."""
    progress = progress or Progress()
    epochs = epochs or FULL_EPOCHS
    cfg = dataclasses.replace(cfg, epochs=epochs)
    name = (f"{data.name}-{cfg.protocol}-{cfg.model}-w{cfg.width}-d{cfg.depth}"
            f"-{cfg.augment}-{cfg.schedule}-e{epochs}-s{cfg.seeds}.json").replace("/", "_")
    path = (cache or default_data_dir() / "full-data") / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    progress.note(f"full data: training {cfg.seeds} network(s) on all {len(data.train_y)} "
                  f"training images, {epochs} epochs (once; kept in {path})")
    everything = SyntheticSet(data.train_x, data.train_y, data.num_classes)

    def on_seed(k: int, metrics: dict) -> None:
        progress.update("full data", k + 1, cfg.seeds, metrics)

    report = evaluate(everything, data, cfg, tests=TestSets.build(data), on_seed=on_seed)
    result = {"acc": report["acc"], "epochs": epochs, "seeds": cfg.seeds, "model": cfg.model,
              "protocol": cfg.label, "augment": cfg.augment, "dataset": data.name}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_json(result, path)
    except OSError:
        progress.note(f"full data: could not keep the result in {path}")
    return result
