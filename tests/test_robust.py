import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zodd.nearest import assign_clusters
from zodd.robust import (UPDATERS, RobustUpdater, cvar, grouped_cvar, network_optimizer,
                         robust_loss, updates_on_real)

losses_st = st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=40)


@given(losses_st, st.sampled_from(["upper", "lower"]))
def test_alpha_one_is_the_mean(values, tail):
    x = torch.tensor(values, dtype=torch.float64)
    assert torch.allclose(cvar(x, 1.0, tail), x.mean())


@given(losses_st)
def test_small_alpha_gives_max_upper_and_min_lower(values):
    x = torch.tensor(values, dtype=torch.float64)
    alpha = 0.5 / len(values)
    assert torch.allclose(cvar(x, alpha, "upper"), x.max())
    assert torch.allclose(cvar(x, alpha, "lower"), x.min())


@settings(max_examples=50)
@given(losses_st)
def test_monotone_in_alpha(values):
    x = torch.tensor(values, dtype=torch.float64)
    alphas = torch.linspace(0.01, 1.0, 60).tolist()
    upper = torch.stack([cvar(x, a, "upper") for a in alphas])
    lower = torch.stack([cvar(x, a, "lower") for a in alphas])
    assert (upper[1:] <= upper[:-1] + 1e-9).all()  # the upper tail shrinks towards the mean
    assert (lower[1:] >= lower[:-1] - 1e-9).all()


@settings(max_examples=50)
@given(losses_st, st.floats(0.02, 0.98))
def test_continuous_in_alpha(values, alpha):
    x = torch.tensor(values, dtype=torch.float64)
    for tail in ("upper", "lower"):
        gap = (cvar(x, alpha + 1e-7, tail) - cvar(x, alpha, tail)).abs()
        assert gap < 1e-3 * (1 + x.abs().max())


def test_boundary_sample_counts_with_its_fraction():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.isclose(cvar(x, 0.5, "upper"), torch.tensor(3.5))
    # alpha * n = 1.5: the top value with weight 1, the next with weight 0.5
    assert torch.isclose(cvar(x, 0.375, "upper"), torch.tensor((4 + 0.5 * 3) / 1.5))
    assert torch.isclose(cvar(x, 0.375, "lower"), torch.tensor((1 + 0.5 * 2) / 1.5))


def test_grouped_matches_one_group_at_a_time():
    gen = torch.Generator().manual_seed(1)
    values = torch.rand(50, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 6, (50,), generator=gen)
    groups[groups == 4] = 5  # leave group 4 empty
    got, counts = grouped_cvar(values, groups, 6, 0.3, "upper")
    assert counts[4] == 0
    for g in (0, 1, 2, 3, 5):
        assert torch.isclose(got[g], cvar(values[groups == g], 0.3, "upper"))


def test_assign_clusters_picks_the_nearest_centre():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.tensor([[1.0, 1.0], [9.0, -1.0], [-1.0, 8.0], [6.0, 1.0]])
    assert assign_clusters(points, centres).tolist() == [0, 1, 2, 1]


def _per_sample_losses(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(x @ w, y, reduction="none")


def test_alpha_one_single_cluster_is_three_times_ce():
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(30, generator=gen)
    loss, terms = robust_loss(losses, torch.zeros(30, dtype=torch.long), 1, 1.0)
    assert torch.isclose(loss, 3 * losses.mean())


def test_robust_gradient_reaches_theta_and_matches_finite_differences():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    ids = torch.randint(0, 4, (40,), generator=gen)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def robust(w):
        return robust_loss(_per_sample_losses(w, x, y), ids, 4, 0.5)[0]

    (g_robust,) = torch.autograd.grad(robust(w), w)
    (g_ce,) = torch.autograd.grad(_per_sample_losses(w, x, y).mean(), w)
    assert not torch.allclose(g_robust, g_ce, atol=1e-3)
    eps = 1e-6
    for i, j in [(0, 0), (2, 1), (4, 2)]:
        e = torch.zeros_like(w)
        e[i, j] = eps
        fd = (robust(w + e) - robust(w - e)) / (2 * eps)
        assert torch.isclose(g_robust[i, j], fd, rtol=1e-5, atol=1e-8)


def test_updater_modes_train_the_network_differently():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(3, 20, 1, 4, 4, generator=gen)
    synthetic = real[:, :2].clone()
    nets = {}
    for mode in ("robust", "ce"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        updater = RobustUpdater(alpha=0.3) if mode == "robust" else UPDATERS[mode]()
        before = [p.clone() for p in net.parameters()]
        terms = updater.step(net, network_optimizer(net, 0.5), real, synthetic,
                             torch.Generator().manual_seed(1))
        assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
        assert ("max_cvar" in terms) == (mode == "robust")
        nets[mode] = net
    assert not torch.allclose(nets["robust"][1].weight, nets["ce"][1].weight)


def test_batched_assignment_matches_cdist():
    gen = torch.Generator().manual_seed(0)
    points, centres = torch.randn(4, 30, 1, 5, 5, generator=gen), torch.randn(4, 6, 1, 5, 5,
                                                                            generator=gen)
    expected = torch.cdist(points.flatten(2), centres.flatten(2)).argmin(2)
    assert torch.equal(assign_clusters(points, centres, batch_dims=1), expected)


def test_large_ipc_uses_random_centres_within_each_class():
    gen = torch.Generator().manual_seed(0)
    real, synthetic = torch.randn(3, 50, 1, 4, 4, generator=gen), torch.randn(3, 12, 1, 4, 4)
    ids, num = RobustUpdater(clusters=4).cluster(None, real, synthetic, gen)
    assert num == 12 and ids.shape == (150,)
    assert torch.equal(ids // 4, torch.arange(3).repeat_interleave(50))  # clusters stay in class
    small_ids, small_num = RobustUpdater(clusters=4).cluster(None, real, synthetic[:, :5], gen)
    assert small_num == 15  # IPC <= 10: every synthetic sample is a centre


def test_feature_space_clusters_use_the_network_embedding():
    from zodd.models import build_model

    gen = torch.Generator().manual_seed(0)
    real, synthetic = torch.randn(2, 30, 1, 8, 8, generator=gen), torch.randn(2, 3, 1, 8, 8,
                                                                            generator=gen)
    net = build_model(1, 2, 8, width=8, seed=0)
    ids, num = RobustUpdater(cluster_space="feature").cluster(net, real, synthetic, gen)
    with torch.no_grad():
        expected = torch.cat([assign_clusters(net.embed(real[c]), net.embed(synthetic[c])) + 3 * c
                              for c in range(2)])
    assert num == 6 and torch.equal(ids, expected)


@pytest.mark.parametrize("terms, expected", [
    ("mean+max", lambda ce, cv: ce + cv.mean() + cv.max()),
    ("mean", lambda ce, cv: ce + cv.mean()),
    ("max", lambda ce, cv: ce + cv.max()),
])
def test_cvar_terms_keep_the_named_aggregates(terms, expected):
    gen = torch.Generator().manual_seed(3)
    losses = torch.rand(60, generator=gen)
    ids = torch.randint(0, 5, (60,), generator=gen)
    cvars = torch.stack([cvar(losses[ids == k], 0.5) for k in range(5)])
    loss, report = robust_loss(losses, ids, 5, 0.5, terms=terms)
    assert torch.isclose(loss, expected(losses.mean(), cvars))
    assert report["max_cvar"] == pytest.approx(cvars.max().item())


def test_cvar_terms_train_the_network_differently():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(3, 20, 1, 4, 4, generator=gen)
    weights = {}
    for terms in ("mean+max", "mean", "max"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        updater = RobustUpdater(alpha=0.3, cvar_terms=terms)
        updater.step(net, network_optimizer(net, 0.5), real, real[:, :2].clone(),
                     torch.Generator().manual_seed(1))
        weights[terms] = net[1].weight.detach().clone()
    assert not torch.allclose(weights["mean"], weights["max"])
    assert not torch.allclose(weights["mean"], weights["mean+max"])


def test_unknown_cvar_terms_are_refused():
    with pytest.raises(ValueError, match="terms"):
        robust_loss(torch.rand(10), torch.zeros(10, dtype=torch.long), 1, 0.5, terms="min")


def test_native_updater_leaves_the_network_untouched():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(3, 20, 1, 4, 4, generator=gen)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    assert UPDATERS["native"] is None and not updates_on_real("native")
    assert updates_on_real("ce") and updates_on_real("robust")
    from zodd.networks import StepNetwork

    step = StepNetwork(lambda seed: net, None, lr=0.5, uses_network=True, reinit_every=1,
                       n_update=20, on_synthetic=0, ce_weight=0.0, queue=None)
    step.refresh(0, gen)
    before = [p.clone() for p in net.parameters()]
    state = gen.get_state()
    assert step.update(real, lambda: real[:, :2], gen) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert torch.equal(gen.get_state(), state)  # and draws nothing


def test_native_loop_keeps_theta_as_initialised_each_iteration(digits):
    """In the loop: --updater native binds the objective to the network exactly as built."""
    from zodd.config import DistillConfig
    from zodd.loop import Loop
    from zodd.plan import resolve

    loop = Loop(resolve(DistillConfig(updater="native", ipc=1, batch_size=8), digits), digits)
    seen = []
    bind = loop._bind

    def spy(real, *args):
        seen.append([p.clone() for p in loop.network.net.parameters()])
        return bind(real, *args)

    loop._bind = spy
    for _ in range(2):
        saved = loop.gen.get_state()
        loop.advance()
        fresh = torch.Generator()
        fresh.set_state(saved)  # the network advance() built: the same seed, drawn first
        from zodd.models import build_model
        net = build_model(1, 10, 8, seed=int(torch.randint(2**31 - 1, (1,), generator=fresh)))
        assert all(torch.equal(a, b) for a, b in zip(seen[-1], net.parameters()))


@pytest.mark.parametrize("mode", ["robust", "ce"])
def test_one_pass_gradient_is_the_update_on_the_objectives_augmented_batch(digits, mode):
    """--one-pass: the gradient from dm's shared forward equals the update's own forward and
    backward on the same augmented images, and dm's real means are those of a separate pass."""
    from objectives import OBJECTIVES
    from zodd.models import build_model
    from zodd.types import SharesRealPass, StepContext

    net = build_model(1, 10, 8, seed=3)
    picks = torch.stack([torch.nonzero(digits.train_y == c)[:12, 0] for c in range(10)])
    real, k = digits.train_x[picks], 5
    syn = digits.train_x[picks[:, 12 - 2:]]  # two "synthetic" samples a class
    ctx = StepContext(net, real, torch.arange(10).repeat_interleave(2), 10, seed=7)
    dm = OBJECTIVES["dm"]()
    updater = UPDATERS[mode]()
    net.requires_grad_(True)
    shared = dm.bind(dataclasses.replace(ctx, one_pass=k))
    assert isinstance(shared, SharesRealPass)
    updater.gradient(net, network_optimizer(net, 0.01), shared.take_one_pass(), real[:, :k], syn,
                     torch.Generator().manual_seed(0))
    assert shared.take_one_pass() is None  # handed over once
    got = [p.grad.clone() for p in net.parameters()]

    separate = dm.bind(ctx)  # one_pass 0: the whole batch without a graph
    assert separate.take_one_pass() is None
    assert torch.allclose(shared.real_mean, separate.real_mean, atol=1e-5)
    augmented = separate._augment(real)[:, :k].flatten(0, 1)
    y, ids, num = updater.targets(net, real[:, :k], syn, torch.Generator().manual_seed(0))
    net.zero_grad(set_to_none=True)
    updater.loss(net(augmented), y, ids, num)[0].backward()
    for a, b in zip(got, net.parameters()):
        assert torch.allclose(a, b.grad, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in got)


def test_one_pass_loop_matches_under_one_network_and_updates_after_the_step(digits):
    """In the loop with --one-pass the real and synthetic sides of dm see the same parameters
    (those from before the step's update), and the update lands once S has stepped."""
    from zodd.config import DistillConfig
    from zodd.loop import Loop
    from zodd.plan import resolve

    loop = Loop(resolve(DistillConfig(ipc=2, batch_size=16, one_pass=True), digits), digits)
    loop.advance()  # the first network, updated once
    before = [p.clone() for p in loop.network.net.parameters()]
    seen = []
    propose = loop.stepper.propose

    def spy(box, *args):
        seen.append([p.clone() for p in loop.network.net.parameters()])
        return propose(box, *args)

    loop.stepper.propose = spy
    row = loop.advance()
    assert all(torch.equal(a, b) for a, b in zip(seen[0], before))  # S matched under theta_t
    assert not all(torch.equal(a, b) for a, b in zip(before, loop.network.net.parameters()))
    assert {"ce", "mean_cvar", "max_cvar"} <= set(row)


@pytest.mark.parametrize("flags, why", [
    ({"updater": "native"}, "no pass over the real batch"),
    ({"objective": "gm"}, "has no forward pass to share"),
    ({"model_steps": 2}, "one network update a step"),
])
def test_one_pass_refuses_what_it_cannot_share(flags, why):
    from zodd.config import DistillConfig
    from zodd.plan import check
    from zodd.types import ZoddError

    with pytest.raises(ZoddError, match=why):
        check(DistillConfig(one_pass=True, **flags))


def test_compiled_passes_agree_with_eager_and_serve_fresh_networks(digits):
    """--compile: the real batch's embedding and the updater's gradient agree with eager ones
    to float rounding, for two freshly drawn networks of one architecture (one compiled code)."""
    from zodd import compiled
    from zodd.models import build_model

    x = digits.train_x[:40]
    y = digits.train_y[:40]
    for seed in (1, 2):
        net = build_model(1, 10, 8, seed=seed)
        fast = compiled.CompiledNet(net)
        with torch.no_grad():
            assert torch.allclose(fast.embed(x), net.embed(x), rtol=1e-4, atol=1e-5)
        grads = []
        for forward in (net, fast):
            net.zero_grad(set_to_none=True)
            F.cross_entropy(forward(x), y).backward()
            grads.append([p.grad.clone() for p in net.parameters()])
        scale = max(float(g.abs().max()) for g in grads[0])
        for a, b in zip(*grads):
            assert float((a - b).abs().max()) <= 1e-3 * scale
    assert len({k for k in compiled._COMPILED if "Conv2d(1, 64" in k}) == 1
