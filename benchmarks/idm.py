"""The paper's Table 5 where its authors made it: IDM against IDM + RDD (``--recipe idm`` with
``--updater ce`` against ``--updater robust``), paired over distillation seeds, evaluated under
DSA's protocol (``zodd evaluate --protocol dsa``); ``--recipe idc``: the same pair on IDC's
structure (the paper's Table 1 base).

    python benchmarks/idm.py --dataset fashion-mnist --ipc 1 10 --seeds 3 --iterations 40 \\
        --out runs/idm
    python benchmarks/idm.py ... --report          # the tables from the runs made so far

Each run is OUT/DATASET-itN/ipcI-UPDATER-sSEED (the CLI's files and metrics.dsa.json); a run
with its metrics is not made again, so the grid resumes where it stopped, and two processes can
share it (a lock per run). The pair sees the same work: the same iterations, seed, real batches,
queue draws and networks at birth; only the updater's loss differs. Prints (and writes to
OUT/idm-DATASET-itN.md) per IPC every metric's mean over seeds for each updater, the paired
difference robust − ce with its spread and sign count, and the seconds per iteration of each
(the paper's cost: +43 %). ``--flags`` adds distill flags to every run (e.g. a smaller queue
training for a quick look); ``--epochs`` shortens the evaluation (then it is DSA's protocol
with fewer epochs, named dsa+custom).
"""
from __future__ import annotations

import argparse
import shlex
import statistics
from pathlib import Path

import harness
from zodd.evaluation import METRICS, metrics_file

# the paper's gains from its base to base + RDD on CIFAR-10: Table 5 (IDM), Table 1 (IDC, IPC 10)
PAPER_ROW = {"idm": "Table 5, CIFAR-10", "idc": "Table 1, CIFAR-10 IPC 10"}
PAPER = {"idm": {"acc": 0.6, "cluster_min": 1.1, "noise": 1.0, "blur": 1.7, "invert": 1.2},
         "idc": {"acc": 1.1, "cluster_min": 1.7, "noise": 2.2, "blur": 2.2, "invert": 0.9}}
UPDATERS = ("ce", "robust")


def folder(args) -> Path:
    extra = "-" + "".join(c for c in args.flags if c.isalnum())[:24] if args.flags else ""
    base = "" if args.recipe == "idm" else f"{args.recipe}-"
    return args.out / f"{base}{args.dataset}-it{args.iterations}{extra}"


def run_dir(args, ipc: int, updater: str, seed: int) -> Path:
    return folder(args) / f"ipc{ipc}-{updater}-s{seed}"


def metrics_path(args, run: Path) -> Path:
    return run / metrics_file("dsa", protocol="dsa")


def ensure(args, ipc: int, updater: str, seed: int) -> None:
    run = run_dir(args, ipc, updater, seed)
    if metrics_path(args, run).exists():
        return
    with harness.claimed(run) as mine:
        if not mine:
            print(f"  {run} is being made by another process: skipped", flush=True)
            return
        if not (run / "synthetic.pt").exists() or not (run / "log.jsonl").exists():
            harness.sh(["zodd", "distill", "--dataset", args.dataset, "--recipe", args.recipe,
                        "--ipc", ipc, "--updater", updater, "--seed", seed, "--iterations",
                        args.iterations, *shlex.split(args.flags), "--out", run, "--overwrite",
                        "--quiet"])
        epochs = ["--epochs", args.epochs] if args.epochs else []
        harness.sh(["zodd", "evaluate", run, "--protocol", "dsa", "--seeds", args.nets, *epochs,
                    "--no-vs-random", "--out", metrics_path(args, run), "--quiet"])



def report(args) -> str:
    name = args.recipe.upper()
    lines = [f"{name} (ce) against {name} + RDD (robust): {args.dataset}, {args.iterations} "
             "iterations"
             f" ({args.flags or 'the recipe as it is'}), {args.seeds} seeds x {args.nets} "
             f"networks, DSA's protocol{f' at {args.epochs} epochs' if args.epochs else ''}", ""]
    for ipc in args.ipc:
        found = {u: [] for u in UPDATERS}
        cost = {u: [] for u in UPDATERS}
        for seed in range(args.seeds):
            runs = {u: run_dir(args, ipc, u, seed) for u in UPDATERS}
            if not all(metrics_path(args, r).exists() for r in runs.values()):
                break
            for u, r in runs.items():
                found[u].append(harness.read_metrics(metrics_path(args, r)))
                cost[u].append(harness.per_iteration(r))
        n = len(found["ce"])
        if not n:
            continue
        lines += [f"IPC {ipc}, {n} seeds:", "",
                  f"| metric | {name} (ce) | {name} + RDD (robust) | Δ robust − ce | sd of Δ | "
                  f"robust above in | paper ({PAPER_ROW[args.recipe]}) |", "|---|---|---|---|---|---|---|"]
        for m in METRICS:
            a, b = ([r[m] for r in found[u]] for u in UPDATERS)
            d = [y - x for x, y in zip(a, b)]
            sd = statistics.stdev(d) if n > 1 else float("nan")
            lines.append(f"| {m} | {statistics.mean(a):.2f} | {statistics.mean(b):.2f} | "
                         f"{statistics.mean(d):+.2f} | {sd:.2f} | {sum(x > 0 for x in d)} of {n}"
                         f" | +{PAPER[args.recipe][m]} |")
        ce, rob = statistics.median(cost["ce"]), statistics.median(cost["robust"])
        lines += ["", f"seconds per iteration (median over the runs' iterations, then seeds): "
                  f"ce {ce:.3f}, robust {rob:.3f} ({rob / ce - 1:+.0%}; the paper: +43 %)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--recipe", default="idm", choices=("idm", "idc"),
                    help="the base: idm (the paper's Table 5) or idc (its Table 1)")
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nets", type=int, default=3, help="evaluation networks per set")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--epochs", type=int, help="evaluation epochs (default: DSA's 1,000)")
    ap.add_argument("--flags", default="", help="more zodd distill flags for every run")
    ap.add_argument("--out", type=Path, default=Path("runs/idm"))
    ap.add_argument("--report", action="store_true", help="only print the tables")
    args = ap.parse_args()
    if not args.report:
        for ipc in args.ipc:
            for seed in range(args.seeds):
                for updater in UPDATERS:
                    ensure(args, ipc, updater, seed)
    text = report(args)
    print(text)
    folder(args).mkdir(parents=True, exist_ok=True)
    (args.out / f"idm-{folder(args).name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
