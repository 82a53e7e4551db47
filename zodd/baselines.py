"""The baselines a run's set is judged against (``zodd evaluate RUN --baseline NAME``), each a
set of the run's size made from its data set, IPC and seed:

* ``random``: the random real images the run started from (``INITS["real"]``), one-hot labels.
* ``onehot``: the run's own images with one-hot labels: beside the set itself, what its learned
  labels carry.
* ``label-solve``: the random real images with labels solved in closed form (KIP's "Label
  Solve", Nguyen et al., ICLR 2021): the ``[N, classes]`` labels Y_s that make kernel
  regression from the images best predict ``LABEL_SOLVE_TARGETS`` real training images a class
  (centred one-hot targets Y_t), in the least-squares sense,

      A = K_ts (K_ss + lambda I)^-1,  Y_s = A^+ Y_t  (torch.linalg.lstsq),

  on the features of the run's own network (``--network``, its width and depth) at a random
  initialisation (seed: the run's), lambda = ``LABEL_SOLVE_RIDGE`` times the mean of K_ss's
  diagonal (FRePo's ridge).
"""
from __future__ import annotations

import torch
from torch import Tensor

from zodd.config import DistillConfig
from zodd.data import ImageData, draw_per_class
from zodd.labels import centred
from zodd.models import build_network
from zodd.synthetic import SyntheticSet
from zodd.types import Registry

LABEL_SOLVE_TARGETS = 500  # real training images a class to predict (at most the smallest)
LABEL_SOLVE_RIDGE = 1e-6


def _random(run: SyntheticSet, random: SyntheticSet, data: ImageData,
            cfg: DistillConfig) -> SyntheticSet:
    return random


def _onehot(run: SyntheticSet, random: SyntheticSet, data: ImageData,
            cfg: DistillConfig) -> SyntheticSet:
    per_class = len(run.images) // run.num_classes
    hard = torch.arange(run.num_classes).repeat_interleave(per_class)
    return SyntheticSet(run.images, hard, run.num_classes)


@torch.no_grad()
def solve_labels(support: Tensor, targets: Tensor, target_labels: Tensor, net: torch.nn.Module,
                 classes: int, ridge: float = LABEL_SOLVE_RIDGE) -> Tensor:
    """Y_s for ``support`` images so that kernel regression on ``net.embed`` features best
    predicts ``targets``' centred one-hot labels (module docstring)."""
    fs = net.embed(support).double()
    ft = torch.cat([net.embed(targets[i:i + 500]) for i in range(0, len(targets), 500)]).double()
    kss = fs @ fs.T
    lam = ridge * kss.diagonal().mean()
    a = torch.linalg.solve(kss + lam * torch.eye(len(fs), dtype=kss.dtype), fs @ ft.T).T
    return torch.linalg.lstsq(a, centred(target_labels, classes).double()).solution.float()


def _label_solve(run: SyntheticSet, random: SyntheticSet, data: ImageData,
                 cfg: DistillConfig) -> SyntheticSet:
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    pools = data.class_indices()
    n = min(LABEL_SOLVE_TARGETS, min(len(p) for p in pools))
    picks = draw_per_class(pools, n, gen).flatten()
    net = build_network(cfg.network, data.channels, data.num_classes, data.image_size,
                        cfg.width, cfg.depth, seed=cfg.seed).eval()
    y = solve_labels(random.images, data.train_x[picks], data.train_y[picks], net,
                     data.num_classes)
    return SyntheticSet(random.images, y, random.num_classes)


BASELINES = Registry("baseline", [
    ("random", _random, "a random real subset drawn with the run's data set, IPC and seed (the "
     "distillation's initialisation), one-hot labels"),
    ("onehot", _onehot, "the run's own images with one-hot labels (what learned labels carry)"),
    ("label-solve", _label_solve, "the random real subset with labels solved in closed form by "
     "kernel regression on the run's network's features (KIP's Label Solve)"),
])


def make(name: str, run: SyntheticSet, random: SyntheticSet, data: ImageData,
         cfg: DistillConfig) -> SyntheticSet:
    """Baseline ``name`` of a run whose set is ``run`` and random start ``random``."""
    return BASELINES[BASELINES.check(name, "baseline")](run, random, data, cfg)
