"""Distil with and without the robust updater, evaluate both and the random-real baseline.

    python benchmarks/engine.py --dataset digits --out runs/bench-digits
    python benchmarks/engine.py --dataset fashion-mnist --iterations 200 --batch-size 64 \
        --out runs/bench-fmnist

Runs the CLI exactly as a user would (each command is printed), skips runs whose files exist
(resumable), and prints a Markdown table of the metrics (mean ± std over evaluation seeds) with
each run's distillation time.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

METRICS = ("acc", "cluster_min", "noise", "blur", "invert")


def sh(cmd: list[str]) -> None:
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--objective", default="dm")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    rows = {}
    for updater in ("robust", "ce"):
        run = args.out / updater
        if not (run / "synthetic.pt").exists():
            sh(["zodd", "distill", "--dataset", args.dataset, "--ipc", str(args.ipc),
                "--objective", args.objective, "--updater", updater, "--iterations",
                str(args.iterations), "--batch-size", str(args.batch_size), "--seed",
                str(args.seed), "--out", str(run), "--overwrite", "--quiet"])
        if not (run / "metrics.json").exists():
            sh(["zodd", "evaluate", str(run), "--seeds", str(args.eval_seeds), "--quiet"])
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        rows[updater] = (json.loads((run / "metrics.json").read_text()), log[-1]["seconds"],
                         len(log))
    base = args.out / "robust" / "metrics_random.json"
    if not base.exists():
        sh(["zodd", "evaluate", str(args.out / "robust"), "--baseline", "random", "--seeds",
            str(args.eval_seeds), "--quiet"])
    rows = {"random real": (json.loads(base.read_text()), None, 0), **rows}

    print("\n| set | iterations | distil s | " + " | ".join(METRICS) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for name, (m, seconds, its) in rows.items():
        cells = " | ".join(f"{m[k]['mean']:.2f} ± {m[k]['std']:.2f}" for k in METRICS)
        print(f"| {name} | {its} | {'' if seconds is None else f'{seconds:.0f}'} | {cells} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
