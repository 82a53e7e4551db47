"""Stored representations (pixel, multi-formation), DSA augmentation, recipes and the DC
schedule."""
import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from objectives import OBJECTIVES
from zodd.augment import AUGMENTS, DSA, DSA_OPS, augment_batch, draw
from zodd.config import DistillConfig
from zodd.driver import distill
from zodd.plan import resolve
from zodd.recipes import RECIPES
from zodd.representation import Multi, Pixel, REPRESENTATIONS, decoded
from zodd.types import StepContext, ZoddError

CLI = [sys.executable, "-m", "zodd.cli"]
SMALL = dict(ipc=2, batch_size=16, iterations=4)


# --- decoding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_multi_decodes_each_image_into_its_tiles_at_full_size(factor):
    x = torch.randn(3, 2, 8, 8)
    out = Multi(factor).decode(x)
    assert out.shape == (3 * factor ** 2, 2, 8, 8)
    t = 8 // factor
    # the second decoded image of stored image 1 is its tile (row 0, column 1), upsampled
    if factor > 1:
        tile = x[1, :, :t, t:2 * t]
        expected = torch.nn.functional.interpolate(tile[None], size=(8, 8), mode="bilinear")[0]
        assert torch.allclose(out[factor ** 2 + 1], expected)


def test_multi_with_factor_one_decodes_to_the_image_itself():
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(Multi(1).decode(x), x)


def test_decoding_is_differentiable_and_its_gradient_matches_finite_differences():
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: Multi(2).decode(v), (x,))


def test_encode_packs_constant_images_that_decode_back_exactly():
    values = torch.arange(8, dtype=torch.float32)  # 2 stored images of 4 tiles
    images = values.view(8, 1, 1, 1).expand(8, 1, 8, 8).contiguous()
    rep = Multi(2)
    stored = rep.encode(images)
    assert stored.shape == (2, 1, 8, 8)
    assert torch.equal(stored[0, 0, :4, 4:], torch.full((4, 4), 1.0))  # tile (0, 1) = image 1
    assert torch.equal(rep.decode(stored), images)


def test_a_decoded_box_keeps_blocks_and_the_exact_gradient(digits):
    from zodd.models import build_model

    net = build_model(1, 10, 8, width=16, seed=0).requires_grad_(False)
    real = digits.train_x[:160].view(10, 16, 1, 8, 8)
    ctx = StepContext(net, real, torch.arange(10).repeat_interleave(8), 10, seed=0)
    rep = Multi(2)
    box = decoded(OBJECTIVES["dm"]().bind(ctx), rep)
    assert box.differentiable and box.separable and box.num_classes == 10
    x = torch.randn(20, 1, 8, 8, requires_grad=True)
    loss = box(x[None])[0]
    assert torch.allclose(box.blocks(x[None]).sum(1)[0], loss)
    (g,) = torch.autograd.grad(loss, x)
    direct = OBJECTIVES["dm"]().bind(ctx)
    assert torch.allclose(loss, direct(rep.decode(x)[None])[0])
    assert g.abs().sum() > 0 and decoded(direct, Pixel()) is direct


# --- runs ---------------------------------------------------------------------------------------
def _run(tmp_path, name, **kw):
    from zodd.data import load

    out = tmp_path / name
    return out, distill(DistillConfig(**{**SMALL, **kw}), load("digits"), out)


def test_multi_with_factor_one_is_the_pixel_run_bit_for_bit(tmp_path):
    a, _ = _run(tmp_path, "pixel")
    b, _ = _run(tmp_path, "multi1", representation="multi", factor=1)
    assert (a / "synthetic.pt").read_bytes() != b""
    ta = torch.load(a / "synthetic.pt", weights_only=True)
    tb = torch.load(b / "synthetic.pt", weights_only=True)
    assert torch.equal(ta["images"], tb["images"]) and torch.equal(ta["labels"], tb["labels"])


def test_a_multi_run_writes_decoded_images_and_its_stored_tensor(tmp_path):
    out, result = _run(tmp_path, "multi", representation="multi", factor=2)
    trained = torch.load(out / "synthetic.pt", weights_only=True)
    stored = torch.load(out / "representation.pt", weights_only=True)
    assert trained["images"].shape == (10 * 2 * 4, 1, 8, 8)
    assert torch.equal(trained["labels"], torch.arange(10).repeat_interleave(8))
    assert stored["images"].shape == (20, 1, 8, 8)
    assert stored["representation"] == {"name": "multi", "factor": 2}
    rebuilt = REPRESENTATIONS["multi"](stored["representation"]["factor"]).decode(stored["images"])
    assert torch.equal(rebuilt, trained["images"])
    assert torch.equal(result.synthetic.images.cpu(), trained["images"])
    from zodd.synthetic import load

    assert load(out).ipc == 8  # zodd evaluate reads it as any set


def test_a_multi_run_resumes_bit_for_bit(tmp_path):
    from zodd.data import load

    digits = load("digits")
    straight = tmp_path / "straight"
    kw = dict(SMALL, representation="multi", checkpoint_every=1, iterations=6)
    distill(DistillConfig(**kw), digits, straight)
    halves = tmp_path / "halves"
    distill(DistillConfig(**{**kw, "iterations": 3}), digits, halves)
    distill(DistillConfig(**kw), digits, halves, resume=True)
    for name in ("synthetic.pt", "representation.pt"):
        a = torch.load(straight / name, weights_only=True)["images"]
        b = torch.load(halves / name, weights_only=True)["images"]
        assert torch.equal(a, b), name


def test_a_factor_that_does_not_divide_the_image_is_refused(digits):
    with pytest.raises(ZoddError, match="factor"):
        resolve(DistillConfig(representation="multi", factor=3), digits)


def test_multi_needs_factor_squared_real_images_per_class(digits):
    from zodd.synthetic import initialise

    with pytest.raises(ZoddError, match="needs 800"):
        initialise(digits, 200, "real", torch.Generator(), Multi(2))


# --- DSA ----------------------------------------------------------------------------------------
def _landmark(n=1):
    x = torch.zeros(n, 1, 16, 16)
    x[..., 3, 5] = 1.0  # one bright pixel away from the centre
    return x


@pytest.mark.parametrize("op", DSA_OPS)
def test_one_dsa_draw_moves_a_landmark_alike_in_real_and_synthetic_images(op):
    """The draw of a class applies the same transform to its real and synthetic images (a
    Siamese augmentation): a landmark lands in the same place in both."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):  # draw until class 0 gets the operation under test
        t = DSA.draw(2, gen, flip=True)
        if DSA_OPS[int(t.op[0])] == op:
            break
    assert DSA_OPS[int(t.op[0])] == op
    real = torch.cat([_landmark(3), torch.randn(3, 1, 16, 16)]).view(2, 3, 1, 16, 16)
    syn = torch.cat([_landmark(1), torch.randn(1, 1, 16, 16)]).view(2, 1, 1, 16, 16)
    a, b = t(real)[0], t(syn)[0]
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[0], atol=1e-6)
    if op in ("crop", "flip", "rotate", "scale"):  # geometric: the landmark went somewhere
        assert a[0].argmax() == b[0].argmax()
    if op == "flip" and float(t.theta[0, 0, 0]) < 0:
        assert a[0, 0, 3].argmax() == 16 - 1 - 5


def test_dsa_skips_flip_where_not_allowed_and_its_colour_operation_acts():
    gen = torch.Generator().manual_seed(1)
    t = DSA.draw(500, gen, flip=False)
    assert DSA_OPS.index("flip") not in t.op.tolist()
    x = torch.randn(500, 1, 1, 8, 8)
    out = t(x)
    colour = t.op == DSA_OPS.index("colour")
    # a one-channel image under brightness and contrast changes
    assert not torch.equal(out[colour], x[colour])


def test_every_candidate_of_a_step_sees_the_same_dsa_draw(digits):
    """DSA in a bound objective: one draw per class and step, so a batch of candidates gives
    what each candidate gives alone, and the same candidate gives the same loss twice."""
    from zodd.models import build_model

    net = build_model(1, 10, 8, width=16, seed=0).requires_grad_(False)
    real = digits.train_x[:160].view(10, 16, 1, 8, 8)
    ctx = StepContext(net, real, torch.arange(10).repeat_interleave(2), 10, seed=3,
                      augment="dsa")
    f = OBJECTIVES["dm"]().bind(ctx)
    candidates = torch.randn(4, 20, 1, 8, 8)
    together = f(candidates)
    alone = torch.stack([f(c[None])[0] for c in candidates])
    assert torch.allclose(together, alone, rtol=1e-4, atol=1e-5)
    assert not torch.equal(together, OBJECTIVES["dm"]().bind(replace(ctx, augment="none"))(
        candidates))


def test_dsa_is_differentiable_and_every_augment_is_registered():
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    out = augment_batch(x, torch.Generator().manual_seed(0), True, "dsa")
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all()
    assert draw("none", 3, torch.Generator(), True) is None
    assert set(AUGMENTS) == {"affine", "dsa", "frepo", "none"}


def test_old_configs_with_a_boolean_augment_still_read():
    assert DistillConfig.from_dict({"augment": True}).augment == "affine"
    assert DistillConfig.from_dict({"augment": False}).augment == "none"


# --- recipes and the DC schedule ----------------------------------------------------------------
@pytest.mark.parametrize("ipc, outer, inner", [(1, 1, 1), (10, 10, 50), (50, 50, 10),
                                               (12, 10, 50)])
def test_native_gradient_matching_follows_dc_schedule_by_ipc(digits, ipc, outer, inner):
    plan = resolve(DistillConfig(objective="gm", updater="native", ipc=ipc), digits)
    assert (plan.reinit_every, plan.train_on_synthetic) == (outer, inner)
    mine = resolve(DistillConfig(objective="gm", updater="native", ipc=ipc, reinit_every=3,
                                 model_steps=2), digits)
    assert (mine.reinit_every, mine.train_on_synthetic) == (3, 2)  # the user's values win


def test_recipes_fill_defaults_that_flags_override_and_are_recorded(tmp_path):
    listed = subprocess.run([*CLI, "distill", "--recipe", "list"], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and all(name in listed.stdout for name in RECIPES)
    out = tmp_path / "idc"
    done = subprocess.run([*CLI, "distill", "--recipe", "idc", "--factor", "4", "--ipc", "1",
                           "--iterations", "2", "--batch-size", "8", "--quiet", "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["recipe"], cfg["representation"], cfg["factor"], cfg["objective"],
            cfg["augment"]) == ("idc", "multi", 4, "gm", "dsa")
    both = subprocess.run([*CLI, "distill", "--recipe", "dm", "--config",
                           str(out / "config.json"), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "--recipe" in both.stderr
