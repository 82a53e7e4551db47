"""Outside evaluators for the black-box benchmark: programs zodd reaches only through
``--objective command``. Each fits a scikit-learn model on every candidate set and prints its
error rates (one number per candidate, lower is better) on held-out real images.

    python benchmarks/evaluators.py KIND DATASET SPLIT FILE.npz [SEED FOLD FOLDS]

KIND: knn (1-nearest neighbour), mlp (an MLP of 64 hidden units, 50 Adam iterations, seed 0),
trees (extra trees, 50 trees, seed 0). SPLIT: ``score`` (the first half of the data set's test
images: what a run optimises against) or ``test`` (the second half: never scored during a run,
the benchmark's final figure). FILE: zodd's .npz (``images [K, N, ch, h, w]`` in [0, 1],
``labels [N]``), or a zodd ``synthetic.pt`` for one set's error. SEED FOLD FOLDS (zodd's
``{seed} {fold} {folds}``): the model's seed (else 0) and the part of the split scored, every
FOLDS-th image from the FOLD-th (else all of it): a scorer that does not leak its particulars.
"""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np

KINDS = ("knn", "mlp", "trees")


def held_out(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's real images as flat [0, 1] pixels, and their labels."""
    from zodd.data import load

    data = load(dataset)
    pixels = data.denormalise(data.test_x).flatten(1).numpy()
    labels = data.test_y.numpy()
    half = len(labels) // 2
    part = slice(0, half) if split == "score" else slice(half, None)
    return pixels[part], labels[part]


def model(kind: str, seed: int = 0):
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    if kind == "knn":
        return KNeighborsClassifier(1)
    if kind == "mlp":
        return MLPClassifier((64,), max_iter=50, random_state=seed)
    return ExtraTreesClassifier(50, random_state=seed)


def errors(kind: str, sets: np.ndarray, labels: np.ndarray, real: np.ndarray,
           truth: np.ndarray, seed: int = 0) -> list[float]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MLP's "not converged": its budget is the point
        for s in sets:
            fitted = model(kind, seed).fit(s.reshape(len(s), -1), labels)
            out.append(float(1 - fitted.score(real, truth)))
    return out


def main() -> None:
    kind, dataset, split, path = sys.argv[1:5]
    if kind not in KINDS or split not in ("score", "test") or len(sys.argv) not in (5, 8):
        sys.exit(f"usage: evaluators.py {{{'|'.join(KINDS)}}} DATASET {{score|test}} FILE "
                 "[SEED FOLD FOLDS]")
    real, truth = held_out(dataset, split)
    seed = 0
    if len(sys.argv) == 8:
        seed, fold, folds = (int(a) for a in sys.argv[5:8])
        real, truth = real[fold::folds], truth[fold::folds]
    if path.endswith(".npz"):
        batch = np.load(path)
        print(json.dumps(errors(kind, batch["images"], batch["labels"], real, truth, seed)))
        return
    import torch

    from zodd.data import load

    data = load(dataset)
    payload = torch.load(path, weights_only=True)
    pixels = data.denormalise(payload["images"]).clamp(0, 1).numpy()
    print(json.dumps(errors(kind, pixels[None], payload["labels"].numpy(), real, truth)[0]))


if __name__ == "__main__":
    main()
