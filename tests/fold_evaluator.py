"""A black-box program for the fold tests: it appends the ``{seed} {fold} {folds}`` it was
given to the file ZODD_SEEN, and scores each candidate set by its mean squared distance from
grey on the search's folds, and by minus that on fold 0 (so the set the search makes is worse
there than the one it started from). With ZODD_NAN_FOLD=k it prints NaN for fold k."""
import json
import os
import sys

import numpy as np

seed, fold, folds, path = sys.argv[1:5]
with open(os.environ["ZODD_SEEN"], "a") as seen:
    seen.write(f"{seed} {fold} {folds}\n")
distance = [float(((s - 0.5) ** 2).mean()) for s in np.load(path)["images"]]
scores = [-d for d in distance] if fold == "0" else distance
if fold == os.environ.get("ZODD_NAN_FOLD"):
    scores = [float("nan")] * len(scores)
print(json.dumps(scores))
