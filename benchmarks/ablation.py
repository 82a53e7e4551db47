"""Where the robust gain comes from: updater modes, CVaR tails and alpha.

    python benchmarks/ablation.py --budget quick --out runs/evidence   # digits, minutes
    python benchmarks/ablation.py --budget cpu --out runs/evidence     # Fashion-MNIST, hours
    python benchmarks/ablation.py --budget full --out runs/evidence    # paper-sized, GPU
    python benchmarks/ablation.py --budget cpu --out runs/evidence --only 'ipc1-*'

For each IPC and objective of the budget (see harness.BUDGETS) it distils with the updater modes
native, ce, robust-upper and robust-lower (alpha 0.8) and, at IPC 10, the robust modes at the
budget's other alphas (alpha 1.0 once: both tails are then the mean), and, at the budget's
``trained_ipcs``, ce and both robust tails with theta trained for longer (``-trained``: 10 network
updates per iteration, a fresh network every 100), and, at IPC 10 with dm, CE at three times the network's
learning rate (``ce-x3``: the robust loss at alpha 1 is CE plus the mean and the max of the
cluster means, about three times CE's gradient), for several distillation seeds; each set is evaluated with several networks. Runs live under OUT/FOLDER/ (the budget's
folder), are shared with paper.py, and are skipped once evaluated, so the script resumes where it
stopped. ``--only`` (glob, repeatable) restricts the settings run; the table covers every run
present, and ``--report`` rebuilds it without running anything. Writes ablation.json (table and
paired differences), ablation.md and ablation-alpha.png beside the runs; ``--publish DIR`` copies
them to DIR as FOLDER-ablation.* (BENCHMARKS.md links the committed copy).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import harness

# theta trained for longer: 10 updates per iteration and one network for 100 iterations (the
# defaults, 1 update and a fresh network every 10, leave theta near its initialisation)
TRAINED = ("trained", ["--model-steps", 10, "--reinit-every", 100])
PAPER_FIG2 = "the paper's Fig. 2 (GLaD, CIFAR-10): acc and Cluster-min both peak at α = 0.8"


def settings(budget: harness.Budget):
    """(name, flags) for every setting, in the order they are run (cheap and central first)."""
    for ipc in budget.ipcs:
        for obj in budget.objectives:
            base = f"ipc{ipc}-{obj}"
            common = ["--ipc", ipc, "--objective", obj]
            yield f"{base}-native", [*common, "--updater", "native"]
            yield f"{base}-ce", [*common, "--updater", "ce"]
            for tail in ("upper", "lower"):
                yield robust(base, common, tail, 0.8)
            if ipc >= 10 and obj == "dm":
                # CE with the step the robust loss takes at alpha 1 (CE + mean + max of the
                # cluster means: about three times CE's gradient), to tell the loss's shape from
                # its scale where CVaR over CE cost Cluster-min most
                yield f"{base}-ce-x3", [*common, "--updater", "ce", "--model-lr", 0.03]
                for alpha in budget.alphas:
                    for tail in ("upper",) if alpha == 1.0 else ("upper", "lower"):
                        yield robust(base, common, tail, alpha)
            if ipc in budget.trained_ipcs:
                suffix, flags = TRAINED
                yield f"{base}-ce-{suffix}", [*common, "--updater", "ce", *flags]
                for tail in ("upper", "lower"):
                    name, robust_flags = robust(base, common, tail, 0.8)
                    yield f"{name}-{suffix}", [*robust_flags, *flags]


def robust(base: str, common: list, tail: str, alpha: float) -> tuple[str, list]:
    return (f"{base}-robust-{tail}-a{alpha}",
            [*common, "--updater", "robust", "--cvar-tail", tail, "--alpha", alpha])


def comparisons(budget: harness.Budget):
    for ipc in budget.ipcs:
        for obj in budget.objectives:
            base = f"ipc{ipc}-{obj}"
            yield f"{base}-ce", f"{base}-native"
            yield f"{base}-robust-upper-a0.8", f"{base}-ce"
            yield f"{base}-robust-lower-a0.8", f"{base}-ce"
            yield f"{base}-robust-upper-a0.8", f"{base}-robust-lower-a0.8"
            if ipc >= 10 and obj == "dm":
                yield f"{base}-ce-x3", f"{base}-ce"
                yield f"{base}-robust-upper-a0.8", f"{base}-ce-x3"
            if ipc in budget.trained_ipcs:
                t = TRAINED[0]
                yield f"{base}-ce-{t}", f"{base}-ce"
                yield f"{base}-robust-upper-a0.8-{t}", f"{base}-ce-{t}"
                yield f"{base}-robust-lower-a0.8-{t}", f"{base}-ce-{t}"


def collect(budget: harness.Budget, out: Path, only: list[str] | None, run: bool) -> dict:
    """Run the selected settings (unless ``run`` is false), then read every run present."""
    if run:
        for name, flags in settings(budget):
            if harness.selected(name, only):
                for seed in range(budget.seeds):
                    harness.ensure_run(out, name, flags, seed, budget)
    return harness.present(out, budget, [name for name, _ in settings(budget)])


def report(budget: harness.Budget, results: dict, out: Path) -> None:
    table = harness.summarise(results)
    diffs = {f"{a} − {b}": d for a, b in comparisons(budget)
             if (d := harness.paired(results, a, b)) is not None}
    seeds = {name: len(rows) for name, rows in results.items()}
    text = (f"{budget.describe()}\n\n" + harness.markdown_table(table) + "\n\n"
            + harness.markdown_pairs(diffs) + "\n\n" + "\n".join(verdicts(budget, diffs)) + "\n")
    print("\n" + text)
    out = out / budget.folder
    (out / "ablation.md").write_text(text)
    (out / "ablation.json").write_text(json.dumps(
        {"budget": budget.__dict__, "seeds": seeds, "table": table, "paired": diffs}, indent=2))
    plot(table, out / "ablation-alpha.png")


CHANGES = {"ce − {b}-native": "real-data CE over native",
           "robust-upper-a0.8 − {b}-ce": "CVaR (upper tail) over CE",
           "robust-lower-a0.8 − {b}-ce": "CVaR (lower tail) over CE",
           "robust-upper-a0.8 − {b}-robust-lower-a0.8": "upper over lower tail",
           "ce-x3 − {b}-ce": "CE at three times the network's step over CE",
           "robust-upper-a0.8 − {b}-ce-x3": "CVaR (upper tail) over CE at three times the step",
           "ce-trained − {b}-ce": "training theta longer (CE)",
           "robust-upper-a0.8-trained − {b}-ce-trained": "CVaR (upper) over CE, theta trained longer",
           "robust-lower-a0.8-trained − {b}-ce-trained": "CVaR (lower) over CE, theta trained longer"}


def verdicts(budget: harness.Budget, diffs: dict) -> list[str]:
    """One plain sentence per setting: which change moved Cluster-min beyond the spread."""
    lines = []
    for ipc in budget.ipcs:
        for obj in budget.objectives:
            b = f"ipc{ipc}-{obj}"
            moved, seen = [], 0
            for key, label in CHANGES.items():
                a, rest = key.split(" − ")
                d = diffs.get(f"{b}-{a} − {rest.format(b=b)}")
                if d is None:
                    continue
                seen += 1
                if harness.beyond_spread(d["cluster_min"]):
                    m, sd = d["cluster_min"]
                    moved.append(f"{label} ({m:+.2f} ± {sd:.2f}, {d['seeds']} seeds)")
            if not seen:
                continue
            lines.append(f"- IPC {ipc}, {obj}: " + (
                "Cluster-min moved beyond the seed-to-seed spread with " + "; ".join(moved) + "."
                if moved else f"no change ({seen} compared) moved Cluster-min beyond the "
                "seed-to-seed spread."))
    return lines


def plot(table: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    curves: dict[tuple, list] = {}
    for name, row in table.items():
        if "-robust-" in name and not name.startswith("ipc1-"):
            base, tail_alpha = name.split("-robust-")
            tail, alpha = tail_alpha.split("-a")
            tails = ("upper", "lower") if float(alpha) == 1.0 else (tail,)
            for t in tails:  # alpha 1 is the mean whatever the tail: one run serves both curves
                curves.setdefault((base, t), []).append((float(alpha), row))
    if not any(len(points) > 1 for points in curves.values()):
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("cluster_min", "acc")):
        for (base, tail), points in sorted(curves.items()):
            points.sort(key=lambda p: p[0])
            line = ax.errorbar([a for a, _ in points], [r[metric][0] for _, r in points],
                               yerr=[r[metric][1] for _, r in points], marker="o", capsize=3,
                               label=f"{base} {tail}")
            ce = table.get(f"{base}-ce")
            if ce:
                ax.axhline(ce[metric][0], ls="--", lw=0.8, color=line[0].get_color())
        ax.axvline(0.8, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("CVaR α (dashed: CE; dotted: the paper's peak)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.suptitle(PAPER_FIG2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", choices=sorted(harness.BUDGETS), default="quick")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", action="append", help="run only settings matching this glob")
    ap.add_argument("--report", action="store_true", help="rebuild the table; run nothing")
    ap.add_argument("--publish", type=Path,
                    help="copy the table and plot to this directory as FOLDER-ablation.*")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    budget = harness.BUDGETS[args.budget]
    report(budget, collect(budget, args.out, args.only, run=not args.report), args.out)
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for path in sorted((args.out / budget.folder).glob("ablation*")):
            shutil.copy(path, args.publish / f"{budget.folder}-{path.name}")
        print(f"copied the table and plot to {args.publish}")


if __name__ == "__main__":
    main()
