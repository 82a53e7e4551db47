"""Which recipe makes the best set: dm, gm and krr x pixel / multi x affine / dsa (each with its
method's own network schedule, ``--updater native``), and the ``idc`` recipe, all at one equal
time budget per set, each set evaluated with zodd's affine augmentation and with DSA.

    python benchmarks/recipes.py --budget recipes-quick --out runs/evidence       # digits, CPU
    python benchmarks/recipes.py --budget recipes-gpu --out runs/evidence --jobs 12  # one GPU
    python benchmarks/recipes.py --budget recipes-cpu --out runs/evidence         # 15 min a set
    python benchmarks/recipes.py --budget recipes-gpu --out runs/evidence --only 'ipc10-idc*' \\
        --seeds 3                                # the robust updater on IDC (the paper's Table 1)

Runs live under OUT/FOLDER/NAME-sSEED (harness.py) and are skipped once evaluated, so the
script resumes; ``--jobs N`` runs N settings at once (they share OUT through the harness's
locks), ``--deadline S`` claims no new run after S seconds. Writes recipes.md and recipes.json
beside the runs: per IPC, every setting's accuracy under both evaluation augmentations,
Cluster-min, iterations reached and distillation seconds, the random-real baseline, and the
published figures the issue compares with.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import harness

OBJECTIVES = ("dm", "gm", "krr")
PUBLISHED = {  # Fashion-MNIST, ConvNet; the papers' own evaluation protocols
    1: "DC 70.5, DSA 70.6, KIP 73.5, FRePo 75.6, RFAD 78.6",
    10: "DC 82.3, DSA 84.6, KIP 86.8, FRePo 86.2, RFAD 87.0",
}


def settings(budget: harness.Budget):
    """(name, flags), cheapest-to-compare first: the recipes, then the grid, then the robust
    updater on the idc recipe."""
    for ipc in budget.ipcs:
        yield f"ipc{ipc}-idc", ["--recipe", "idc", "--ipc", ipc]
        for obj in OBJECTIVES:
            for rep in ("pixel", "multi"):
                for aug in ("dsa", "affine"):
                    yield (f"ipc{ipc}-{obj}-{rep}-{aug}",
                           ["--ipc", ipc, "--objective", obj, "--updater", "native",
                            "--representation", rep, "--augment", aug])
    for ipc in budget.ipcs:
        if ipc >= 10:
            for tail in ("upper", "lower"):
                yield (f"ipc{ipc}-idc-robust-{tail}",
                       ["--recipe", "idc", "--ipc", ipc, "--updater", "robust", "--cvar-tail",
                        tail])


def run_all(budget: harness.Budget, out: Path, only, jobs: int, deadline: float | None):
    todo = [(name, flags, seed) for name, flags in settings(budget)
            if harness.selected(name, only) for seed in range(budget.seeds)]
    ipcs = sorted({name.split("-")[0] for name, _, _ in todo})
    # the random baselines after the IPC's idc run has started (they are drawn in its folder)
    for ipc in ipcs:
        at = next(i for i, (name, _, _) in enumerate(todo) if name.startswith(f"{ipc}-"))
        host = todo[at][0]  # the random set is drawn in the folder of the IPC's first run
        todo[at + 1:at + 1] = [(f"{ipc}-random", host, seed) for seed in range(budget.seeds)]
    started, lock = time.perf_counter(), threading.Lock()

    def worker():
        while True:
            with lock:
                if not todo or (deadline and time.perf_counter() - started > deadline):
                    return
                name, flags, seed = todo.pop(0)
            try:
                if name.endswith("-random"):  # flags: the run it is drawn in
                    config = harness.run_dir(out, budget, flags, seed) / "config.json"
                    waited = time.perf_counter()
                    while not config.exists() and time.perf_counter() - waited < 600:
                        time.sleep(1)  # that run has just started
                    for augment in budget.augments:
                        harness.ensure_random(out, flags, seed, budget, augment)
                else:
                    harness.ensure_run(out, name, flags, seed, budget)
            except Exception as exc:  # one failed run is reported, the others go on
                print(f"  {name} seed {seed} failed: {exc}", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _iterations(run: Path) -> int | None:
    path = run / "log.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines else None


def table(budget: harness.Budget, out: Path) -> dict:
    rows: dict[str, dict] = {}
    names = [name for name, _ in settings(budget)]
    names += [f"ipc{ipc}-random" for ipc in budget.ipcs]
    for name in names:
        seen: dict[str, list] = {}
        for seed in range(budget.seeds):
            ipc = name.split("-")[0]
            run = harness.run_dir(out, budget, name, seed)
            if name.endswith("-random"):  # the baseline lives in one of the IPC's runs
                hosts = sorted(run.parent.glob(f"{ipc}-*-s{seed}/metrics_random.json"))
                run = hosts[0].parent if hosts else run
            for augment in budget.augments:
                path = run / harness.metrics_file(
                    augment, "random" if name.endswith("-random") else None)
                if path.exists():
                    metrics = harness.read_metrics(path)
                    seen.setdefault(f"acc_{augment}", []).append(metrics["acc"])
                    seen.setdefault(f"cluster_min_{augment}", []).append(metrics["cluster_min"])
            done = (run / harness.metrics_file(budget.augments[0])).exists()
            if done and not name.endswith("-random"):  # a finished run: its log is whole
                seen.setdefault("iterations", []).append(_iterations(run))
                seen.setdefault("seconds", []).append(harness.distill_seconds(run))
        if seen:
            rows[name] = {k: harness.stats(v) | {"n": len(v)} for k, v in seen.items()}
    return rows


def markdown(budget: harness.Budget, rows: dict) -> str:
    augs = budget.augments
    head = ("| set | " + " | ".join(f"acc ({a} eval)" for a in augs)
            + f" | Cluster-min ({augs[0]} eval) | iterations | distill s | seeds |")
    lines = [budget.describe(), ""]
    for ipc in budget.ipcs:
        published = PUBLISHED.get(ipc) if budget.dataset == "fashion-mnist" else None
        lines += ["", f"IPC {ipc}" + (f" (published: {published})" if published else ""), "",
                  head,
                  "|---" * (len(augs) + 5) + "|"]
        ranked = sorted(((n, r) for n, r in rows.items() if n.startswith(f"ipc{ipc}-")),
                        key=lambda nr: -nr[1].get(f"acc_{augs[0]}", {"mean": -1})["mean"])
        for name, r in ranked:
            def cell(key, digits=2):
                v = r.get(key)
                return "–" if v is None else (f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}"
                                              if v["n"] > 1 else f"{v['mean']:.{digits}f}")
            seeds = max((v["n"] for v in r.values()), default=0)
            lines.append(f"| {name} | " + " | ".join(cell(f"acc_{a}") for a in augs)
                         + f" | {cell(f'cluster_min_{augs[0]}')} | {cell('iterations', 0)} | "
                         f"{cell('seconds', 0)} | {seeds} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", choices=sorted(b for b in harness.BUDGETS if "recipes" in b),
                    default="recipes-quick")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", action="append", help="run only settings matching this glob")
    ap.add_argument("--seeds", type=int, help="distillation seeds (default: the budget's)")
    ap.add_argument("--max-seconds", type=float, help="distillation seconds per set (default: "
                    "the budget's; shorter for a dry run)")
    ap.add_argument("--epochs", type=int, help="evaluation epochs (default: the budget's)")
    ap.add_argument("--jobs", type=int, default=1, help="settings run at once")
    ap.add_argument("--deadline", type=float, help="claim no new run after this many seconds")
    ap.add_argument("--report", action="store_true", help="rebuild the table; run nothing")
    args = ap.parse_args()
    budget = harness.BUDGETS[args.budget]
    for name in ("seeds", "max_seconds", "epochs"):
        if getattr(args, name):
            budget = replace(budget, **{name: getattr(args, name)})
    (args.out / budget.folder).mkdir(parents=True, exist_ok=True)
    if not args.report:
        run_all(budget, args.out, args.only, args.jobs, args.deadline)
    rows = table(budget, args.out)
    text = markdown(budget, rows)
    print("\n" + text)
    (args.out / budget.folder / "recipes.md").write_text(text)
    (args.out / budget.folder / "recipes.json").write_text(json.dumps(
        {"budget": budget.__dict__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
