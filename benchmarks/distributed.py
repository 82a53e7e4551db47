"""One run on one process and on several (zodd.distributed), side by side.

    python benchmarks/distributed.py --dataset fashion-mnist --ipc 10 --iterations 12 \
        --repeats 3 --out OUT

Each repeat runs the same ``zodd distill`` (DM with the robust updater unless ``--flags`` says
otherwise) as one process and, through ``torchrun --standalone``, as 2 (``--processes``)
processes, one thread each, alternating. A run's seconds per step are the median of its log's
per-step times from step 3 on (the first steps warm the caches); the table gives the median
over repeats, the speed-up, and the serial share it implies (Amdahl: with a share f that does
not split, N processes take f + (1 - f) / N of one's time, so f = (N t_N / t_1 - 1) / (N - 1);
it holds the processes' communication too), and how far the N-process set lies from the
one-process set (largest absolute pixel difference, standardised units). Writes OUT/distributed.json
and .md; runs already in OUT are read, not made again.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from harness import per_iteration


def _run(out: Path, processes: int, flags: list[str]) -> None:
    if (out / "synthetic.pt").exists():
        return
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([*launcher, "-m", "zodd.cli", "distill", "--quiet", "--overwrite", *flags,
                    "--out", str(out)], check=True, env=env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--flags", default="--objective dm --updater robust",
                   help="further zodd distill flags, one string")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    flags = ["--dataset", a.dataset, "--ipc", str(a.ipc), "--iterations", str(a.iterations),
             *a.flags.split()]
    times: dict[int, list[float]] = {1: [], a.processes: []}
    gaps = []
    for r in range(a.repeats):
        runs = {}
        for n in (1, a.processes):
            runs[n] = a.out / f"r{r}-p{n}"
            _run(runs[n], n, flags)
            times[n].append(per_iteration(runs[n], skip=2))
        one, many = (torch.load(runs[n] / "synthetic.pt", weights_only=True)["images"]
                     for n in (1, a.processes))
        gaps.append(float((one - many).abs().max()))
    t1, tn = statistics.median(times[1]), statistics.median(times[a.processes])
    n = a.processes
    result = {"flags": flags, "processes": n, "seconds_per_step": {str(k): v for k, v in
                                                                     times.items()},
              "median": {"1": t1, str(n): tn}, "speedup": t1 / tn,
              "serial_share": (n * tn / t1 - 1) / (n - 1), "max_pixel_gap": gaps}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "distributed.json").write_text(json.dumps(result, indent=1))
    f = result["serial_share"]
    table = [f"`zodd distill {' '.join(flags)}`, one thread a process, {a.repeats} repeats "
             "(median of steps 3.. of each run, then over repeats):", "",
             "| processes | s / step | speed-up | largest pixel gap to 1 process |",
             "|---|---|---|---|", f"| 1 | {t1:.3f} | 1.00 | - |",
             f"| {n} | {tn:.3f} | {t1 / tn:.2f} | {max(gaps):.1e} |", "",
             f"Serial share (with the communication), from Amdahl: {f:.2f}; N devices would "
             "take " + ", ".join(f"{k}: {f + (1 - f) / k:.2f}" for k in (2, 4, 8))
             + " of one's step time."]
    (a.out / "distributed.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
