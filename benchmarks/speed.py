"""Seconds per distillation iteration with the robust updater and with plain CE, and where the
time goes. Robust and CE iterations alternate in one process so both see the same machine load.

    python benchmarks/speed.py --dataset digits --repeats 7
    python benchmarks/speed.py --dataset fashion-mnist --batch-size 64 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from objectives import OBJECTIVES
from zodd.data import draw_per_class, load
from zodd.estimators import Autograd
from zodd.models import build_model
from zodd.robust import RobustUpdater
from zodd.synthetic import initialise
from zodd.types import StepContext


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--objective", default="dm")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    data = load(args.dataset)
    gen = torch.Generator().manual_seed(0)
    syn = initialise(data, args.ipc, "real", gen)
    per_class = data.class_indices()
    objective = OBJECTIVES[args.objective]()
    parts: dict[str, dict[str, list[float]]] = {m: {} for m in ("robust", "ce")}

    def timed(mode: str, part: str, fn):
        t = time.perf_counter()
        out = fn()
        parts[mode].setdefault(part, []).append(time.perf_counter() - t)
        return out

    for rep in range(args.repeats + 1):  # the first round warms up and is dropped
        for mode in ("robust", "ce"):
            net = build_model(data.channels, data.num_classes, data.image_size, seed=rep)
            updater = RobustUpdater(mode=mode)
            opt = updater.optimizer(net)
            n = min(args.batch_size, min(len(i) for i in per_class))
            picks = draw_per_class(per_class, n, gen)
            real = data.train_x[picks]
            if mode == "robust":  # measured alone; step() below clusters again, as distill does
                timed(mode, "clustering (inside the update)",
                      lambda: updater.cluster(net, real, syn.by_class(), gen))
            start = time.perf_counter()
            timed(mode, "network update", lambda: updater.step(net, opt, real, syn.by_class(), gen))
            net.requires_grad_(False)
            f = timed(mode, "bind objective", lambda: objective.bind(
                StepContext(net, real, syn.labels, data.num_classes, seed=rep)))
            timed(mode, "estimate", lambda: Autograd().estimate(f, syn.images, gen))
            parts[mode].setdefault("iteration", []).append(time.perf_counter() - start)
        if rep == 0:
            parts = {m: {} for m in ("robust", "ce")}

    med = {m: {k: statistics.median(v) for k, v in p.items()} for m, p in parts.items()}
    print(f"{args.dataset}, IPC {args.ipc}, {args.objective}, {args.batch_size} real per class, "
          f"median of {args.repeats} ({torch.get_num_threads()} threads)")
    print("| part | robust s | CE s |")
    print("|---|---|---|")
    for k in ("clustering (inside the update)", "network update", "bind objective", "estimate", "iteration"):
        print(f"| {k} | {med['robust'].get(k, 0):.4f} | {med['ce'].get(k, 0):.4f} |")
    ratio = med["robust"]["iteration"] / med["ce"]["iteration"]
    print(f"robust / CE per iteration: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
