"""How much faster, and how different, are the ConvNet's passes through ``--compile``
(zodd.compiled) than eager ones? Fashion-MNIST-shaped batches, ConvNet-3 of width 128, a fresh
network each round (they share one compiled code: the count of compiled graphs is printed).

    python benchmarks/compile_check.py [--images 2560] [--repeats 3]

Prints the one-time compile seconds, the median seconds of the no-grad embedding and of a
training forward + backward, eager and compiled, and the largest difference: embeddings relative
to their largest value, gradients relative to the largest gradient.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from zodd.compiled import CompiledNet
from zodd.data import load
from zodd.models import build_model


def seconds(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def gradients(forward, net, x, y):
    net.zero_grad(set_to_none=True)
    F.cross_entropy(forward(x), y).backward()
    return [p.grad.clone() for p in net.parameters()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2560)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = load("fashion-mnist")
    x, y = data.train_x[:args.images], data.train_y[:args.images]
    times: dict[str, list[float]] = {k: [] for k in ("embed eager", "embed compiled",
                                                     "train eager", "train compiled")}
    worst = {"embeddings": 0.0, "gradients": 0.0}
    for r in range(args.repeats + 1):  # round 0 compiles
        net = build_model(1, 10, 28, seed=r)
        fast = CompiledNet(net)
        with torch.no_grad():
            t_eager, a = seconds(lambda: net.embed(x))
            t_fast, b = seconds(lambda: fast.embed(x))
        g_eager, ga = seconds(lambda: gradients(net, net, x, y))
        g_fast, gb = seconds(lambda: gradients(fast, net, x, y))
        if r == 0:
            print(f"compile: embedding {t_fast - t_eager:.1f} s, training pass "
                  f"{g_fast - g_eager:.1f} s", flush=True)
            continue
        for k, t in zip(times, (t_eager, t_fast, g_eager, g_fast)):
            times[k].append(t)
        worst["embeddings"] = max(worst["embeddings"],
                                  float((a - b).abs().max() / a.abs().max()))
        scale = max(float(g.abs().max()) for g in ga)
        worst["gradients"] = max(worst["gradients"],
                                 max(float((u - v).abs().max()) for u, v in zip(ga, gb)) / scale)
    print(f"{args.images} images, median of {args.repeats} ({torch.get_num_threads()} threads)")
    for k, v in times.items():
        print(f"{k}: {statistics.median(v):.3f} s")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"eager / compiled: embedding {med['embed eager'] / med['embed compiled']:.2f} x, "
          f"training pass {med['train eager'] / med['train compiled']:.2f} x")
    print(f"largest difference: embeddings {worst['embeddings']:.1e}, gradients "
          f"{worst['gradients']:.1e} (relative)")
    print(f"graphs compiled: {torch._dynamo.utils.counters['stats']['unique_graphs']}")


if __name__ == "__main__":
    main()
