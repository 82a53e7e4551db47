import pytest
import torch

from zodd.estimators import ESTIMATORS, Autograd, Gaussian
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


# --- the zero-order family ----------------------------------------------------------------------
from zodd.estimators import Antithetic, Coordinate, Sphere  # noqa: E402
from zodd.guard import Guarded  # noqa: E402

ZERO_ORDER = [Gaussian, Antithetic, Sphere, Coordinate]
SHAPE = (4, 1, 4, 4)  # 2 classes x 2 images of 4 x 4 pixels, class-major like S


class Separable:
    """Per-class quadratics: class c's block depends only on class c's images (like DM)."""

    differentiable = False
    separable = True

    def __init__(self, classes=2, seed=0):
        self.num_classes = classes
        self.parts = [Quadratic(16 * SHAPE[0] // classes, seed=seed + c) for c in range(classes)]
        self.calls = 0

    def blocks(self, candidates):
        self.calls += 1
        per = candidates.unflatten(1, (self.num_classes, -1))
        return torch.stack([q(per[:, c]) for c, q in enumerate(self.parts)], 1)

    def __call__(self, candidates):
        return self.blocks(candidates).sum(1)

    def grad(self, x):
        per = x.unflatten(0, (self.num_classes, -1))
        return torch.cat([q.grad(per[c]) for c, q in enumerate(self.parts)])


def _mean_error(est, f, x, draws=20):
    """||mean of draws - true gradient|| / ||true gradient||."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.stack([est.estimate(f, x, gen).grad.flatten() for _ in range(draws)]).mean(0)
    true = f.grad(x)
    return float((mean - true).norm() / true.norm())


@pytest.mark.parametrize("cls", ZERO_ORDER)
def test_every_zero_order_estimator_is_unbiased_on_a_quadratic(cls):
    f = Quadratic(16, differentiable=False, seed=1)
    x = torch.randn(16, dtype=torch.float64)
    m = 16 if cls is Coordinate else 3000
    assert _mean_error(cls(directions=m, sigma=1e-3), f, x) < 0.05


def test_coordinate_over_every_coordinate_is_the_exact_gradient():
    f = Quadratic(16, differentiable=False, seed=2)
    x = torch.randn(16, dtype=torch.float64)
    est = Coordinate(directions=16, sigma=0.5).estimate(f, x, torch.Generator())
    assert torch.allclose(est.grad, f.grad(x))  # central differences are exact on quadratics
    assert est.queries == 33 and f.calls == 1


@pytest.mark.parametrize("cls, queries", [(Gaussian, 6), (Antithetic, 11), (Sphere, 6),
                                          (Coordinate, 11)])
def test_zero_order_estimators_report_their_queries_and_f_of_x(cls, queries):
    f = Quadratic(16, differentiable=False)
    x = torch.randn(16, dtype=torch.float64)
    est = cls(directions=5, sigma=0.1).estimate(f, x, torch.Generator().manual_seed(0))
    assert est.queries == queries == cls(directions=5).queries()
    assert est.loss == pytest.approx(float(f(x[None])[0]))


def _projected(grad, factor):
    """P grad: each F x F block's mean, spread back over the block."""
    g = grad.reshape(SHAPE)
    return torch.nn.functional.interpolate(
        torch.nn.functional.avg_pool2d(g, factor), scale_factor=factor).flatten()


@pytest.mark.parametrize("cls", ZERO_ORDER)
def test_lowres_directions_estimate_the_projected_gradient(cls):
    """The gradient's block means, at the gradient's own scale (so step sizes carry over)."""
    f = Quadratic(64, differentiable=False, seed=3)
    x = torch.randn(SHAPE, dtype=torch.float64)
    m = 16 if cls is Coordinate else 4000
    est = cls(directions=m, sigma=1e-3, lowres=2)
    gen = torch.Generator().manual_seed(0)
    mean = torch.stack([est.estimate(f, x, gen).grad.flatten() for _ in range(10)]).mean(0)
    target = _projected(f.grad(x), 2)
    assert float((mean - target).norm() / target.norm()) < 0.05
    # the estimate lies in the block-constant images
    assert torch.allclose(mean, _projected(mean, 2), atol=1e-9)


@pytest.mark.parametrize("cls", ZERO_ORDER)
def test_blockwise_estimates_are_unbiased_and_read_every_class_from_one_call(cls):
    f = Separable()
    x = torch.randn(SHAPE, dtype=torch.float64)
    m = 32 if cls is Coordinate else 3000
    est = cls(directions=m, sigma=1e-3, blockwise=True)
    assert _mean_error(est, f, x) < 0.05
    assert f.calls == 20


def test_blockwise_gaussian_is_closer_to_the_gradient_than_plain_at_equal_queries():
    f = Separable(classes=4)
    x = torch.randn(SHAPE, dtype=torch.float64)

    def cosine(est):
        gen = torch.Generator().manual_seed(0)
        true = f.grad(x)
        return sum(float(torch.nn.functional.cosine_similarity(
            est.estimate(f, x, gen).grad.flatten(), true, dim=0)) for _ in range(50)) / 50

    assert cosine(Gaussian(8, 1e-3, blockwise=True)) > cosine(Gaussian(8, 1e-3)) + 0.1


def test_blockwise_goes_through_the_fault_guard_and_leaves_failed_directions_out():
    class Flaky(Separable):
        def blocks(self, candidates):
            out = super().blocks(candidates).clone()
            out[1, 0] = float("nan")  # one direction always fails
            return out

    box = Guarded(Flaky(), retries=1)
    assert box.separable and box.num_classes == 2
    x = torch.randn(SHAPE, dtype=torch.float64)
    est = Gaussian(directions=6, sigma=1e-3, blockwise=True).estimate(box, x, torch.Generator())
    assert est.extra["failed_directions"] == 1 and box.failures == 1 and box.retried == 1
    assert torch.isfinite(est.grad).all()
    # a box that is not separable is estimated on the total, never per block
    plain = Gaussian(directions=6, sigma=1e-3, blockwise=True).estimate(
        Quadratic(64, differentiable=False), x, torch.Generator())
    assert torch.isfinite(plain.grad).all()


# --- guided by a surrogate's gradient ---------------------------------------------------------

def test_guided_gaussian_is_unbiased_whatever_the_guide():
    """The guide's direction gets its own difference and the random directions span the rest,
    so the mean estimate is the true gradient even for a guide unrelated to it."""
    f = Quadratic(16, differentiable=False, seed=4)
    x = torch.randn(16, dtype=torch.float64)
    guide = torch.randn(16, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    est = Gaussian(directions=3000, sigma=1e-3, guided=True)
    gen = torch.Generator().manual_seed(0)
    mean = torch.stack([est.estimate(f, x, gen, guide=guide).grad for _ in range(20)]).mean(0)
    true = f.grad(x)
    assert float((mean - true).norm() / true.norm()) < 0.05


def test_a_perfect_guide_gives_the_gradient_from_one_estimate():
    """With the true gradient as guide, every random direction is orthogonal to it: a single
    estimate with few directions is exact up to the finite difference's curvature term."""
    f = Quadratic(16, differentiable=False, seed=5)
    x = torch.randn(16, dtype=torch.float64)
    true = f.grad(x)
    gen = torch.Generator().manual_seed(0)
    guided = Gaussian(directions=4, sigma=1e-6, guided=True).estimate(f, x, gen, guide=3 * true)
    plain = Gaussian(directions=4, sigma=1e-6).estimate(f, x, gen)
    assert float((guided.grad - true).norm() / true.norm()) < 1e-3
    assert float((plain.grad - true).norm() / true.norm()) > 0.3
    assert guided.queries == 4 + 2 and plain.queries == 4 + 1


def test_guided_blockwise_guides_each_class_on_its_own():
    """Blockwise, the guide is normalised per class: a perfect guide whose classes differ in
    scale by 1000x still gives each class's gradient."""
    f = Separable()
    x = torch.randn(SHAPE, dtype=torch.float64)
    true = f.grad(x).view(SHAPE)
    guide = true.clone()
    guide[:2] *= 1000.0
    est = Gaussian(directions=3, sigma=1e-6, blockwise=True, guided=True)
    g = est.estimate(f, x, torch.Generator().manual_seed(0), guide=guide).grad
    assert float((g - true).norm() / true.norm()) < 1e-3
    assert f.calls == 1


def test_guided_and_unguided_refuse_the_other_call():
    f = Quadratic(4, differentiable=False)
    x = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="guide"):
        Gaussian(guided=True).estimate(f, x, torch.Generator())
    with pytest.raises(ValueError, match="guide"):
        Gaussian().estimate(f, x, torch.Generator(), guide=torch.ones(4, dtype=torch.float64))


def test_coordinate_with_fewer_coordinates_than_the_set_is_unbiased_at_its_scale():
    """M < D: each draw sees M of the D coordinates, scaled by D / M; a wrong scale (e.g. 1)
    would leave the mean M / D of the gradient."""
    f = Quadratic(16, differentiable=False, seed=3)
    x = torch.randn(16, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([Coordinate(directions=4, sigma=0.5).estimate(f, x, gen).grad
                         for _ in range(10000)])
    true = f.grad(x)
    mean = draws.mean(0)
    assert float((mean - true).norm() / true.norm()) < 0.05
    assert float((draws[0] != 0).sum()) == 4  # one draw touches M coordinates only


class Counting:
    """A black box that records every candidate it receives."""

    differentiable = False

    def __init__(self, f):
        self.f, self.received = f, 0

    def __call__(self, candidates):
        self.received += len(candidates)
        return self.f(candidates)


@pytest.mark.parametrize("cls, m", [(Gaussian, 5), (Antithetic, 5), (Sphere, 7),
                                    (Coordinate, 6)])
def test_reported_queries_are_the_candidates_the_black_box_received(cls, m):
    box = Counting(Quadratic(16, differentiable=False, seed=4))
    est = cls(directions=m, sigma=0.1).estimate(box, torch.randn(16, dtype=torch.float64),
                                               torch.Generator().manual_seed(0))
    assert est.queries == box.received == cls(directions=m).queries()


# --- OpenES with rank shaping -------------------------------------------------------------------

def test_centred_ranks_span_minus_half_to_half_per_column():
    from zodd.estimators import centred_ranks

    r = centred_ranks(torch.tensor([[3.0, 0.0], [1.0, 5.0], [2.0, -1.0]]))
    assert torch.equal(r, torch.tensor([[0.5, 0.0], [-0.5, 0.5], [0.0, -0.5]]))


@pytest.mark.parametrize("blockwise", [False, True])
def test_es_step_is_invariant_to_a_monotone_transform_of_the_scores(blockwise):
    from zodd.estimators import ES

    f = Separable(seed=2) if blockwise else Quadratic(12, differentiable=False, seed=2)

    class Transformed:
        differentiable = False
        separable, num_classes = getattr(f, "separable", False), getattr(f, "num_classes", None)

        def __call__(self, c):
            return torch.exp(f(c) / 7) * 3 + 1

        def blocks(self, c):
            return torch.exp(f.blocks(c) / 7) * 3 + 1

    x = torch.randn(SHAPE, dtype=torch.float64) if blockwise else torch.randn(
        12, dtype=torch.float64)
    est = ES(directions=16, sigma=0.05, blockwise=blockwise)
    a = est.estimate(f, x, torch.Generator().manual_seed(5))
    b = est.estimate(Transformed(), x, torch.Generator().manual_seed(5))
    assert torch.equal(a.grad, b.grad)
    assert a.queries == 33
    # not the loss's slope: a plain central difference changes under the same transform
    c = Antithetic(directions=16, sigma=0.05, blockwise=blockwise)
    assert not torch.allclose(c.estimate(f, x, torch.Generator().manual_seed(5)).grad,
                              c.estimate(Transformed(), x, torch.Generator().manual_seed(5)).grad)


def test_es_points_up_the_gradient_and_runs_with_adam_by_default(digits):
    from zodd.config import DistillConfig
    from zodd.estimators import ES
    from zodd.plan import ES_LR, resolve

    f = Quadratic(16, differentiable=False, seed=3)
    x = torch.randn(16, dtype=torch.float64)
    g = ES(directions=200, sigma=0.01).estimate(f, x, torch.Generator().manual_seed(0)).grad
    assert torch.nn.functional.cosine_similarity(g, f.grad(x), dim=0) > 0.8
    plan = resolve(DistillConfig(objective="prototype", estimator="es"), digits)
    assert plan.optimizer == "adam" and plan.lr == ES_LR
    assert resolve(DistillConfig(objective="prototype", estimator="es", optimizer="sgd",
                                 lr=0.5), digits).lr == 0.5
