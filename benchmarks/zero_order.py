"""Zero-order distillation against autograd: how far each estimator and structure flag gets at an
equal query budget or an equal wall time, on the DM objective.

The objective is measured on networks and real batches the run never sees (``HeldOutDM``: 5 fixed
networks, 64 real images per class, fixed augmentation), so curves from different methods are
comparable; measuring happens in ``distill``'s ``on_step`` callback and is not counted in a
run's time. A method is ``LABEL=FLAGS``: a label for the tables and plots and the ``zodd distill``
flags that make it (read by the command line's own parser); a bare ``autograd`` or ``gaussian``
needs no flags. ``autograd`` is the reference.

    python benchmarks/zero_order.py --dataset digits --ipc 10 --max-queries 20000 \
        --method autograd --method "gaussian+low2=--estimator gaussian --lowres 2" --out DIR
    python benchmarks/zero_order.py --dataset fashion-mnist --ipc 1 --max-seconds 600 \
        --autograd-seconds 60 --method autograd --method gaussian --seeds 3 --evaluate --out DIR

Writes ``DIR/curves.json`` (held-out DM against queries and seconds per run), ``DIR/table.json``
and ``DIR/objective-vs-queries.png`` / ``objective-vs-seconds.png``; prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from harness import HeldOutDM, config_from_flags, labelled, stats
from zodd.config import DistillConfig
from zodd.data import ImageData, load
from zodd.driver import distill
from zodd.evaluation import EvalConfig, TestSets, evaluate
from zodd.plan import resolve
from zodd.synthetic import SyntheticSet, initialise


def method(spec: str, base: DistillConfig) -> tuple[str, DistillConfig]:
    """``LABEL=FLAGS`` (or a bare estimator name) -> (label, config)."""
    label, flags = labelled(spec)
    return label, config_from_flags(flags, base)


def run(cfg: DistillConfig, data: ImageData, measure: HeldOutDM, max_queries: int | None,
        points: int = 20) -> dict:
    """One run (``cfg.max_seconds`` and ``cfg.iterations`` bound it; ``max_queries`` stops it
    before a step would pass it), the held-out objective measured about ``points`` times along
    it, untimed."""
    torch.manual_seed(cfg.seed)
    init = resolve(cfg, data).init  # the matching objectives start from real images
    start = initialise(data, cfg.ipc, init, torch.Generator().manual_seed(cfg.seed)).images
    curve = [{"queries": 0, "seconds": 0.0, "objective": measure(start)}]
    every_s = (cfg.max_seconds or math.inf) / points
    every_q = (max_queries or math.inf) / points
    due = {"s": every_s, "q": every_q}
    last: dict = {}

    def stop() -> bool:  # a step costs what the first one did
        return max_queries is not None and last["queries"] + last["first"] > max_queries

    def on_step(row: dict, images: torch.Tensor) -> None:
        last.update(row, first=last.get("first", row["queries"]))
        if row["seconds"] >= due["s"] or row["queries"] >= due["q"] or stop():
            curve.append({"queries": row["queries"], "seconds": row["seconds"],
                          "objective": measure(images), "step": row["step"]})
            while due["s"] <= row["seconds"]:
                due["s"] += every_s
            while due["q"] <= row["queries"]:
                due["q"] += every_q

    result = distill(cfg, data, on_step=on_step, should_stop=stop)
    if curve[-1].get("step") != result.rows[-1]["step"]:  # the last step, always measured
        row = result.rows[-1]
        curve.append({"queries": row["queries"], "seconds": row["seconds"],
                      "objective": measure(result.synthetic.images), "step": row["step"]})
    return {"curve": curve, "images": result.synthetic.images.detach().clone(),
            "labels": result.synthetic.labels.cpu(),
            "steps": len(result.rows), "queries": result.queries,
            "seconds": result.rows[-1]["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--method", action="append", dest="methods", metavar="LABEL=FLAGS",
                    help="a method to run (repeatable); default: autograd and gaussian")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--max-queries", type=int)
    ap.add_argument("--max-seconds", type=float)
    ap.add_argument("--autograd-seconds", type=float,
                    help="autograd's own time budget (default: --max-seconds)")
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--autograd-iterations", type=int, default=300,
                    help="autograd's iteration cap (its queries are its iterations)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--evaluate", action="store_true", help="train networks on each final set")
    ap.add_argument("--eval-seeds", type=int, default=1)
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load(args.dataset)
    measure = HeldOutDM(data)
    base = DistillConfig(dataset=args.dataset, ipc=args.ipc, iterations=args.iterations,
                         batch_size=args.batch_size, max_seconds=args.max_seconds)
    tests = TestSets.build(data) if args.evaluate else None
    ecfg = EvalConfig(seeds=args.eval_seeds, epochs=args.eval_epochs)
    methods = [method(spec, base) for spec in args.methods or ["autograd", "gaussian"]]
    results, table = {}, {}
    if args.evaluate:  # the random-real initialisation, the floor every method starts from
        accs = []
        for seed in range(args.seeds):
            init = initialise(data, args.ipc, "real", torch.Generator().manual_seed(seed))
            accs.append(evaluate(init, data, ecfg, tests=tests)["acc"]["mean"])
        table["random-real"] = {"acc": stats(accs)}
        print(f"random-real: acc {_fmt(table['random-real']['acc'])}", flush=True)
    for name, method_cfg in methods:
        runs = []
        for seed in range(args.seeds):
            cfg = replace(method_cfg, seed=seed)
            if name == "autograd":
                cfg = replace(cfg, iterations=args.autograd_iterations,
                              max_seconds=args.autograd_seconds or args.max_seconds)
            r = run(cfg, data, measure, args.max_queries)
            if args.evaluate:
                syn = SyntheticSet(r["images"], r["labels"], data.num_classes)  # decoded
                rep = evaluate(syn, data, ecfg, tests=tests)
                r["acc"], r["cluster_min"] = rep["acc"]["mean"], rep["cluster_min"]["mean"]
            runs.append(r)
            print(f"{name} seed {seed}: {r['steps']} steps, {r['queries']} queries, "
                  f"{r['seconds']:.1f} s, held-out DM {r['curve'][0]['objective']:.4f} -> "
                  f"{r['curve'][-1]['objective']:.4f}"
                  + (f", acc {r['acc']:.2f}" if "acc" in r else ""), flush=True)
        results[name] = [{k: v for k, v in r.items() if k not in ("images", "labels")}
                         for r in runs]
        table[name] = {"objective": stats([r["curve"][-1]["objective"] for r in runs]),
                       "start": runs[0]["curve"][0]["objective"],
                       "queries": stats([r["queries"] for r in runs]),
                       "seconds": stats([r["seconds"] for r in runs]),
                       "steps": stats([r["steps"] for r in runs])}
        if args.evaluate:
            table[name]["acc"] = stats([r["acc"] for r in runs])
            table[name]["cluster_min"] = stats([r["cluster_min"] for r in runs])
        _write(args, results, table)
    _report(table)


def _fmt(s: dict) -> str:
    return f"{s['mean']:.4g} ± {s['std']:.2g}"


def _write(args, results: dict, table: dict) -> None:
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "curves.json").write_text(json.dumps({"args": meta, "runs": results}))
    (args.out / "table.json").write_text(json.dumps({"args": meta, "table": table}, indent=1))
    _plot(results, args.out, f"{args.dataset} IPC {args.ipc}: held-out DM")


def _plot(results: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for axis in ("queries", "seconds"):
        fig, ax = plt.subplots(figsize=(10, 4.8))
        for name, runs in results.items():
            for i, r in enumerate(runs):
                xs = [max(p[axis], 1e-3 if axis == "seconds" else 1) for p in r["curve"]]
                ax.plot(xs, [p["objective"] for p in r["curve"]], label=name if i == 0 else None,
                        color=plt.cm.tab20(list(results).index(name) % 20), alpha=0.9)
        ax.set_xscale("log")
        ax.set_xlabel("objective queries" if axis == "queries" else "seconds (measuring excluded)")
        ax.set_ylabel("held-out DM (lower is better)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(out / f"objective-vs-{axis}.png", dpi=110)
        plt.close(fig)


def _report(table: dict) -> None:
    print(f"{'method':<32} {'held-out DM':>16} {'queries':>10} {'seconds':>8} {'acc':>14}")
    for name, row in table.items():
        if "objective" not in row:
            print(f"{name:<32} {'':>16} {'':>10} {'':>8} {_fmt(row['acc']):>14}")
            continue
        acc = _fmt(row["acc"]) if "acc" in row else "-"
        print(f"{name:<32} {_fmt(row['objective']):>16} {row['queries']['mean']:>10.0f} "
              f"{row['seconds']['mean']:>8.1f} {acc:>14}")


if __name__ == "__main__":
    main()
