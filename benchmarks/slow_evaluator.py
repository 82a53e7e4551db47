"""A deliberately expensive black box for benchmarks/blackbox.py: costs SECONDS per candidate set,
either waiting (sleep: an external service or pipeline) or computing (busy: a CPU-bound scorer),
or SECONDS per call whatever the number of sets (call: one batch request to a service), then
scores each set by its mean squared distance from grey."""
import json
import sys
import time

import numpy as np

mode, seconds, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
images = np.load(path)["images"]
scores = []
if mode == "call":
    time.sleep(seconds)
for s in images:
    if mode == "call":
        pass
    elif mode == "sleep":
        time.sleep(seconds)
    else:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    scores.append(float(((s - 0.5) ** 2).mean()))
print(json.dumps(scores))
