from dataclasses import replace

import numpy as np
import pytest
import torch

from objectives import OBJECTIVES
from zodd.models import build_model
from zodd.types import BlackBox, StepContext

MATCHING = ["dm", "gm", "krr"]  # the differentiable matching objectives


def test_krr_loss_is_scikit_learn_s_kernel_ridge_on_the_same_kernel(digits):
    """The loss against scikit-learn's KernelRidge(kernel="precomputed") fitted on the kernel of
    the docstring: linear on the network's embedding scaled by 1/sqrt(dim), ridge times the
    mean of K_ss's diagonal, one-hot targets less 1/classes, squared error summed over classes
    and averaged over the real images."""
    from sklearn.kernel_ridge import KernelRidge

    ctx = _context(digits, n=3, augment="none")
    candidate = torch.randn(1, 20, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    loss = float(OBJECTIVES["krr"](ridge=0.05).bind(ctx)(candidate)[0])
    with torch.no_grad():
        embed = lambda x: ctx.net.embed(x).double().numpy()  # noqa: E731
        phi_s, phi_r = embed(candidate[0]), embed(ctx.real.flatten(0, 1))
    dim = phi_s.shape[1]
    k_ss, k_rs = phi_s @ phi_s.T / dim, phi_r @ phi_s.T / dim
    y_s = np.eye(10)[np.repeat(np.arange(10), 2)] - 0.1
    y_r = np.eye(10)[np.repeat(np.arange(10), 3)] - 0.1
    model = KernelRidge(alpha=0.05 * np.trace(k_ss) / 20, kernel="precomputed").fit(k_ss, y_s)
    expected = ((model.predict(k_rs) - y_r) ** 2).sum(1).mean()
    assert loss == pytest.approx(expected, rel=1e-4)


def _context(digits, n=16, augment="affine", seed=0):
    gen = torch.Generator().manual_seed(seed)
    idx = digits.class_indices()
    real = digits.train_x[torch.stack([i[torch.randperm(len(i), generator=gen)[:n]] for i in idx])]
    net = build_model(1, 10, 8, width=16, seed=seed).requires_grad_(False)
    return StepContext(net, real, torch.arange(10).repeat_interleave(2), 10, seed=seed,
                       augment=augment)


@pytest.mark.parametrize("name", MATCHING)
def test_black_box_protocol(name, digits):
    objective = OBJECTIVES[name]()
    assert objective.differentiable
    f = objective.bind(_context(digits))
    assert isinstance(f, BlackBox)
    candidates = torch.randn(3, 20, 1, 8, 8)
    losses = f(candidates)
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    # per-class blocks sum to the total
    assert torch.allclose(f.blocks(candidates).sum(1), losses, rtol=1e-5)
    # one batched call equals separate calls: candidates do not interact
    single = torch.stack([f(c[None])[0] for c in candidates])
    assert torch.allclose(single, losses, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MATCHING)
def test_common_random_numbers(name, digits):
    """A bound objective is a fixed function: the same candidates give the same losses, because
    network, real batch and augmentation are fixed at bind time."""
    f = OBJECTIVES[name]().bind(_context(digits))
    candidates = torch.randn(2, 20, 1, 8, 8)
    assert torch.equal(f(candidates), f(candidates))
    # a different augmentation seed is a different function
    g = OBJECTIVES[name]().bind(replace(_context(digits), seed=1))
    assert not torch.equal(f(candidates), g(candidates))


@pytest.mark.parametrize("name", MATCHING)
def test_gradient_flows_to_the_candidates(name, digits):
    f = OBJECTIVES[name]().bind(_context(digits))
    x = torch.randn(20, 1, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(f(x[None])[0], x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_dm_is_zero_when_the_sets_coincide(digits):
    ctx = _context(digits, n=2, augment="none")
    f = OBJECTIVES["dm"]().bind(ctx)
    assert float(f(ctx.real.flatten(0, 1)[None])[0]) == pytest.approx(0.0, abs=1e-8)


def test_gm_is_zero_when_the_sets_coincide_and_positive_otherwise(digits):
    """Gradient matching's distance: sum over output units of 1 - a.b / (|a| |b| + 1e-6), so
    the same images (same augmentation) give the same gradients and a distance of exactly
    sum 1 - |g|^2 / (|g|^2 + 1e-6) (the reference's epsilon), near 0; other images do not."""
    ctx = _context(digits, n=2, augment="affine")
    f = OBJECTIVES["gm"]().bind(ctx)
    same = float(f(ctx.real.flatten(0, 1)[None])[0])
    expected = 0.0
    for g in f.real_grads.values():
        rows = g.flatten(3) if g.ndim > 4 else g
        sq = (rows.double() ** 2).sum(-1)
        expected += float((1 - sq / (sq + 1e-6)).sum())
    assert same == pytest.approx(expected, rel=1e-3, abs=1e-5) and same < 0.05
    other = float(f(torch.randn(1, 20, 1, 8, 8, generator=torch.Generator().manual_seed(1)))[0])
    assert other > 1.0


def test_krr_predicts_the_real_batch_from_itself_and_not_from_noise(digits):
    """Kernel ridge regression from S to the real batch: with S = the real batch (no
    augmentation) the regression reproduces its targets up to the ridge; random S does not;
    and it couples the classes (not separable)."""
    ctx = _context(digits, n=2, augment="none")
    f = OBJECTIVES["krr"]().bind(ctx)
    assert not f.separable
    same = float(f(ctx.real.flatten(0, 1)[None])[0])
    noise = float(f(torch.randn(1, 20, 1, 8, 8, generator=torch.Generator().manual_seed(1)))[0])
    assert same < 0.05 * noise and noise > 0.3
