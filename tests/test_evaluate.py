"""The evaluation's metrics and shifted test sets, against networks whose answers are known."""
import numpy as np
import pytest
import torch
from torch import nn

from zodd import evaluation
from zodd.evaluation import BLUR_SIGMA, METRICS, NOISE_STD


@pytest.fixture(scope="module")
def tests_of(digits):
    return evaluation.TestSets.build(digits)


class Lookup(nn.Module):
    """Answers from a table: the label of the nearest clean test image (perfect on the clean
    set), or always ``constant``."""

    def __init__(self, images, labels, classes=10, constant=None):
        super().__init__()
        self.images, self.labels, self.classes, self.constant = images, labels, classes, constant

    def forward(self, x):
        if self.constant is not None:
            picks = torch.full((len(x),), self.constant)
        else:
            picks = self.labels[torch.cdist(x.flatten(1), self.images.flatten(1)).argmin(1)]
        return nn.functional.one_hot(picks, self.classes).float()


def test_a_perfect_network_scores_100_on_clean_accuracy_and_cluster_min(digits, tests_of):
    net = Lookup(digits.test_x, digits.test_y)
    metrics = evaluation.test_metrics(net, tests_of)
    assert metrics["acc"] == 100.0 and metrics["cluster_min"] == 100.0
    assert set(metrics) == set(METRICS) | {"per_class"}
    assert metrics["per_class"] == [100.0] * 10


def test_cluster_min_is_the_worst_cluster_and_at_most_accuracy(digits, tests_of):
    net = Lookup(digits.test_x, digits.test_y, constant=3)
    metrics = evaluation.test_metrics(net, tests_of)
    truth = (digits.test_y == 3).numpy()
    assert metrics["acc"] == pytest.approx(truth.mean() * 100)
    worst = min(truth[tests_of.clusters == k].mean() for k in np.unique(tests_of.clusters)) * 100
    assert metrics["cluster_min"] == pytest.approx(worst)
    assert metrics["cluster_min"] <= metrics["acc"]
    assert metrics["noise"] == metrics["blur"] == metrics["invert"] == metrics["acc"]


def test_the_shifted_test_sets_are_the_stated_shifts(digits, tests_of):
    pixels = digits.denormalise(digits.test_x)
    noise = digits.denormalise(tests_of.variants["noise"]) - pixels
    assert noise.std().item() == pytest.approx(NOISE_STD, rel=0.05)
    assert abs(noise.mean().item()) < 0.01
    inverted = digits.denormalise(tests_of.variants["invert"])
    assert torch.allclose(inverted, 1 - pixels, atol=1e-5)
    blurred = digits.denormalise(tests_of.variants["blur"])

    def roughness(x):  # mean absolute difference between horizontal neighbours
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()

    assert roughness(blurred) < 0.8 * roughness(pixels) and BLUR_SIGMA > 0
    assert torch.allclose(blurred.mean(), pixels.mean(), atol=0.05)  # a blur moves no mass far
    assert torch.equal(tests_of.labels, digits.test_y)
    assert len(np.unique(tests_of.clusters)) == 10


def test_networks_trained_together_are_the_ones_trained_alone(digits):
    """Same draws per seed, SGD elementwise: vmapped training differs by float rounding only."""
    from zodd.evaluation import EvalConfig, train_network, train_together
    from zodd.synthetic import initialise

    syn = initialise(digits, 2, "real", torch.Generator().manual_seed(0))
    cfg = EvalConfig(epochs=2, device="cpu")  # rounding grows with training: few epochs
    together = train_together(syn.images, syn.labels, digits, cfg, [0, 1, 2], flip=False)
    for seed in (0, 2):
        alone = train_network(syn.images, syn.labels, digits, cfg, seed, flip=False)
        for a, b in zip(alone.parameters(), together[seed].parameters()):
            assert torch.allclose(a, b, atol=2e-5, rtol=0)  # wrong draws: ~1e-2
    a, b = (list(n.parameters())[0] for n in together[:2])
    assert not torch.allclose(a, b)  # different seeds, different networks


def test_clusters_are_cached_and_a_corrupt_cache_is_recomputed(digits, tmp_path):
    from zodd.evaluation import test_clusters

    pixels = digits.denormalise(digits.test_x)
    first = test_clusters(pixels, tmp_path)
    cached = list(tmp_path.glob("*.npy"))
    assert len(cached) == 1
    assert np.array_equal(test_clusters(pixels, tmp_path), first)
    cached[0].write_bytes(b"garbage")
    assert np.array_equal(test_clusters(pixels, tmp_path), first)


def test_the_evaluation_augmentation_is_chosen_and_recorded(digits, tests_of):
    """--augment dsa trains on DSA-augmented batches (another network than affine's, same
    seed) and the report says which augmentation it used."""
    from zodd.evaluation import EvalConfig, evaluate, train_network
    from zodd.synthetic import initialise

    syn = initialise(digits, 2, "real", torch.Generator().manual_seed(0))
    nets = {a: train_network(syn.images, syn.labels, digits, EvalConfig(epochs=2, augment=a),
                             0, flip=False) for a in ("affine", "dsa", "none")}
    first = {a: list(n.parameters())[0] for a, n in nets.items()}
    assert not torch.allclose(first["affine"], first["dsa"])
    assert not torch.allclose(first["dsa"], first["none"])
    report = evaluate(syn, digits, EvalConfig(seeds=1, epochs=1, augment="dsa"), tests=tests_of)
    assert report["protocol"]["augment"] == "dsa"
