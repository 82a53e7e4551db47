"""Seconds of one evaluation (``zodd.evaluation.evaluate``: the seeds' networks trained on a set and
tested on the test set and its shifts), in-process, with the data loaded and the test sets
built beforehand, so only the evaluation is timed; one-at-a-time training against the seeds'
networks trained together (vmap), on the same set.

    python benchmarks/evaluate_speed.py --dataset fashion-mnist --ipc 10 --device cuda
"""
from __future__ import annotations

import argparse
import time

import torch

from zodd.data import load
from zodd.evaluation import EvalConfig, TestSets, evaluate
from zodd.synthetic import initialise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    data = load(args.dataset)
    started = time.perf_counter()
    tests = TestSets.build(data)
    print(f"test sets built (clusters from the cache when there): "
          f"{time.perf_counter() - started:.2f} s")
    syn = initialise(data, args.ipc, "real", torch.Generator().manual_seed(0))
    evaluate(syn, data, EvalConfig(seeds=1, epochs=1, device=args.device), tests=tests)  # warm-up
    for together in (False, True):
        cfg = EvalConfig(seeds=args.seeds, epochs=args.epochs, device=args.device,
                         together=together)
        started = time.perf_counter()
        report = evaluate(syn, data, cfg, tests=tests)
        print(f"{'together' if together else 'one at a time'}: "
              f"{time.perf_counter() - started:.2f} s for {args.seeds} networks x "
              f"{args.epochs} epochs, acc {report['acc']['mean']:.2f} ± {report['acc']['std']:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
