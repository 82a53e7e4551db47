"""Seconds per distillation step by estimator and direction count (no measuring in between).

    python benchmarks/step_cost.py --dataset fashion-mnist --ipc 1 --steps 4
"""
from __future__ import annotations

import argparse
import statistics
import time

from zodd.config import DistillConfig
from zodd.data import load
from zodd.distill import Loop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--directions", default="32,128,512")
    args = ap.parse_args()
    data = load(args.dataset)
    runs = [("autograd", 1)] + [("gaussian", int(m)) for m in args.directions.split(",")]
    for estimator, m in runs:
        loop = Loop(DistillConfig(dataset=args.dataset, ipc=args.ipc, estimator=estimator,
                                  directions=m), data)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            loop.advance()
            times.append(time.perf_counter() - t)
        print(f"{estimator:>9} M={m:<4} s/step: median {statistics.median(times):.2f}, "
              f"all {[round(t, 2) for t in times]}", flush=True)


if __name__ == "__main__":
    main()
