"""Do two machines agree? The same runs (same folder, setting and seed) made under two OUT
directories, e.g. one on the CPU and one on a GPU, compared metric by metric.

    python benchmarks/compare.py runs/evidence runs/evidence-gpu

A seed draws the same initialisation, batches and networks on every device (zodd.types.
resolve_device), so the two copies of a run differ only through rounding, which grows over
training; the per-run differences below show by how much, beside the seed-to-seed spread of the
same settings. Prints a markdown table; reads every metrics.json and metrics_random.json that
both directories hold.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from zodd.evaluate import METRICS


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
    rows = ["| metric | runs | mean Δ (b − a) | mean abs Δ | largest abs Δ |", "|---|---|---|---|---|"]
    for m in METRICS:
        diffs = [rb[m]["mean"] - ra[m]["mean"] for ra, rb in found.values()]
        absd = [abs(d) for d in diffs]
        rows.append(f"| {m} | {len(diffs)} | {statistics.mean(diffs):+.2f} | "
                    f"{statistics.mean(absd):.2f} | {max(absd):.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    found = pairs(args.a, args.b)
    if not found:
        raise SystemExit(f"compare.py: no run is evaluated under both {args.a} and {args.b}")
    print(f"{len(found)} evaluations present under both {args.a} (a) and {args.b} (b)\n")
    print(table(found))


if __name__ == "__main__":
    main()
