import pytest
import torch

from zodd.estimators import ESTIMATORS, Autograd, Gaussian, choose
from zodd.types import ZoddError


class Quadratic:
    """f(x) = 0.5 (x - c)^T A (x - c) per candidate; the exact gradient is A (x - c)."""

    def __init__(self, dim: int, differentiable: bool = True, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        b = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
        self.a = b @ b.T / dim + torch.eye(dim, dtype=torch.float64)
        self.c = torch.randn(dim, generator=gen, dtype=torch.float64)
        self.differentiable = differentiable
        self.calls = 0

    def __call__(self, candidates):
        self.calls += 1
        d = candidates.flatten(1) - self.c
        return 0.5 * ((d @ self.a) * d).sum(1)

    def grad(self, x):
        return (x.flatten() - self.c) @ self.a


def test_registry_keys_are_the_cli_vocabulary():
    assert set(ESTIMATORS) >= {"autograd", "gaussian"}


def test_autograd_is_exact_with_one_query():
    f = Quadratic(12)
    x = torch.randn(3, 4, dtype=torch.float64)
    est = Autograd().estimate(f, x, torch.Generator())
    assert est.queries == 1 and f.calls == 1
    assert torch.allclose(est.grad.flatten(), f.grad(x))
    assert est.loss == pytest.approx(float(f(x[None])[0]))


def test_autograd_refuses_a_non_differentiable_black_box():
    with pytest.raises(ZoddError, match="differentiable"):
        Autograd().estimate(Quadratic(4, differentiable=False), torch.zeros(4), torch.Generator())
    with pytest.raises(ZoddError):
        choose("autograd", differentiable=False)
    assert choose("auto", True) == "autograd" and choose("auto", False) == "gaussian"


def test_gaussian_is_unbiased_on_a_quadratic():
    """Gaussian smoothing leaves a quadratic's gradient unchanged, so the forward-difference
    estimate is unbiased: averaged over many draws it converges to the true gradient."""
    dim = 10
    f = Quadratic(dim, differentiable=False)
    x = torch.randn(dim, dtype=torch.float64)
    est = Gaussian(directions=4000, sigma=1e-3)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([est.estimate(f, x, gen).grad for _ in range(20)])
    mean, true = draws.mean(0), f.grad(x)
    # standard error of the mean: per-draw variance ~ ||g||^2 (dim + 1) / (M * draws)
    stderr = true.norm() * ((dim + 1) / (4000 * 20)) ** 0.5
    assert (mean - true).norm() < 5 * stderr
    assert f.calls == 20  # one batched call per estimate


def test_gaussian_counts_queries_and_reuses_f_of_x():
    f = Quadratic(6, differentiable=False)
    x = torch.randn(6, dtype=torch.float64)
    est = Gaussian(directions=7, sigma=0.1).estimate(f, x, torch.Generator().manual_seed(0))
    assert est.queries == 8
    assert est.loss == pytest.approx(float(f(x[None])[0]))


def test_gaussian_is_reproducible_from_the_generator():
    f = Quadratic(6, differentiable=False)
    x = torch.randn(6, dtype=torch.float64)
    a = Gaussian(directions=5).estimate(f, x, torch.Generator().manual_seed(3)).grad
    b = Gaussian(directions=5).estimate(f, x, torch.Generator().manual_seed(3)).grad
    assert torch.equal(a, b)
