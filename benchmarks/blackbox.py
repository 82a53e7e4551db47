"""Distilling against black boxes with no gradient.

    python benchmarks/blackbox.py prototype --seeds 3 --iterations 200
    python benchmarks/blackbox.py workers --mode sleep --repeats 3

prototype: `zodd distill --objective prototype --estimator gaussian` on digits, and the
nearest-prototype error on the digits test set before (the random-real initialisation) and after.
workers: seconds per step with `--workers 0` and `--workers 2` against a black box costing 0.2 s
per candidate (benchmarks/slow_evaluator.py), runs alternating, median over steps 2.. of each run.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from harness import mean_std, sh

HERE = Path(__file__).resolve().parent


def prototype(args) -> None:
    from zodd.data import load
    from zodd.nearest import assign_clusters
    from zodd.synthetic import initialise, load as load_set

    data = load("digits")

    def test_error(images: torch.Tensor, labels: torch.Tensor) -> float:
        nearest = assign_clusters(data.test_x, images)
        return float((labels[nearest] != data.test_y).float().mean() * 100)

    before, after = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            run = Path(tmp) / f"s{seed}"
            sh(["zodd", "distill", "--objective", "prototype", "--estimator", "gaussian",
                "--iterations", str(args.iterations), "--seed", str(seed), "--quiet",
                "--out", str(run), *shlex.split(args.flags)])
            init = initialise(data, 10, "real", torch.Generator().manual_seed(seed))
            s = load_set(run)
            before.append(test_error(init.images, init.labels))
            after.append(test_error(s.images, s.labels))
            print(f"seed {seed}: test error {before[-1]:.2f} % -> {after[-1]:.2f} %", flush=True)
    (b_mean, b_std), (a_mean, a_std) = mean_std(before), mean_std(after)
    print(f"\n| set | nearest-prototype test error (%) |\n|---|---|\n"
          f"| random real (init) | {b_mean:.2f} ± {b_std:.2f} |\n"
          f"| distilled, prototype + gaussian {args.flags}, {args.iterations} it. | "
          f"{a_mean:.2f} ± {a_std:.2f} |")
    print("paired improvement per seed:", [round(b - a, 2) for b, a in zip(before, after)])


def workers(args) -> None:
    per_step: dict[int, list[float]] = {0: [], 2: []}
    losses: dict[int, list] = {}
    evaluator = f"{sys.executable} {HERE / 'slow_evaluator.py'} {args.mode} {args.cost} {{input}}"
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for n in (0, 2):
                run = Path(tmp) / f"w{n}-{rep}"
                sh(["zodd", "distill", "--objective", "command", "--command", evaluator,
                    "--directions", str(args.directions), "--iterations", str(args.iterations),
                    "--ipc", "1", "--workers", str(n), "--quiet", "--out", str(run)])
                rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
                times = [b["seconds"] - a["seconds"] for a, b in zip(rows, rows[1:])]
                per_step[n] += times
                losses.setdefault(n, [r["loss"] for r in rows])
    m0, m2 = statistics.median(per_step[0]), statistics.median(per_step[2])
    k = args.directions + 1
    print(f"\nblack box: {args.cost} s per candidate ({args.mode}), {k} candidates per step, "
          f"{args.repeats} runs x {args.iterations - 1} steps each")
    print("| workers | median s/step | speed-up |\n|---|---|---|")
    print(f"| 0 | {m0:.3f} | 1.00 |\n| 2 | {m2:.3f} | {m0 / m2:.2f} |")
    print("same losses with 0 and 2 workers:", losses[0] == losses[2])


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prototype")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--flags", default="", help="more zodd distill flags, e.g. '--sigma 0.3'")
    w = sub.add_parser("workers")
    w.add_argument("--mode", choices=["sleep", "busy"], default="sleep")
    w.add_argument("--cost", type=float, default=0.2)
    w.add_argument("--directions", type=int, default=32)
    w.add_argument("--iterations", type=int, default=5)
    w.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    prototype(args) if args.what == "prototype" else workers(args)


if __name__ == "__main__":
    main()
