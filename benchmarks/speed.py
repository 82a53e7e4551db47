"""Seconds per distillation iteration, and where the time goes, for several settings side by
side: each setting is a ``zodd.loop.Loop`` built from ``zodd distill`` flags, and its own
``advance()`` is timed, with its parts (the network update, the objective's bind, the estimate
and the step) read through timers wrapped around the loop's methods. The settings' iterations
alternate in one process, so every setting sees the same machine load; the first round warms up
and is dropped.

    python benchmarks/speed.py --dataset digits --repeats 7     # robust against CE
    python benchmarks/speed.py --dataset fashion-mnist --batch-size 64 --repeats 5
    python benchmarks/speed.py --dataset digits --setting "IDM=--recipe idm --updater ce" \
        --setting "IDM + RDD=--recipe idm --updater robust"      # the paper's +43 %
    python benchmarks/speed.py --dataset fashion-mnist --ipc 1 --repeats 4 --setting autograd \
        --setting "gaussian M=32=--estimator gaussian --directions 32" \
        --setting "gaussian M=128=--estimator gaussian --directions 128"

``--grid`` times, for dm and gm x native / ce / robust x autograd / gaussian, zodd's iteration
beside the floor (``benchmarks/bare.py``: the same arithmetic in plain torch, no zodd code),
alternating in one process, and prints zodd / floor per row:

    python benchmarks/speed.py --grid --dataset fashion-mnist --ipc 10 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bare import BareLoop, seconds
from harness import config_from_flags, labelled
from zodd.config import DistillConfig
from zodd.data import load
from zodd.loop import Loop
from zodd.plan import resolve

PARTS = ("network update", "bind objective", "estimate", "iteration")


def _timed(record: dict, part: str, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        out = fn(*args, **kwargs)
        record.setdefault(part, []).append(time.perf_counter() - started)
        return out
    return wrapper


def instrumented(cfg: DistillConfig, data) -> tuple[Loop, dict]:
    """A loop whose parts record their seconds into the returned dict."""
    loop = Loop(resolve(cfg, data), data)
    record: dict[str, list[float]] = {}
    network = loop.network
    network.update = _timed(record, "network update", network.update)
    if network.queue is not None:  # IDM: the update is the queue's training after S's step
        network.queue.train = _timed(record, "network update", network.queue.train)
    if network.pool is not None:  # FRePo: the drawn pool network's step after S's
        network.pool.train = _timed(record, "network update", network.pool.train)
    loop._bind = _timed(record, "bind objective", loop._bind)
    loop.stepper.propose = _timed(record, "estimate", loop.stepper.propose)
    loop.advance = _timed(record, "iteration", loop.advance)
    return loop, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--objective", default="dm")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--setting", action="append", dest="settings", metavar="LABEL=FLAGS",
                    help="zodd distill flags to time (repeatable) [default: robust and ce]")
    ap.add_argument("--grid", action="store_true", help="every row against the bare floor")
    ap.add_argument("--rows", default="", help="with --grid: only rows containing this text")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--flags", default="", help="more zodd distill flags for every setting")
    args = ap.parse_args()
    if args.grid:
        return grid(args)

    data = load(args.dataset)
    base = config_from_flags(args.flags, DistillConfig(
        dataset=args.dataset, ipc=args.ipc, objective=args.objective, batch_size=args.batch_size,
        iterations=args.repeats + 1, device=args.device))
    specs = args.settings or ["robust=--updater robust", "ce=--updater ce"]
    loops = {label: instrumented(config_from_flags(flags, base), data)
             for label, flags in map(labelled, specs)}
    for rep in range(args.repeats + 1):
        for loop, record in loops.values():
            loop.advance()
            if rep == 0:
                record.clear()  # warm-up
    med = {label: {k: statistics.median(v) for k, v in record.items()}
           for label, (_, record) in loops.items()}
    print(f"{args.dataset}, IPC {args.ipc}, {args.objective}, {args.batch_size} real per class, "
          f"median of {args.repeats} ({torch.get_num_threads()} threads)")
    print("| part | " + " | ".join(f"{label} s" for label in loops) + " |")
    print("|---|" + "---|" * len(loops))
    for part in PARTS:
        print(f"| {part} | " + " | ".join(f"{med[label].get(part, 0):.4f}" for label in loops)
              + " |")
    first = next(iter(loops))
    for label in list(loops)[1:]:
        ratio = med[first]["iteration"] / med[label]["iteration"]
        print(f"{first} / {label} per iteration: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")


def _sync(device: str):
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def grid(args) -> None:
    data = load(args.dataset)
    sync = _sync(args.device)
    print(f"{args.dataset}, IPC {args.ipc}, {args.batch_size} real per class, {args.device}, "
          f"median of {args.repeats} after one warm-up ({torch.get_num_threads()} threads)")
    print("| row | floor s | zodd s | zodd / floor |\n|---|---|---|---|")
    for objective in ("dm", "gm"):
        for updater in ("native", "ce", "robust"):
            for estimator in ("autograd", "gaussian"):
                row = f"{objective} {updater} {estimator}"
                if args.rows and args.rows not in row:
                    continue
                cfg = config_from_flags(args.flags, DistillConfig(
                    dataset=args.dataset, ipc=args.ipc, objective=objective, updater=updater,
                    estimator=estimator, batch_size=args.batch_size, device=args.device))
                plan = resolve(cfg, data)
                loop = Loop(plan, data)
                bare = BareLoop(data.train_x, data.train_y, data.num_classes, args.ipc,
                                objective, updater, estimator, plan.batch_size, plan.directions,
                                plan.sigma, plan.lr, plan.width, plan.depth, plan.reinit_every,
                                args.device)
                times: dict[str, list[float]] = {"floor": [], "zodd": []}
                for rep in range(args.repeats + 1):
                    floor = seconds(bare.iteration, 1, sync)
                    mine = seconds(loop.advance, 1, sync)
                    if rep:
                        times["floor"] += floor
                        times["zodd"] += mine
                f, z = (statistics.median(times[k]) for k in ("floor", "zodd"))
                print(f"| {row} | {f:.4f} | {z:.4f} | {z / f:.2f} |", flush=True)


if __name__ == "__main__":
    main()
