"""A black-box program for the fault tests: scores each candidate set by its mean squared
distance from grey, or misbehaves as MODE says, from call number ZODD_FAIL_FROM on (counted in
the file ZODD_CALLS, under a lock: the calls of a step run at once).

``kill`` and ``kill-node`` are faults of the cluster, not of the program: while the file ZODD_KILL
exists (only once with ZODD_KILL_ONCE=1: the call that removes it), the program SIGKILLs the
Ray worker that runs it (its parent) or that worker's raylet (its grandparent), mid-scoring."""
import fcntl
import json
import os
import signal
import sys
import time

import numpy as np

mode = sys.argv[1]
with open(os.environ["ZODD_CALLS"], "a+") as counter:  # concurrent calls: one at a time
    fcntl.flock(counter, fcntl.LOCK_EX)  # (a truncating write seen half-done read as call 1)
    counter.seek(0)
    calls = int(counter.read() or 0) + 1
    counter.seek(0)
    counter.truncate()
    counter.write(str(calls))
images = np.load(sys.argv[2])["images"]
scores = [float(((s - 0.5) ** 2).mean()) for s in images]
if calls >= int(os.environ.get("ZODD_FAIL_FROM", "1")) and calls < int(os.environ.get("ZODD_FAIL_UNTIL", "1000000")):
    if mode in ("kill", "kill-node") and os.path.exists(os.environ["ZODD_KILL"]):
        try:
            if os.environ.get("ZODD_KILL_ONCE"):
                os.remove(os.environ["ZODD_KILL"])  # one call of the concurrent ones wins
            worker = os.getppid()
            with open(f"/proc/{worker}/stat") as stat:
                raylet = int(stat.read().rsplit(")", 1)[1].split()[1])
            os.kill(worker if mode == "kill" else raylet, signal.SIGKILL)
            time.sleep(5)
        except FileNotFoundError:
            pass
    if mode == "raise":
        raise RuntimeError("the evaluator crashed")
    if mode == "exit":
        sys.exit(3)
    if mode == "timeout":
        time.sleep(30)
    if mode == "garbage":
        print("hello, not json")
        sys.exit(0)
    if mode == "nan":
        scores = [float("nan")] * len(scores)
    if mode == "wrong-count":
        scores = scores[:-1]
print(json.dumps(scores))
