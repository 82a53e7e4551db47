"""A black-box program for the fault tests: scores each candidate set by its mean squared
distance from grey, or misbehaves as MODE says, from call number ZODD_FAIL_FROM on (counted in
the file ZODD_CALLS)."""
import json
import os
import sys
import time

import numpy as np

mode = sys.argv[1]
calls_file = os.environ["ZODD_CALLS"]
calls = int(open(calls_file).read() or 0) + 1 if os.path.exists(calls_file) else 1
open(calls_file, "w").write(str(calls))
images = np.load(sys.argv[2])["images"]
scores = [float(((s - 0.5) ** 2).mean()) for s in images]
if calls >= int(os.environ.get("ZODD_FAIL_FROM", "1")) and calls < int(os.environ.get("ZODD_FAIL_UNTIL", "1000000")):
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
