"""Score candidate sets with a program zodd cannot differentiate: a 1-nearest-neighbour classifier
fitted on each candidate set, scored on scikit-learn's digits. Prints one error rate per set."""
import json, sys
import numpy as np
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

data = np.load(sys.argv[1])                       # images [K, N, 1, 8, 8] in [0, 1], labels [N]
digits = load_digits()
real, truth = digits.data / 16.0, digits.target   # the images zodd scores against
errors = [1 - KNeighborsClassifier(1).fit(s.reshape(len(s), -1), data["labels"]).score(real, truth)
          for s in data["images"]]
print(json.dumps(errors))                         # lower is better, one number per candidate
