"""Does `--estimator gaussian` lower the DM objective on digits? The objective is measured on
networks and real batches the run never saw (5 fixed networks, 64 real images per class).

    python benchmarks/gaussian_digits.py --iterations 50 [--lr 1.0] [--estimator autograd]
"""
from __future__ import annotations

import argparse
import time

import torch

from objectives import OBJECTIVES
from zodd.config import DistillConfig
from zodd.data import load
from zodd.distill import distill
from zodd.models import build_model
from zodd.synthetic import initialise
from zodd.types import StepContext


def held_out_dm(data, images: torch.Tensor, nets: int = 5) -> float:
    gen = torch.Generator().manual_seed(123)
    total = 0.0
    for k in range(nets):
        net = build_model(1, 10, 8, seed=1000 + k).requires_grad_(False)
        real = data.train_x[torch.stack([i[torch.randperm(len(i), generator=gen)[:64]]
                                         for i in data.class_indices()])]
        total += float(OBJECTIVES["dm"]().bind(StepContext(net, real, None, 10, seed=k))(images[None]))
    return total / nets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--estimator", default="gaussian")
    args = ap.parse_args()
    data = load("digits")
    cfg = DistillConfig(estimator=args.estimator, iterations=args.iterations, lr=args.lr)
    start = initialise(data, cfg.ipc, "real", torch.Generator().manual_seed(cfg.seed)).images
    t = time.perf_counter()
    result = distill(cfg, data)
    print(f"{args.estimator}, {args.iterations} iterations, lr {args.lr or 'default'}: "
          f"{result.queries} queries, {time.perf_counter() - t:.1f} s; held-out DM "
          f"{held_out_dm(data, start):.3f} -> {held_out_dm(data, result.synthetic.images):.3f}")


if __name__ == "__main__":
    main()
