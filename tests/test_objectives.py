from dataclasses import replace

import pytest
import torch

from objectives import OBJECTIVES
from zodd.models import build_model
from zodd.types import BlackBox, StepContext

MATCHING = ["dm", "gm"]  # the differentiable matching objectives


def _context(digits, n=16, augment=True, seed=0):
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
    ctx = _context(digits, n=2, augment=False)
    f = OBJECTIVES["dm"]().bind(ctx)
    assert float(f(ctx.real.flatten(0, 1)[None])[0]) == pytest.approx(0.0, abs=1e-8)
