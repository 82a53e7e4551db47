"""Distilling against black boxes with no gradient.

    python benchmarks/blackbox.py prototype --seeds 3 --iterations 200
    python benchmarks/blackbox.py workers --mode sleep --repeats 3
    python benchmarks/blackbox.py evaluators --dataset digits --ipc 1 --seconds 120 --out OUT
    python benchmarks/blackbox.py plot OUT/evaluators.json     # its plot again
    python benchmarks/blackbox.py seeds 0=OUT0/evaluators.json 1=OUT1/evaluators.json  # one table
    python benchmarks/blackbox.py dm-curve --dataset fashion-mnist --ipc 1 --out OUT
    python benchmarks/blackbox.py generalise --dataset fashion-mnist --ipc 1 --seeds 0,1,2 \
        --seconds 600 --out OUT                                   # resumable; --report: its table

prototype: `zodd distill --objective prototype --estimator gaussian` on digits, and the
nearest-prototype error on the digits test set before (the random-real initialisation) and after.
workers: seconds per step with `--workers 0` and `--workers 2` against a black box costing 0.2 s
per candidate (benchmarks/slow_evaluator.py), runs alternating, median over steps 2.. of each run.
evaluators: outside evaluators (benchmarks/evaluators.py: 1-NN, a small MLP, extra trees),
reached only through ``--objective command``, each scoring candidate sets on the first half of
the test images; every row's set is then scored by the same evaluator on the second half, which
no run saw. Rows: the random-real initialisation; a DM autograd set given a tenth of the
black-box runs' time (a generic distillation that never sees the evaluator); zodd's black-box
runs (``METHODS``). Each black-box run gets ``--seconds`` of distillation (the latent prior is
trained once beforehand, its time reported apart). Writes OUT/evaluators.json, .md and .png
(per evaluator: the scored-half error against queries, and where each run ended unseen).
dm-curve: DM's sets saved at steps (the warm start's schedule) and scored on the unseen half.
generalise: the user's question, given ``--seconds`` (600): per seed and evaluator, on the half
of the test set no run saw, random real; DM autograd given the same seconds (DM's own schedule,
a fresh network each step: the warm start's); the run's warm start alone (DM for as many
steps as the set it handed on: the same set, no query); the default black-box run (``--objective command`` and ``--max-seconds`` only) against a scorer
taking ``{seed} {fold} {folds}`` (a fresh model seed and fifth of the scored half each step,
the set kept chosen on fold 0); with ``--rows fixed`` also the same run against the scorer
without them (one fixed seed and the whole scored half). Each run is skipped when its set
exists (the grid resumes); OUT/generalise.json holds the errors, ``--report`` prints the table.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import mean_std, sh

HERE = Path(__file__).resolve().parent


def unseen_error(kind: str, dataset: str, path: Path) -> float:
    """The error (%) of evaluator ``kind`` trained on the set at ``path`` (a synthetic.pt) on
    the half of the test set no run scored (benchmarks/evaluators.py)."""
    done = subprocess.run([sys.executable, HERE / "evaluators.py", kind, dataset, "test", path],
                          capture_output=True, text=True, check=True)
    return 100 * float(done.stdout)


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


METHODS = {  # the rows from a random real start, as before --init dm
    "gaussian, pixels": ["--init", "real", "--estimator", "gaussian"],
    "gaussian + DM guide, pixels": ["--init", "real", "--estimator", "gaussian", "--surrogate",
                                    "dm", "--lowres", "1"],
    "es, pixels": ["--init", "real", "--estimator", "es"],
    "gaussian, latent": ["--init", "real", "--representation", "latent", "--estimator",
                         "gaussian"],
    "es, latent": ["--init", "real", "--representation", "latent", "--estimator", "es"],
    "CMA (nevergrad), latent": ["--init", "real", "--representation", "latent", "--optimizer",
                                "ng:DiagonalCMA"],
    # warm starts: the DM autograd set of the row above (a tenth of the budget) refined against
    # the evaluator for the other nine tenths; {dm-latent}: DM autograd on the latent codes
    "DM start + es, pixels": ["--init", "{dm}", "--estimator", "es"],
    "DM start + gaussian, pixels": ["--init", "{dm}", "--estimator", "gaussian"],
    "DM start + CMA, latent": ["--init", "{dm-latent}", "--representation", "latent",
                               "--optimizer", "ng:DiagonalCMA"],
    # zodd's defaults for a black box: --init dm (20 DM steps inside the run), es
    "default: --init dm, es, pixels": [],
    "--init dm + gaussian, pixels": ["--estimator", "gaussian"],
    "--init dm + es, latent": ["--representation", "latent"],
    "--init dm + CMA, latent": ["--representation", "latent", "--optimizer", "ng:DiagonalCMA"],
}
WARM = {"{dm}": [], "{dm-latent}": ["--representation", "latent"]}  # flags of each start's run


def evaluators(args) -> None:
    from zodd.data import load
    from zodd.synthetic import initialise, save

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load(args.dataset)
    script = HERE / "evaluators.py"
    base = ["--dataset", args.dataset, "--ipc", args.ipc, "--seed", args.seed, "--quiet",
            "--overwrite", "--iterations", 1_000_000]

    def test_error(kind: str, run: Path) -> float:
        return unseen_error(kind, args.dataset, run / "synthetic.pt")

    def log(run: Path) -> list[dict]:
        return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]

    init = out / "random"
    init.mkdir(exist_ok=True)
    save(initialise(data, args.ipc, "real", torch.Generator().manual_seed(args.seed)), init, data)
    if any("latent" in m for m in args.methods):
        started = time.perf_counter()
        sh(["zodd", "prior", args.dataset, "--quiet"])
        print(f"prior: {time.perf_counter() - started:.0f} s (once, cached)", flush=True)
    starts = {}  # the DM autograd sets: the comparison row and the warm starts
    for token, flags in WARM.items():
        if token == "{dm}" or any(token in METHODS[m] for m in args.methods):
            run = out / ("dm-autograd" + token[3:-1])
            if not (run / "synthetic.pt").exists():
                sh(["zodd", "distill", *base, "--max-seconds", args.seconds / 10, *flags,
                    "--out", run])
            starts[token] = run
    dm = starts["{dm}"]
    table = {}
    for kind in args.kinds:
        command = f"{sys.executable} {script} {kind} {args.dataset} score {{input}}"
        rows = {"random real (init)": {"error": test_error(kind, init), "queries": 0,
                                       "seconds": 0.0},
                f"DM autograd, {args.seconds / 10:g} s": {
                    "error": test_error(kind, dm), "queries": 0,
                    "seconds": log(dm)[-1]["seconds"]}}
        for label in args.methods:
            run = out / f"{kind}-{label.replace(' ', '').replace(',', '-')}"
            flags = [str(starts.get(f, f)) for f in METHODS[label]]
            warm = sum(log(starts[f])[-1]["seconds"] for f in METHODS[label] if f in starts)
            if not (run / "synthetic.pt").exists():  # a warm start's time comes off the budget
                sh(["zodd", "distill", *base, "--objective", "command", "--command", command,
                    "--max-seconds", args.seconds - warm, *flags, "--out", run])
            rows_ = log(run)
            rows[label] = {"error": test_error(kind, run), "queries": rows_[-1]["queries"],
                           "seconds": warm + rows_[-1]["seconds"],
                           "score_split": [(r["queries"], r["loss"]) for r in rows_]}
            print(f"{kind} {label}: {rows[label]['error']:.2f} %", flush=True)
        table[kind] = rows
    (out / "evaluators.json").write_text(json.dumps(table, indent=1))
    lines = [f"{args.dataset}, IPC {args.ipc}, seed {args.seed}, {args.seconds:g} s a black-box "
             "run; error (%) on the half of the test set no run scored", "",
             "| evaluator | set | error % | queries | distil s |", "|---|---|---|---|---|"]
    for kind, rows in table.items():
        for label, r in rows.items():
            lines.append(f"| {kind} | {label} | {r['error']:.2f} | {r['queries']} | "
                         f"{r['seconds']:.0f} |")
    (out / "evaluators.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(table, out / "evaluators.png")


def dm_curve(args) -> None:
    """DM as the warm start runs it (native, autograd), its set saved at ``--marks`` steps, each
    scored by the evaluators on the unseen half: how long DM keeps helping each scorer."""
    from zodd.data import load
    from zodd.driver import distill
    from zodd.plan import settings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load(args.dataset)
    labels = torch.arange(data.num_classes).repeat_interleave(args.ipc)

    def on_step(row: dict, images: torch.Tensor) -> None:
        if row["step"] in args.marks:
            torch.save({"images": images.cpu(), "labels": labels, "seconds": row["seconds"]},
                       out / f"step{row['step']}.pt")

    if not all((out / f"step{m}.pt").exists() for m in args.marks):
        distill(settings(dataset=args.dataset, ipc=args.ipc, objective="dm", updater="native",
                         estimator="autograd", iterations=max(args.marks), seed=args.seed),
                data, on_step=on_step)
    lines = [f"| DM steps | seconds | {' | '.join(args.kinds)} |",
             "|---|---|" + "---|" * len(args.kinds)]
    for mark in args.marks:
        path = out / f"step{mark}.pt"
        cells = [unseen_error(kind, args.dataset, path) for kind in args.kinds]
        seconds = torch.load(path, weights_only=True)["seconds"]
        lines.append(f"| {mark} | {seconds:.0f} | " + " | ".join(f"{c:.2f}" for c in cells)
                     + " |")
    (out / "dm-curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


GENERALISE_ROWS = {  # label -> the evaluator's extra arguments (zodd's placeholders)
    "default": " {seed} {fold} {folds}",
    "fixed": "",  # the scorer as before: seed 0, the whole scored half
}


def generalise(args) -> None:
    from zodd.data import load
    from zodd.synthetic import initialise, save

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "generalise.json"
    table = json.loads(results.read_text()) if results.exists() else {}
    if args.report:
        return print(generalise_table(table, args.seconds))
    data = load(args.dataset)
    script = HERE / "evaluators.py"
    for seed in args.seeds:
        cell = out / f"ipc{args.ipc}" / f"s{seed}"
        base = ["--dataset", args.dataset, "--ipc", args.ipc, "--seed", seed, "--quiet",
                "--overwrite"]
        runs = {"random real": cell / "random",
                f"DM autograd, {args.seconds:g} s": cell / "dm"}
        if not (runs["random real"] / "synthetic.pt").exists():
            runs["random real"].mkdir(parents=True, exist_ok=True)
            save(initialise(data, args.ipc, "real", torch.Generator().manual_seed(seed)),
                 runs["random real"], data)
        dm = ["--objective", "dm", "--updater", "native", "--estimator", "autograd"]
        if not (runs[f"DM autograd, {args.seconds:g} s"] / "synthetic.pt").exists():
            sh(["zodd", "distill", *base, *dm, "--iterations", 1_000_000, "--max-seconds",
                args.seconds, "--out", cell / "dm"])
        for kind in args.kinds:
            for row in args.rows:
                run = cell / f"bb-{row}-{kind}"
                command = (f"{sys.executable} {script} {kind} {args.dataset} score {{input}}"
                           + GENERALISE_ROWS[row])
                if not (run / "synthetic.pt").exists():
                    sh(["zodd", "distill", *base, "--objective", "command", "--command", command,
                        "--iterations", 1_000_000, "--max-seconds", args.seconds, "--out", run])
                runs[f"black box ({row})"] = run
                # the run's own warm start alone: DM for as many steps as the set it handed on
                first = json.loads((run / "log.jsonl").read_text().splitlines()[0])
                warm = cell / f"warm-{first['warm_kept']}"
                if not (warm / "synthetic.pt").exists():
                    sh(["zodd", "distill", *base, *dm, "--iterations", first["warm_kept"],
                        "--out", warm])
                runs[f"warm start alone ({row})"] = warm
            key = f"ipc{args.ipc}/s{seed}/{kind}"
            table[key] = {}
            for label, run in runs.items():
                rows = ([json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
                        if (run / "log.jsonl").exists() else [])
                table[key][label] = {"error": unseen_error(kind, args.dataset,
                                                           run / "synthetic.pt"),
                                     "steps": rows[-1]["step"] if rows else 0,
                                     "queries": rows[-1]["queries"] if rows else 0,
                                     "seconds": rows[-1]["seconds"] if rows else 0.0}
            results.write_text(json.dumps(table, indent=1))
            print(key, {k: round(v["error"], 2) for k, v in table[key].items()}, flush=True)
    print(generalise_table(table, args.seconds))


def generalise_table(table: dict, seconds: float) -> str:
    """Per IPC and evaluator: each row's unseen-half error, mean ± std over seeds; the black
    box minus DM (and in how many seeds it is below), and the queries' own gain (warm start
    minus black box: above 0 is a gain)."""
    from harness import mean_std

    lines = ["| IPC | evaluator | random real | DM autograd, same seconds | warm start alone | "
             "black box | queries' gain (warm − black box) | black box − DM | below DM in |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for key, rows in table.items():
        ipc, _, kind = key.split("/")
        groups.setdefault((ipc, kind), []).append(rows)
    for (ipc, kind), cells in sorted(groups.items()):
        dm = f"DM autograd, {seconds:g} s"
        for bb in sorted({k for c in cells for k in c if k.startswith("black box")}):
            have = [c for c in cells if bb in c]

            def col(label: str) -> str:
                m, s = mean_std([c[label]["error"] for c in have])
                return f"{m:.2f} ± {s:.2f}"

            warm = f"warm start alone ({bb[11:-1]})"
            gain = mean_std([c[warm]["error"] - c[bb]["error"] for c in have])
            gap = [c[bb]["error"] - c[dm]["error"] for c in have]
            lines.append(f"| {ipc[3:]} | {kind} ({bb[11:-1]}) | {col('random real')} | "
                         f"{col(dm)} | {col(warm)} | {col(bb)} | "
                         f"{gain[0]:+.2f} ± {gain[1]:.2f} | {mean_std(gap)[0]:+.2f} | "
                         f"{sum(g < 0 for g in gap)} of {len(have)} |")
    return "\n".join(lines)


def seeds(args) -> None:
    """Several seeds' evaluators.json (one seed's evaluators may be split over files) as one
    table: each row's unseen-half error per seed and mean ± std, and for each black-box row
    its paired difference from the DM comparison row (mean ± std over seeds) and in how many
    seeds it ended below it."""
    by_seed: dict[int, dict] = {}
    for seed, path in args.tables:
        by_seed.setdefault(seed, {}).update(json.loads(path.read_text()))
    order = sorted(by_seed)
    kinds = list(dict.fromkeys(kind for table in by_seed.values() for kind in table))
    lines = [f"error (%) on the unseen half of the test set, seeds {', '.join(map(str, order))}",
             "", "| evaluator | set | " + " | ".join(f"seed {s}" for s in order)
             + " | mean ± std | minus DM | below DM in |", "|---|---|" + "---|" * (len(order) + 3)]
    for kind in kinds:
        rows = {s: by_seed[s].get(kind, {}) for s in order}
        labels = list(dict.fromkeys(label for r in rows.values() for label in r))
        dm = next(label for label in labels if label.startswith("DM autograd"))
        for label in labels:
            have = [s for s in order if label in rows[s]]
            errors = [rows[s][label]["error"] for s in have]
            mean, std = mean_std(errors)
            below = " | "
            if "score_split" in rows[have[0]][label]:  # a black-box run
                gaps = [rows[s][label]["error"] - rows[s][dm]["error"] for s in have]
                gap, spread = mean_std(gaps)
                below = f"{gap:+.2f} ± {spread:.2f} | {sum(g < 0 for g in gaps)} of {len(have)}"
            cells = [f"{rows[s][label]['error']:.2f}" if s in have else "–" for s in order]
            lines.append(f"| {kind} | {label} | {' | '.join(cells)} | {mean:.2f} ± {std:.2f} "
                         f"| {below} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")


def plot(table: dict, path: Path) -> None:
    """One panel per evaluator: each black-box run's error on the scored half against queries
    (its log), and where it ended on the unseen half (a marker at its last query); the random
    and DM rows as horizontal lines of their unseen-half error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, axes = plt.subplots(1, len(table), figsize=(5 * len(table), 4), squeeze=False)
    for ax, (kind, rows) in zip(axes[0], table.items()):
        for label, r in rows.items():
            if "score_split" not in r:  # random, DM: no queries
                ax.axhline(r["error"], ls="--", lw=0.8, color="grey" if "random" in label
                           else "black", label=f"{label} (unseen)")
                continue
            queries, losses = zip(*[(q, 100 * l) for q, l in r["score_split"] if l is not None])
            line, = ax.plot(queries, losses, label=f"{label} (scored)")
            ax.plot(queries[-1], r["error"], marker="o", color=line.get_color())
        ax.set(title=kind, xlabel="queries", ylabel="error, %")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print("wrote", path)


def seed_and_file(token: str) -> tuple[int, Path]:
    """``SEED=FILE`` (a ``seeds`` argument) as (seed, path)."""
    seed, sep, path = token.partition("=")
    if not (sep and seed.isdigit() and path):
        raise argparse.ArgumentTypeError(f"{token!r}: give SEED=FILE, e.g. "
                                         "0=runs/a/evaluators.json")
    return int(seed), Path(path)


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
    e = sub.add_parser("evaluators")
    e.add_argument("--dataset", default="digits")
    e.add_argument("--ipc", type=int, default=1)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--seconds", type=float, default=120.0, help="each black-box run's budget")
    e.add_argument("--kinds", type=lambda t: t.split(","), default=["knn", "mlp", "trees"])
    e.add_argument("--methods", type=lambda t: t.split(";"), default=list(METHODS),
                   help="';'-separated labels of METHODS")
    e.add_argument("--out", required=True)
    sd = sub.add_parser("seeds", help="several seeds' evaluators.json as one mean ± std table")
    sd.add_argument("tables", nargs="+", metavar="SEED=FILE", type=seed_and_file,
                    help="a seed and its evaluators.json (a seed may be given twice)")
    sd.add_argument("--out", type=Path, help="also write the table here (markdown)")
    dc = sub.add_parser("dm-curve", help="DM's sets at steps, scored on the unseen half")
    dc.add_argument("--dataset", default="fashion-mnist")
    dc.add_argument("--ipc", type=int, default=1)
    dc.add_argument("--seed", type=int, default=0)
    dc.add_argument("--marks", type=lambda t: [int(x) for x in t.split(",")],
                    default=[1, 5, 10, 20, 30, 40, 60, 80, 100, 120, 150, 200, 250, 300])
    dc.add_argument("--kinds", type=lambda t: t.split(","), default=["knn", "mlp", "trees"])
    dc.add_argument("--out", required=True)
    g = sub.add_parser("generalise", help="the default black-box run against DM given the "
                       "same seconds, on the unseen half (resumable)")
    g.add_argument("--dataset", default="fashion-mnist")
    g.add_argument("--ipc", type=int, default=1)
    g.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2])
    g.add_argument("--seconds", type=float, default=600.0)
    g.add_argument("--kinds", type=lambda t: t.split(","), default=["knn", "mlp", "trees"])
    g.add_argument("--rows", type=lambda t: t.split(","), default=["default"],
                   help="black-box rows: default (the scorer takes {seed} {fold} {folds}), "
                   "fixed (it does not)")
    g.add_argument("--report", action="store_true", help="print the table of what is done")
    g.add_argument("--out", required=True)
    pl = sub.add_parser("plot", help="the evaluators' plot again, from its .json (beside it)")
    pl.add_argument("table", type=Path)
    args = ap.parse_args()
    if args.what == "plot":
        return plot(json.loads(args.table.read_text()), args.table.with_suffix(".png"))
    {"prototype": prototype, "workers": workers, "evaluators": evaluators,
     "seeds": seeds, "generalise": generalise, "dm-curve": dm_curve}[args.what](args)


if __name__ == "__main__":
    main()
