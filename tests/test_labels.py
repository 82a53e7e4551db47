"""Learned labels (zodd.labels), FRePo's pool, objective, optimiser and evaluation protocol.

Published constants are written here from FRePo's public code (yongchao97/FRePo): its
``init_proto``, ``nfr``, ``lb_margin_th``, ``proto_train_and_evaluate``, ``script/eval.py`` and
optax's ``lamb`` / ``cosine_decay_schedule``, not read back from zodd.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import zodd
from objectives import OBJECTIVES
from zodd import augment, evaluation, labels, networks, plan, steppers
from zodd.config import DistillConfig
from zodd.estimators import ESTIMATORS
from zodd.models import build_network
from zodd.representation import Multi, Pixel
from zodd.types import StepContext, ZoddError


def _context(classes=3, n_real=6, side=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = build_network("convnet-w16-d2-nn", 1, classes, side, seed=seed).double()
    real = torch.randn(classes, n_real, 1, side, side, generator=gen, dtype=torch.float64)
    return StepContext(net, real, torch.arange(classes).repeat_interleave(2), classes, seed=0,
                       augment="none")


def _packed(classes=3, per_class=2, side=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(classes * per_class, 1, side, side, generator=gen, dtype=torch.float64)
    y = labels.initial(classes, per_class).double()
    y = y + 0.1 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return labels.pack(x, y)


@pytest.mark.parametrize("name", ["krr", "frepo"])
def test_label_gradient_matches_finite_differences(name):
    ctx = _context()
    box = labels.Labelled(OBJECTIVES[name]().bind(ctx), Pixel(), (1, 8, 8), 3)
    point = _packed()
    estimate = ESTIMATORS["autograd"]().estimate(box, point, torch.Generator())
    grad = estimate.grad[:, 64:]  # the label block
    assert grad.abs().max() > 0
    h = 1e-6
    for row, col in [(0, 0), (1, 2), (4, 1), (5, 0)]:
        up, down = point.clone(), point.clone()
        up[row, 64 + col] += h
        down[row, 64 + col] -= h
        with torch.no_grad():
            numeric = float(box(up[None])[0] - box(down[None])[0]) / (2 * h)
        assert numeric == pytest.approx(float(grad[row, col]), rel=1e-4, abs=1e-8)


def test_zero_order_label_block_points_along_autograd():
    torch.manual_seed(0)
    ctx = _context()
    box = labels.Labelled(OBJECTIVES["krr"]().bind(ctx), Pixel(), (1, 8, 8), 3)
    point = _packed()
    exact = ESTIMATORS["autograd"]().estimate(box, point, torch.Generator()).grad
    zo = ESTIMATORS["gaussian"](directions=8000, sigma=1e-4, lowres=1, blockwise=False,
                                guided=False)
    estimate = zo.estimate(box, point, torch.Generator().manual_seed(3)).grad
    cosine = torch.nn.functional.cosine_similarity(estimate[:, 64:].flatten(),
                                                   exact[:, 64:].flatten(), dim=0)
    assert cosine > 0.6, float(cosine)  # d = 390 values in all: about sqrt(M / d) noise


def test_labelled_box_repeats_a_stored_label_over_its_decoded_images():
    seen = {}

    class Box:
        differentiable = True

        def __call__(self, images, y):
            seen["images"], seen["labels"] = images, y
            return images.sum((1, 2, 3, 4)) + y.sum((1, 2))

    rep = Multi(2)
    x = torch.randn(4, 1, 8, 8)
    y = labels.initial(2, 2)
    labels.Labelled(Box(), rep, (1, 8, 8), 2)(labels.pack(x, y)[None])
    assert seen["images"].shape == (1, 16, 1, 8, 8)
    assert torch.equal(seen["labels"][0], y.repeat_interleave(4, 0))


def test_initial_labels_are_frepos_centred_scaled_one_hot():
    y = labels.initial(4, 2)  # init_proto(scale_y=True): (one_hot - 1/C) / sqrt(C / 10)
    scale = math.sqrt(4 / 10)
    assert y[0].tolist() == pytest.approx([0.75 / scale, -0.25 / scale, -0.25 / scale,
                                           -0.25 / scale])
    assert y[7].argmax() == 3 and y.shape == (8, 4)


def test_frepo_loss_is_nfr_mse_plus_the_margin_term():
    ctx = _context()
    point = _packed()
    x, y = labels.unpack(point, (1, 8, 8), 3)
    with torch.no_grad():
        got = float(OBJECTIVES["frepo"]().bind(ctx)(x[None], y[None])[0])
    # written from FRePo: features, K_pp + 1e-6 tr(K_pp)/n I, 0.5 squared error, lb_margin_th
    net = ctx.net
    with torch.no_grad():
        fp, ft = net.embed(x), net.embed(ctx.real.flatten(0, 1))
    kpp = fp @ fp.T
    reg = kpp + 1e-6 * torch.trace(kpp) * torch.eye(len(x), dtype=kpp.dtype) / len(x)
    pred = ft @ fp.T @ torch.linalg.solve(reg, y)
    target = torch.nn.functional.one_hot(torch.arange(3).repeat_interleave(6), 3) - 1 / 3
    kernel = (0.5 * (pred - target) ** 2).sum(1).mean()
    top = y.sort(1, descending=True).values
    margin = -torch.minimum(top[:, 0] - top[:, 1], torch.tensor(1 / 3)).mean()
    assert got == pytest.approx(float(kernel + margin), rel=1e-6)


def test_lamb_takes_optax_first_step():
    p = torch.tensor([[3.0, 4.0]], requires_grad=True)
    opt = steppers.Lamb([p], lr=0.1)
    p.grad = torch.tensor([[0.5, -2.0]])
    opt.step()
    # optax.lamb, step 1: m_hat = g, v_hat = g^2, u = g / (|g| + 1e-6); trust = ||p|| / ||u||
    u = torch.tensor([0.5 / (0.5 + 1e-6), -2.0 / (2.0 + 1e-6)])
    expected = torch.tensor([3.0, 4.0]) - 0.1 * (5.0 / u.norm()) * u
    assert torch.allclose(p.detach()[0], expected, atol=1e-6)


def test_frepo_conv_is_frepos():
    net = build_network("frepo", 1, 10, 28, seed=0)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512]  # width * 2 ** i
    assert convs[0].padding == (3, 3)  # kernel_size // 2 + 2 for one channel
    assert not any(isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d))
                   for m in net.modules())  # normalization='identity'
    assert net.embed(torch.zeros(2, 1, 28, 28)).shape == (2, 512 * 4 * 4)
    assert all(float(c.bias.detach().abs().max()) == 0 for c in convs)
    fan_in = 128 * 9  # LeCun normal truncated at 2 std: the std of the draw is 1/sqrt(fan_in)
    assert float(convs[1].weight.detach().std()) == pytest.approx(fan_in ** -0.5, rel=0.05)


def test_frepo_protocol_constants():
    cfg = evaluation.protocol_config("frepo", "fashion-mnist")
    assert (cfg.lr, cfg.batch_size, cfg.augment, cfg.model) == (3e-4, 500, "frepo", "frepo")
    # script/eval.py: step_per_prototpyes
    assert [evaluation.frepo_steps(n) for n in (10, 100, 200, 400, 500, 1000, 2000, 5000)] == \
        [1000, 2000, 20000, 5000, 5000, 10000, 40000, 40000]
    # warmup 500 linear from 0, then optax.cosine_decay_schedule(alpha=0.01)
    steps = 2000
    assert evaluation.frepo_rate(0, steps) == 0
    assert evaluation.frepo_rate(250, steps) == pytest.approx(0.5)
    assert evaluation.frepo_rate(500, steps) == pytest.approx(1.0)
    assert evaluation.frepo_rate(1250, steps) == pytest.approx(0.99 * 0.5 + 0.01)
    assert evaluation.frepo_rate(2000, steps) == pytest.approx(0.01)
    assert evaluation.protocol_model("frepo") == "frepo"
    assert evaluation.protocol_model("dsa") == "convnet"


def test_frepo_augmentation_constants():
    assert augment.FREPO_OPS[1:] == ("colour", "crop", "rotate", "translate", "cutout")
    assert (augment.FREPO_BRIGHTNESS, augment.FREPO_CONTRAST) == (0.25, 0.25)
    assert augment.FREPO_ZOOM == (0.8, 1.25) and augment.FREPO_ROTATE_DEG == 15
    assert augment.FREPO_TRANSLATE == 0.125 and augment.FREPO_CUTOUT == 4
    x = torch.ones(6, 1, 1, 16, 16)
    cut = augment.FRePo(torch.full((6,), augment.FREPO_OPS.index("cutout")), torch.rand(6, 5))
    assert ((cut(x) == 0).sum((1, 2, 3, 4)) == 16).all()  # one hole of (16 // 4)^2 pixels
    grey = augment.FRePo(torch.full((6,), augment.FREPO_OPS.index("colour")),
                         torch.tensor([[0.5, 0.5, 1.0, 0.0, 0.0]]).repeat(6, 1))
    assert torch.allclose(grey(x), x)  # no shift, contrast 1, saturation a no-op on one channel


def test_the_pool_staggers_draws_trains_and_resets():
    gen = torch.Generator().manual_seed(0)
    pool = networks.ModelPool(lambda s: build_network("frepo", 1, 2, 8, seed=s), 4, 8, gen)
    assert [m.seen for m in pool.members] == [0, 2, 4, 6]  # (max // size) * i
    member = pool.draw(gen)
    member.seen = 9  # past max_online_updates: reset, not trained
    synthetic = torch.randn(2, 1, 1, 8, 8)
    updater = None  # --updater native: FRePo's own step on S
    pool.train(updater, lambda: None, synthetic, labels.initial(2, 1), gen)
    assert member not in pool.members and sum(m.seen == 0 for m in pool.members) == 2
    other = pool.draw(gen)
    other.seen = 3
    before = [p.clone() for p in other.net.parameters()]
    terms = pool.train(updater, lambda: None, synthetic, labels.initial(2, 1), gen)
    assert other.seen == 4 and "pool_mse" in terms  # one MSE step on S, FRePo's way
    assert any(not torch.equal(a, b) for a, b in zip(before, other.net.parameters()))


def test_learned_labels_resume_bitwise_and_round_trip(tmp_path):
    whole = zodd.distill(dataset="digits", ipc=1, iterations=6, recipe="frepo",
                         out=tmp_path / "whole")
    zodd.distill(dataset="digits", ipc=1, iterations=3, recipe="frepo", out=tmp_path / "part")
    resumed = zodd.distill(iterations=6, resume=tmp_path / "part")
    assert whole.labels.shape == (10, 10) and whole.labels.dtype == torch.float32
    assert not torch.equal(whole.labels, labels.initial(10, 1))  # the labels moved
    assert torch.equal(whole.labels, resumed.labels)
    assert torch.equal(whole.images, resumed.images)
    loaded = zodd.load(tmp_path / "whole")
    assert torch.equal(loaded.labels, whole.labels) and torch.equal(loaded.images, whole.images)
    zodd.export(tmp_path / "whole", "dc", tmp_path / "set.pt")
    back = zodd.load(tmp_path / "set.pt", dataset="digits")
    assert torch.allclose(back.labels, whole.labels.softmax(1), atol=1e-6)


def test_learned_labels_move_under_every_way_of_moving_s():
    for extra in ({"estimator": "gaussian", "directions": 4},
                  {"estimator": "gaussian", "directions": 4, "optimizer": "ng:OnePlusOne"},
                  {}):
        run = zodd.distill(dataset="digits", ipc=1, iterations=3, objective="krr",
                           labels="learn", **extra)
        assert not torch.equal(run.labels, labels.initial(10, 1)), extra


@pytest.mark.parametrize("settings,needle", [
    ({"objective": "dm", "labels": "learn"}, "reads no labels"),
    ({"label_lr": 0.1}, "--labels learn"),
    ({"pool_steps": 5}, "--pool-size"),
    ({"objective": "krr", "labels": "learn", "lowres": 2}, "lowres"),
    ({"objective": "krr", "pool_size": 3, "queue_size": 3, "updater": "ce"}, "queue"),
])
def test_refusals(settings, needle):
    with pytest.raises(ZoddError, match=needle):
        plan.check(DistillConfig(**settings))


def test_default_run_keeps_hard_labels():
    run = zodd.distill(dataset="digits", ipc=1, iterations=2)
    assert run.labels.dtype == torch.int64 and run.labels.ndim == 1
    assert replace(DistillConfig()).labels == "onehot"


def test_label_solve_recovers_the_labels_of_its_own_support():
    from zodd.baselines import solve_labels

    gen = torch.Generator().manual_seed(0)
    net = build_network("convnet-w16-d2-nn", 1, 3, 8, seed=0)
    support = torch.randn(6, 1, 8, 8, generator=gen)
    hard = torch.tensor([0, 0, 1, 1, 2, 2])
    # the support predicting itself: A = K (K + lambda I)^-1 ~ I, so Y_s ~ its centred one-hot
    y = solve_labels(support, support, hard, net, 3, ridge=1e-9)
    assert torch.allclose(y, labels.centred(hard, 3), atol=1e-3)
    # more targets than support images: the least-squares solution, A^+ Y_t, checked by its
    # normal equations A^T (A Y_s - Y_t) = 0
    targets = torch.randn(30, 1, 8, 8, generator=gen)
    target_labels = torch.arange(3).repeat_interleave(10)
    y = solve_labels(support, targets, target_labels, net, 3).double()
    with torch.no_grad():
        fs, ft = net.embed(support).double(), net.embed(targets).double()
    kss = fs @ fs.T
    a = ft @ fs.T @ torch.linalg.inv(kss + 1e-6 * kss.diagonal().mean() * torch.eye(6,
                                                                                   dtype=kss.dtype))
    residual = a.T @ (a @ y - labels.centred(target_labels, 3).double())
    assert residual.abs().max() < 1e-3 * (a.T @ a).abs().max()


def test_baselines_of_a_learned_label_run(tmp_path):
    run = zodd.distill(dataset="digits", ipc=1, iterations=2, recipe="frepo", out=tmp_path / "r")
    onehot = zodd.evaluate(tmp_path / "r", seeds=1, epochs=2, baseline="onehot")
    assert onehot.record["labels"] == "hard"
    solved = zodd.evaluate(tmp_path / "r", seeds=1, epochs=2, baseline="label-solve")
    assert solved.record["labels"] == "learned" and 0 <= solved.record["acc"]["mean"] <= 100
    assert run.labels.ndim == 2


def test_scores_of_learned_labels_take_hlr_from_the_one_hot_images():
    from zodd.scores import scores

    s = scores(acc=80.0, random_acc=50.0, full_acc=90.0, acc_plain=80.0, random_plain=50.0,
               hard_acc=60.0)
    assert s["ior"] == 30.0 and s["hlr"] == 30.0  # 90 - 60, not 90 - 80
    e = math.e
    assert s["lrs"] == pytest.approx(100 * (math.exp(0.5 * 0.3 - 0.5 * 0.3) - 1 / e) / (e - 1 / e))


def test_a_command_box_receives_the_candidates_label_vectors(tmp_path):
    script = tmp_path / "score.py"
    script.write_text(
        "import json, sys, numpy as np\n"
        "d = np.load(sys.argv[1])\n"
        "y = d['labels']\n"
        "assert y.dtype == np.float32 and y.shape == d['images'].shape[:2] + (10,), y.shape\n"
        "print(json.dumps([float(-(v.argmax(1) == np.repeat(np.arange(10), 1)).mean() "
        "- 0.01 * v.max(1).mean()) for v in y]))\n")
    import sys
    run = zodd.distill(dataset="digits", ipc=1, iterations=2, objective="command",
                       command=f"{sys.executable} {script}", labels="learn", directions=2,
                       init="real")
    assert run.labels.shape == (10, 10) and run.log[-1]["queries"] > 0
    assert not any("skipped" in row for row in run.log)
    assert not torch.equal(run.labels, labels.initial(10, 1))  # moved by the program's score
