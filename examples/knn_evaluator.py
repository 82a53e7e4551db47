"""Score candidate sets with a program zodd cannot differentiate: a 1-nearest-neighbour classifier
fitted on each candidate set, scored on one fold of scikit-learn's digits (zodd's {fold} of
{folds}: a fresh part each step, fold 0 kept for choosing the set). Prints one error rate per set."""
import json, sys
import numpy as np
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

data = np.load(sys.argv[1])                       # images [K, N, 1, 8, 8] in [0, 1], labels [N]
fold, folds = (int(a) for a in sys.argv[2:4]) if len(sys.argv) > 3 else (0, 1)
digits = load_digits()
real, truth = digits.data[fold::folds] / 16.0, digits.target[fold::folds]  # this fold's images
errors = [1 - KNeighborsClassifier(1).fit(s.reshape(len(s), -1), data["labels"]).score(real, truth)
          for s in data["images"]]
print(json.dumps(errors))                         # lower is better, one number per candidate
