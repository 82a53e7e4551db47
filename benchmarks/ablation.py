"""Where the robust gain comes from: updater modes, CVaR tails and alpha.

    python benchmarks/ablation.py --budget quick --out runs/ablation-quick   # digits, minutes
    python benchmarks/ablation.py --budget cpu --out runs/ablation-cpu       # Fashion-MNIST
    python benchmarks/ablation.py --budget full --out runs/ablation-full     # paper-sized, GPU

For each data set, IPC and objective it distils with the updater modes native, ce, robust-upper
and robust-lower (alpha 0.8), and at IPC 10 the robust modes at alpha 0.2, 0.5 and 1.0 too, for
several distillation seeds; each set is evaluated with several evaluation seeds. Every run is a
directory under --out holding the CLI's files; runs already evaluated are skipped, so the script
resumes where it stopped. It then prints the table (mean ± std over distillation seeds of the
per-seed evaluation means), the paired differences robust - ce and ce - native, writes
table.json, and plots Cluster-min and accuracy against alpha (when matplotlib is installed).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
from pathlib import Path

METRICS = ("acc", "cluster_min", "noise", "blur", "invert")
BUDGETS = {
    "quick": dict(dataset="digits", ipcs=(1, 10), objectives=("dm",), seeds=2, eval_seeds=2,
                  iterations=100, batch_size=256, alphas=(0.2, 1.0)),
    "cpu": dict(dataset="fashion-mnist", ipcs=(1, 10), objectives=("dm", "gm"), seeds=3,
                eval_seeds=3, iterations=60, batch_size=32, alphas=(0.2, 0.5, 1.0)),
    "full": dict(dataset="fashion-mnist", ipcs=(1, 10), objectives=("dm", "gm"), seeds=3,
                 eval_seeds=3, iterations=1000, batch_size=256, alphas=(0.2, 0.5, 1.0)),
}


def settings(budget: dict):
    """(name, flags) for every setting of the budget, seeds excluded."""
    for ipc in budget["ipcs"]:
        for obj in budget["objectives"]:
            base = f"ipc{ipc}-{obj}"
            yield f"{base}-native", ["--ipc", ipc, "--objective", obj, "--updater", "native"]
            yield f"{base}-ce", ["--ipc", ipc, "--objective", obj, "--updater", "ce"]
            alphas = (0.8, *budget["alphas"]) if ipc >= 10 else (0.8,)
            for tail in ("upper", "lower"):
                for alpha in alphas:
                    yield (f"{base}-robust-{tail}-a{alpha}",
                           ["--ipc", ipc, "--objective", obj, "--updater", "robust",
                            "--cvar-tail", tail, "--alpha", alpha])


def sh(cmd: list) -> None:
    cmd = [str(c) for c in cmd]
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def run_all(budget: dict, out: Path) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    for name, flags in settings(budget):
        for seed in range(budget["seeds"]):
            run = out / f"{name}-s{seed}"
            if not (run / "metrics.json").exists():
                sh(["zodd", "distill", "--dataset", budget["dataset"], *flags, "--seed", seed,
                    "--iterations", budget["iterations"], "--batch-size", budget["batch_size"],
                    "--out", run, "--overwrite", "--quiet"])
                sh(["zodd", "evaluate", run, "--seeds", budget["eval_seeds"], "--quiet"])
            metrics = json.loads((run / "metrics.json").read_text())
            results.setdefault(name, []).append({m: metrics[m]["mean"] for m in METRICS})
    return results


def summary(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.pstdev(values)


def report(results: dict[str, list[dict]], out: Path) -> None:
    table = {name: {m: summary([r[m] for r in rows]) for m in METRICS}
             for name, rows in results.items()}
    print("\n| setting | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in row.values()) + " |")

    def paired(a: str, b: str) -> dict | None:
        if a not in results or b not in results:
            return None
        return {m: summary([x[m] - y[m] for x, y in zip(results[a], results[b])])
                for m in ("acc", "cluster_min")}

    print("\n| comparison (paired over distillation seeds) | Δ acc | Δ Cluster-min | verdict |")
    print("|---|---|---|---|")
    diffs = {}
    for name in results:
        if name.endswith("-ce"):
            base = name[: -len("-ce")]
            pairs = [(f"{base}-ce", f"{base}-native")] + [
                (f"{base}-robust-{t}-a0.8", f"{base}-ce") for t in ("upper", "lower")] + [
                (f"{base}-robust-upper-a0.8", f"{base}-robust-lower-a0.8")]
            for a, b in pairs:
                d = paired(a, b)
                if d is None:
                    continue
                (m, s) = d["cluster_min"]
                verdict = "moved Cluster-min beyond the spread" if abs(m) > s else "within the spread"
                diffs[f"{a} - {b}"] = d
                print(f"| {a} − {b} | {d['acc'][0]:+.2f} ± {d['acc'][1]:.2f} | "
                      f"{m:+.2f} ± {s:.2f} | {verdict} |")
    (out / "table.json").write_text(json.dumps({"table": table, "paired": diffs}, indent=2))
    plot(table, out)


def plot(table: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    curves: dict[tuple, list] = {}
    for name, row in table.items():
        if "-robust-" in name and name.startswith("ipc10"):
            base, tail_alpha = name.split("-robust-")
            tail, alpha = tail_alpha.split("-a")
            curves.setdefault((base, tail), []).append((float(alpha), row))
    if not curves:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("cluster_min", "acc")):
        for (base, tail), points in sorted(curves.items()):
            points.sort()
            ax.errorbar([a for a, _ in points], [r[metric][0] for _, r in points],
                        yerr=[r[metric][1] for _, r in points], marker="o", capsize=3,
                        label=f"{base} {tail}")
        ax.set_xlabel("CVaR alpha")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "alpha.png", dpi=120)
    print(f"wrote {out / 'alpha.png'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report(run_all(BUDGETS[args.budget], args.out), args.out)


if __name__ == "__main__":
    main()
