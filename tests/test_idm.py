"""DSA as its public code defines it (every range written here from ``ParamDiffAug`` and the
``rand_*`` functions, not from zodd), the evaluate_synset schedule, and IDM: the queue of
networks, its resume, its updater and its class-aware term."""
import dataclasses
import math

import pytest
import torch

from zodd.augment import DSA, DSA_OPS, augment_batch
from zodd.config import DistillConfig
from zodd.driver import distill
from zodd.loop import Loop
from zodd.evaluation import EvalConfig, Schedule, protocol_config
from zodd.plan import check, resolve
from zodd.types import StepContext, ZoddError

# --- DSA: each operation's range from the definition --------------------------------------------
# rand_crop: shift = int(side * 0.125 + 0.5), translation ~ randint(-shift, shift + 1)
# rand_cutout: size = int(side * 0.5 + 0.5), offset ~ randint(0, side + (1 - size % 2)),
#              rows offset - size // 2 .. offset - size // 2 + size - 1 zeroed (clipped)
CROP = {8: 1, 28: 4, 32: 4}
CUTOUT = {8: 4, 28: 14, 32: 16}


def _draw(n, seed=0, flip=True, one_op=False):
    return DSA.draw(n, torch.Generator().manual_seed(seed), flip, one_op=one_op)


@pytest.mark.parametrize("side", [8, 28, 32])
def test_dsa_crop_shifts_whole_pixels_over_its_published_range(side):
    t = _draw(6000)
    crop = t.op == DSA_OPS.index("crop")
    shifts = t.shifts(side, side)[crop]
    s = CROP[side]
    assert set(shifts.flatten().tolist()) == set(range(-s, s + 1))  # every value, no other
    x = torch.randn(len(t.op), 1, 1, side, side)
    out = t(x)
    g = int(torch.nonzero(crop & (t.shifts(side, side).abs().sum(1) > 0))[0])
    dy, dx = t.shifts(side, side)[g].tolist()
    expected = torch.zeros(side, side)  # out[i, j] = x[i + dy, j + dx], zero outside
    for i in range(side):
        for j in range(side):
            if 0 <= i + dy < side and 0 <= j + dx < side:
                expected[i, j] = x[g, 0, 0, i + dy, j + dx]
    assert torch.equal(out[g, 0, 0], expected)


@pytest.mark.parametrize("side", [8, 28, 32])
def test_dsa_cutout_zeroes_a_square_of_its_published_side(side):
    t = _draw(6000, seed=1)
    cut = t.cut(side, side)[t.op == DSA_OPS.index("cutout")]
    size = CUTOUT[side]
    rows, cols = cut.any(2).sum(1), cut.any(1).sum(1)
    assert int(rows.max()) == size and int(cols.max()) == size
    assert int(cut.sum((1, 2)).max()) == size * size
    first = torch.stack([r.nonzero()[0, 0] for r in cut.any(2)])
    whole = rows == size  # a square of full size starts on any row from 0 to side - size
    assert set(first[whole].tolist()) == set(range(0, side - size + 1))
    # clipped squares: offsets near either edge, down to size - size // 2 - size % 2 rows kept
    assert int(rows.min()) == size - size // 2  # (every size here is even)
    assert (~torch.stack([t.cut(side, side)[i] for i in range(50)
                          if t.op[i] != DSA_OPS.index("cutout")]).any())


def test_dsa_scale_rotate_and_colour_ranges_are_the_published_ones():
    t = _draw(20000, seed=2)
    scale, rotate = t.op == DSA_OPS.index("scale"), t.op == DSA_OPS.index("rotate")
    sx, sy = t.theta[scale, 0, 0], t.theta[scale, 1, 1]
    for s in (sx, sy):  # sx, sy ~ U[1/1.2, 1.2]
        assert s.min() >= 1 / 1.2 and s.max() <= 1.2
        assert s.min() < 1 / 1.2 + 0.01 and s.max() > 1.2 - 0.01
    angle = torch.atan2(t.theta[rotate, 1, 0], t.theta[rotate, 0, 0])  # U[-15°, 15°]
    assert angle.abs().max() <= math.radians(15) + 1e-6
    assert angle.abs().max() > math.radians(14.9)
    b, s, c = t.colour.unbind(1)  # brightness (u - 0.5) * 1.0, saturation u * 2, contrast u + 0.5
    assert -0.5 <= b.min() < -0.49 and 0.49 < b.max() <= 0.5
    assert 0 <= s.min() < 0.01 and 1.99 < s.max() <= 2
    assert 0.5 <= c.min() < 0.51 and 1.49 < c.max() <= 1.5
    ops = torch.bincount(t.op, minlength=len(DSA_OPS)).float() / len(t.op)
    assert torch.allclose(ops, torch.full_like(ops, 1 / 6), atol=0.02)  # uniform over the six


def test_dsa_colour_is_brightness_then_saturation_then_contrast():
    t = _draw(200, seed=3)
    g = int(torch.nonzero(t.op == DSA_OPS.index("colour"))[0])
    x = torch.rand(1, 3, 5, 5)
    b, s, c = t.colour[g].tolist()
    y = x + b  # rand_brightness
    y = (y - y.mean(1, keepdim=True)) * s + y.mean(1, keepdim=True)  # rand_saturation
    y = (y - y.mean((1, 2, 3), keepdim=True)) * c + y.mean((1, 2, 3), keepdim=True)
    big = torch.zeros(200, 1, 3, 5, 5)
    big[g] = x
    assert torch.allclose(t(big)[g], y, atol=1e-6)


def test_dsa_on_a_training_batch_draws_one_operation_for_the_batch():
    """DiffAugment with seed -1 picks one operation per call; each image its own parameters."""
    for seed in range(20):
        t = _draw(64, seed=seed, one_op=True)
        assert len(set(t.op.tolist())) == 1
    x = torch.randn(64, 1, 28, 28)
    out = augment_batch(x, torch.Generator().manual_seed(0), True, "dsa")
    assert out.shape == x.shape


# --- the evaluate_synset schedule ----------------------------------------------------------------
def _lrs(cfg):
    net = torch.nn.Linear(2, 2)
    schedule = Schedule(cfg, net.parameters())
    lrs, opts = [], []
    for epoch in range(schedule.epochs):
        lrs.append(schedule.opt.param_groups[0]["lr"])
        opts.append(schedule.opt)
        schedule.opt.zero_grad()
        net(torch.ones(1, 2)).sum().backward()
        schedule.opt.step()
        schedule.end_epoch(epoch)
    return lrs, opts


def test_dsa_protocol_trains_like_evaluate_synset():
    cfg = protocol_config("dsa", "fashion-mnist")
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.augment, cfg.schedule) == (
        1000, 0.01, 256, "dsa", "evaluate_synset")
    # for ep in range(Epoch + 1): train; if ep == Epoch // 2 + 1: lr *= 0.1, a new optimiser
    lrs, opts = _lrs(dataclasses.replace(cfg, epochs=1000))
    assert len(lrs) == 1001
    assert lrs[:502] == [0.01] * 502
    assert all(abs(lr - 0.001) < 1e-12 for lr in lrs[502:]) and len(lrs[502:]) == 499
    assert opts[501] is not opts[502] and opts[502] is opts[-1]  # momentum starts again
    lrs, _ = _lrs(EvalConfig(epochs=4, schedule="half"))  # zodd's: 4 epochs, drop after 2
    assert lrs[:2] == [0.01, 0.01] and all(abs(lr - 0.001) < 1e-12 for lr in lrs[2:])
    assert len(lrs) == 4


# --- IDM ----------------------------------------------------------------------------------------
def _idm(**kw):
    values = dict(dataset="digits", ipc=2, representation="multi", factor=2, objective="dm",
                  augment="dsa", updater="ce", queue_size=5, queue_every=2, model_steps=2,
                  batch_size=16, iterations=6, lr=0.2)
    return DistillConfig(**{**values, **kw})


def test_the_queue_grows_retires_and_draws_from_the_runs_generator(digits):
    plan = resolve(_idm(queue_every=1, queue_size=4), digits)
    loop = Loop(plan, digits)
    assert len(loop.network.queue.members) == 3  # IDM starts with three networks
    first = [m.net for m in loop.network.queue.members]
    for _ in range(3):
        loop.advance()
    members = loop.network.queue.members
    assert len(members) == 4 and first[0] not in [m.net for m in members]  # the oldest left
    assert first[1] not in [m.net for m in members]
    twin = Loop(plan, digits)
    for _ in range(3):
        twin.advance()
    for a, b in zip(members, twin.network.queue.members):  # every draw came from the seed
        assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    other = Loop(resolve(dataclasses.replace(_idm(queue_every=1, queue_size=4), seed=1), digits),
                 digits)
    assert not torch.equal(next(other.network.queue.members[0].net.parameters()),
                           next(Loop(plan, digits).network.queue.members[0].net.parameters()))


def test_a_resumed_idm_run_is_bitwise_the_uninterrupted_one(digits, tmp_path):
    whole = distill(_idm(iterations=6), digits, tmp_path / "whole")
    distill(_idm(iterations=3, checkpoint_every=1), digits, tmp_path / "part")
    resumed = distill(_idm(iterations=6, checkpoint_every=1), digits, tmp_path / "part",
                      resume=True)
    assert torch.equal(whole.synthetic.images, resumed.synthetic.images)
    assert [r["loss"] for r in whole.rows] == [r["loss"] for r in resumed.rows]


def test_ce_and_robust_train_the_queue_differently_from_one_seed(digits):
    loops = {u: Loop(resolve(_idm(updater=u), digits), digits) for u in ("ce", "robust")}
    for loop in loops.values():
        loop.step_zero = {id(m.net): [p.clone() for p in m.net.parameters()]
                          for m in loop.network.queue.members}
        loop.advance()
    for loop in loops.values():
        assert len(loop.network.queue.members) == 4  # three, and one new at iteration 0
        trained = sum(m.seen > 0 for m in loop.network.queue.members)
        assert trained == 2  # queue_train networks trained
        for m in loop.network.queue.members[:3]:  # those trained moved, the others did not
            same = all(torch.equal(p, q) for p, q in zip(m.net.parameters(),
                                                         loop.step_zero[id(m.net)]))
            assert same == (m.seen == 0)
    # the same networks, draws and batches; only the updater's loss differs
    ce, robust = ([p for m in loop.network.queue.members for p in m.net.parameters()]
                  for loop in loops.values())
    assert not all(torch.equal(a, b) for a, b in zip(ce, robust))
    trained = [i for i, m in enumerate(loops["ce"].network.queue.members) if m.seen]
    assert trained == [i for i, m in enumerate(loops["robust"].network.queue.members) if m.seen]


def test_the_class_aware_term_reaches_s(digits):
    from objectives import OBJECTIVES
    from zodd.models import build_model

    net = build_model(1, 10, 8, width=16, seed=0).requires_grad_(False)
    real = digits.train_x[:160].view(10, 16, 1, 8, 8)
    ctx = StepContext(net, real, torch.arange(10).repeat_interleave(2), 10, seed=3,
                      augment="none")
    x = torch.randn(1, 20, 1, 8, 8, requires_grad=True)
    grads = {}
    for w in (0.0, 2.0):
        f = OBJECTIVES["dm"]().bind(dataclasses.replace(ctx, ce_weight=w))
        grads[w], = torch.autograd.grad(f(x).sum(), x)
    # the difference is w times the gradient of the mean CE of each class's images
    logits = net(x[0])
    ce = torch.nn.functional.cross_entropy(logits, torch.arange(10).repeat_interleave(2))
    ce_grad, = torch.autograd.grad(ce * 10, x)  # the sum over classes of per-class means
    assert ce_grad.abs().sum() > 0
    assert torch.allclose(grads[2.0] - grads[0.0], 2.0 * ce_grad, atol=1e-5)


def test_the_ce_weight_follows_the_drawn_networks_accuracy(digits):
    loop = Loop(resolve(_idm(), digits), digits)
    loop.advance()
    m = loop.network.queue.members
    assert any(x.seen for x in m) and all(0 <= x.accuracy() <= 100 for x in m)
    assert loop.plan.ce_weight == 0.5  # IDM's at IPC up to 10


@pytest.mark.parametrize("change, words", [
    ({"updater": "native"}, "trained by the updater"),
    ({"one_pass": True}, "batches of their own"),
    ({"objective": "gm", "ce_weight": 0.5}, "part of dm's value"),
    ({"queue_size": None, "ce_weight": 0.5}, "give --queue-size"),
])
def test_idm_settings_that_cannot_go_together_are_refused(digits, change, words):
    with pytest.raises(ZoddError, match=words):
        check(_idm(**change))


def test_convnet3_on_one_channel_28px_images_is_the_reference_network():
    """The reference ConvNet pads the first convolution of a one-channel image by 3 (28 -> 32
    px): three 2 x 2 poolings end on 4 x 4, 128 x 4 x 4 = 2,048 features; 3-channel 32 px images
    too; the 8 px digits keep ConvNet-2 of width 64 on 8 -> 4 -> 2 px."""
    from zodd.models import build_model

    net = build_model(1, 10, 28)
    assert net.features[0].padding == (3, 3) and net.features[4].padding == (1, 1)
    assert net.feature_dim == 2048 and net.embed(torch.zeros(2, 1, 28, 28)).shape == (2, 2048)
    assert build_model(3, 10, 32).feature_dim == 2048
    digits = build_model(1, 10, 8)
    assert digits.features[0].padding == (1, 1) and digits.feature_dim == 64 * 2 * 2
