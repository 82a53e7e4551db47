"""Ray workers killed under load: the same run with and without the faults.

    python benchmarks/faults.py --iterations 200 --every 20 --cost 0.2

Both runs: ``zodd distill --objective command`` against a black box that takes COST seconds a
call (benchmarks/slow_evaluator.py, ``call``), ``--workers 2``, digits IPC 1, es with 4
directions. In the second, a watcher counts the program's calls (two a step, one per worker) and
every EVERY steps SIGKILLs the Ray worker whose call is running (the program's parent), while it
scores. Prints one table row per run (wall seconds, seconds per step, kills, whether the set and
the losses are the same bit for bit) for BENCHMARKS.md's "Faults" table.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAM = "slow_evaluator.py"


def _calls_running() -> list[tuple[int, int]]:
    """(pid, parent pid) of every call of the black box now running."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if len(argv) > 1 and argv[1].decode(errors="replace").endswith(PROGRAM):
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found.append((int(proc.name), parent))
        except (OSError, ValueError, IndexError):
            continue
    return found


class Killer(threading.Thread):
    """Every ``every`` steps (2 calls a step), SIGKILL the worker running a call."""

    def __init__(self, every: int):
        super().__init__(daemon=True)
        self.every, self.kills, self.seen, self.stop = every, 0, set(), threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            running = _calls_running()
            for pid, _ in running:
                self.seen.add(pid)
            if running and len(self.seen) >= 2 * self.every * (self.kills + 1):
                try:
                    os.kill(running[0][1], signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.01)


def one_run(out: Path, args, kill: bool) -> dict:
    program = f"{sys.executable} {HERE / PROGRAM} call {args.cost} {{input}}"
    killer = Killer(args.every) if kill else None
    if killer:
        killer.start()
    started = time.perf_counter()
    done = subprocess.run(["zodd", "distill", "--objective", "command", "--command", program,
                           "--estimator", "es", "--directions", "4", "--ipc", "1",
                           "--workers", "2", "--iterations", str(args.iterations), "--quiet",
                           "--out", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if killer:
        killer.stop.set()
    if done.returncode != 0:
        sys.exit(f"the run failed: {done.stderr.strip().splitlines()[-1]}")
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return {"wall": wall, "seconds": rows[-1]["seconds"], "losses": [r["loss"] for r in rows],
            "set": (out / "synthetic.pt").read_bytes(), "kills": killer.kills if killer else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--cost", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean = one_run(Path(tmp) / "clean", args, kill=False)
        faulty = one_run(Path(tmp) / "faulty", args, kill=True)
    print(f"\n{args.iterations} steps, black box {args.cost} s a call, --workers 2, a worker "
          f"killed every {args.every} steps")
    print("| run | worker kills | wall s | run s (log) | s/step | same set | same losses |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("no faults", clean), ("workers killed", faulty)):
        print(f"| {name} | {r['kills']} | {r['wall']:.1f} | {r['seconds']:.1f} | "
              f"{r['seconds'] / args.iterations:.3f} | {r['set'] == clean['set']} | "
              f"{r['losses'] == clean['losses']} |")
    extra = faulty["seconds"] - clean["seconds"]
    print(f"cost of the faults: {extra:+.1f} s in all, "
          f"{extra / max(faulty['kills'], 1):+.2f} s a kill")


if __name__ == "__main__":
    main()
