"""Do two machines agree? The same runs (same folder, setting and seed) made under two OUT
directories, e.g. one on the CPU and one on a GPU, compared metric by metric.

    python benchmarks/compare.py runs/evidence runs/evidence-gpu

A seed draws the same initialisation, batches and networks on every device (zodd.types.
resolve_device), so the two copies of a run differ only through rounding, which grows over
training; the per-run differences below show by how much, beside the seed-to-seed spread of the
same settings. Two settings compared seed by seed (the same runs made with and without a
flag) read the same way: the paired difference, its spread and how many pairs it favours.
Prints a markdown table; reads every metrics.json and metrics_random.json that both
directories hold (``--folder``: only one folder's).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from zodd.evaluation import METRICS


def pairs(a: Path, b: Path) -> dict[str, tuple[dict, dict]]:
    """``folder/run/file`` -> (metrics under a, metrics under b), for files present in both."""
    found = {}
    for path in sorted(a.glob("*/*/metrics*.json")):
        rel = path.relative_to(a)
        twin = b / rel
        if twin.exists():
            found[str(rel)] = (json.loads(path.read_text()), json.loads(twin.read_text()))
    return found


def table(found: dict[str, tuple[dict, dict]]) -> str:
    rows = ["| metric | runs | mean a | mean b | mean Δ (b − a) | sd of Δ | b above a in | "
            "largest abs Δ |", "|---|---|---|---|---|---|---|---|"]
    for m in METRICS:
        a = [ra[m]["mean"] for ra, _ in found.values()]
        b = [rb[m]["mean"] for _, rb in found.values()]
        diffs = [y - x for x, y in zip(a, b)]
        sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        rows.append(f"| {m} | {len(diffs)} | {statistics.mean(a):.2f} | {statistics.mean(b):.2f} "
                    f"| {statistics.mean(diffs):+.2f} | {sd:.2f} | "
                    f"{sum(d > 0 for d in diffs)} of {len(diffs)} | "
                    f"{max(abs(d) for d in diffs):.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--folder", help="only runs under this folder (e.g. digits)")
    args = ap.parse_args()
    found = {k: v for k, v in pairs(args.a, args.b).items()
             if args.folder is None or k.split("/")[0] == args.folder}
    if not found:
        raise SystemExit(f"compare.py: no run is evaluated under both {args.a} and {args.b}")
    print(f"{len(found)} evaluations present under both {args.a} (a) and {args.b} (b)\n")
    print(table(found))


if __name__ == "__main__":
    main()
