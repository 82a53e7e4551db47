"""RDD on the kernel base: FRePo's pool trained its own way (on S, ``--updater native``) against
the pool trained on real data (``ce``; ``robust``, the paper's loss, at the pool's step and at a
third of it), paired over distillation seeds, each set evaluated under FRePo's protocol
(``zodd evaluate --protocol frepo``), with the baselines of learned labels beside.

    python benchmarks/frepo.py --dataset digits --ipc 1 10 --seeds 8 --iterations 300 \\
        --out runs/frepo
    python benchmarks/frepo.py ... --report        # the tables from the runs made so far

Each run is OUT/DATASET-itN/ipcI-ARM-sSEED (the CLI's files, metrics.frepo.json and the
baselines' metrics_BASELINE.frepo.json); a run with its metrics is not made again, so the grid
resumes where it stopped, and two processes can share it (a lock per run). The arms of one seed
see the same work: the same initialisation, real batches, pool draws and networks at birth;
only the pool's training differs. Per IPC: every metric's mean over seeds for each arm, and for
each pair (``PAIRS``: each real-data arm against ``frepo``, robust against ce) the paired
difference, its 95 % interval (Student's t over seeds, scipy's, which scikit-learn brings) and
in how many seeds the first is above; then the baselines (``--baselines``, on the ``frepo``
arm's runs: random real with one-hot labels, random real with solved labels, the set's images
with one-hot labels) and the seconds per iteration of each arm.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
from pathlib import Path

import harness
from scipy import stats as scipy_stats

from zodd.evaluation import METRICS, metrics_file

ARMS = {"frepo": "--updater native", "ce": "--updater ce", "robust": "--updater robust",
        "robust-third": "--updater robust --pool-lr 1e-4"}
BASELINES = ("random", "label-solve", "onehot")
# (arm, against): the pool trained on real data against FRePo's own training on S, and the
# paper's comparison, the robust loss against CE on the same real batches
PAIRS = (("ce", "frepo"), ("robust", "frepo"), ("robust-third", "frepo"), ("robust", "ce"),
         ("robust-third", "ce"))


def folder(args) -> Path:
    extra = "-" + "".join(c for c in args.flags if c.isalnum())[:24] if args.flags else ""
    return args.out / f"{args.dataset}-it{args.iterations}{extra}"


def run_dir(args, ipc: int, arm: str, seed: int) -> Path:
    return folder(args) / f"ipc{ipc}-{arm}-s{seed}"


def metrics_path(run: Path, baseline: str | None = None) -> Path:
    return run / metrics_file("frepo", baseline, protocol="frepo")


def ensure(args, ipc: int, arm: str, seed: int) -> None:
    run = run_dir(args, ipc, arm, seed)
    wanted = [None, *(args.baselines if arm == "frepo" else ())]
    if all(metrics_path(run, b).exists() for b in wanted):
        return
    with harness.claimed(run) as mine:
        if not mine:
            print(f"  {run} is being made by another process: skipped", flush=True)
            return
        if not (run / "synthetic.pt").exists() or not (run / "log.jsonl").exists():
            harness.sh(["zodd", "distill", "--dataset", args.dataset, "--recipe", "frepo",
                        "--ipc", ipc, *shlex.split(ARMS[arm]), "--seed", seed, "--iterations",
                        args.iterations, *shlex.split(args.flags), "--out", run, "--overwrite",
                        "--quiet"])
        for baseline in wanted:
            if not metrics_path(run, baseline).exists():
                harness.sh(["zodd", "evaluate", run, "--protocol", "frepo", "--seeds", args.nets,
                            "--no-vs-random", *(["--baseline", baseline] if baseline else []),
                            "--out", metrics_path(run, baseline), "--quiet"])



def interval(diffs: list[float]) -> tuple[float, float]:
    """The 95 % interval of the mean paired difference (Student's t, n - 1 degrees)."""
    n = len(diffs)
    if n < 2:
        return float("nan"), float("nan")
    half = scipy_stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / n ** 0.5
    return statistics.mean(diffs) - half, statistics.mean(diffs) + half


def report(args) -> str:
    lines = [f"FRePo's pool trained on S (frepo) against on real data (ce, robust, robust at a "
             f"third of the pool's step): {args.dataset}, {args.iterations} iterations"
             f" ({args.flags or 'the recipe as it is'}), {args.nets} networks a set, FRePo's "
             "protocol", ""]
    for ipc in args.ipc:
        found = {a: [] for a in ARMS}
        cost = {a: [] for a in ARMS}
        for seed in range(args.seeds):
            runs = {a: run_dir(args, ipc, a, seed) for a in ARMS}
            if not all(metrics_path(r).exists() for r in runs.values()):
                break
            for a, r in runs.items():
                found[a].append(harness.read_metrics(metrics_path(r)))
                cost[a].append(harness.per_iteration(r))
        n = len(found["frepo"])
        if not n:
            continue
        lines += [f"IPC {ipc}, {n} seeds:", "",
                  "| metric | " + " | ".join(ARMS) + " |", "|---|" + "---|" * len(ARMS)]
        for m in METRICS:
            lines.append(f"| {m} | " + " | ".join(f"{statistics.mean(r[m] for r in found[a]):.2f}"
                                                  for a in ARMS) + " |")
        lines += ["", "| pair | metric | Δ mean | 95 % interval | first above in |",
                  "|---|---|---|---|---|"]
        for arm, against in PAIRS:
            for m in METRICS:
                d = [b[m] - a[m] for a, b in zip(found[against], found[arm])]
                low, high = interval(d)
                lines.append(f"| {arm} − {against} | {m} | {statistics.mean(d):+.2f} | "
                             f"[{low:+.2f}, {high:+.2f}] | {sum(x > 0 for x in d)} of {n} |")
        base = {b: [harness.read_metrics(metrics_path(run_dir(args, ipc, "frepo", s), b))
                    for s in range(n)
                    if metrics_path(run_dir(args, ipc, "frepo", s), b).exists()]
                for b in args.baselines}
        lines += ["", "| set (FRePo's protocol) | seeds | " + " | ".join(METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        rows = {"the set (learned labels)": found["frepo"],
                **{f"baseline {b}": v for b, v in base.items() if v}}
        for label, found_rows in rows.items():
            lines.append(f"| {label} | {len(found_rows)} | " + " | ".join(
                f"{statistics.mean(r[m] for r in found_rows):.2f}" for m in METRICS) + " |")
        lines += ["", "seconds per iteration (median): " + ", ".join(
            f"{a} {statistics.median(c):.3f}" for a, c in cost.items() if c), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--nets", type=int, default=1, help="evaluation networks per set")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--flags", default="", help="more zodd distill flags for every run")
    ap.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES)
    ap.add_argument("--out", type=Path, default=Path("runs/frepo"))
    ap.add_argument("--report", action="store_true", help="only print the tables")
    args = ap.parse_args()
    if not args.report:
        for ipc in args.ipc:
            for seed in range(args.seeds):
                for arm in ARMS:
                    ensure(args, ipc, arm, seed)
    text = report(args)
    print(text)
    folder(args).mkdir(parents=True, exist_ok=True)
    (args.out / f"frepo-{folder(args).name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
