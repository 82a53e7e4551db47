"""The zero-order path in the loop: common random numbers within a step, the structure flags end
to end, and nevergrad optimisers through ask/tell."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zodd.config import DistillConfig
from zodd.driver import distill
from zodd.loop import Loop
from zodd.plan import resolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from harness import HeldOutDM  # noqa: E402

CLI = [sys.executable, "-m", "zodd.cli", "distill"]


def _bound_box(loop):
    """The black box of the loop's next step, bound the way advance() binds it."""
    loop.network.refresh(loop.step, loop.gen)
    picks = torch.stack([i[:loop.plan.batch_size] for i in loop.per_class])
    loop.network.update(loop.data.train_x[picks], loop._by_class, loop.gen)
    box, *_ = loop._bind(loop.data.train_x[picks])
    return box


@pytest.mark.parametrize("objective", ["dm", "gm"])
def test_every_candidate_of_a_step_sees_the_same_network_batch_and_augmentation(digits,
                                                                                 objective):
    cfg = DistillConfig(objective=objective, estimator="gaussian", ipc=2, batch_size=16)
    loop = Loop(resolve(cfg, digits), digits)
    box = _bound_box(loop)
    x = loop.x.detach()
    same = box(torch.stack([x, x, x]))
    assert same[0] == same[1] == same[2]  # bit for bit: nothing random per candidate
    blocks = box.blocks(torch.stack([x, x]))
    assert torch.equal(blocks[0], blocks[1])
    # and the per-class blocks are separable: moving class 0 changes only block 0
    moved = x.clone()
    moved[:2] += 0.5
    changed = box.blocks(torch.stack([x, moved]))
    assert changed[1, 0] != changed[0, 0]
    assert torch.allclose(changed[1, 1:], changed[0, 1:], rtol=1e-5, atol=1e-6)


def test_a_surrogate_guides_a_score_end_to_end(tmp_path):
    """--surrogate dm on the nearest-prototype score: one more query a step, recorded in
    config.json; the run trains a network for the surrogate although the score needs none."""
    out = tmp_path / "run"
    done = subprocess.run([*CLI, "--objective", "prototype", "--surrogate", "dm", "--ipc", "2",
                           "--batch-size", "16", "--iterations", "3", "--directions", "8",
                           "--select-every", "0",  # no fold-0 scorings among the counts
                           "--quiet", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["queries"] for r in rows] == [10, 20, 30]
    assert "ce" in rows[0]  # the updater trained the surrogate's network
    assert json.loads((out / "config.json").read_text())["surrogate"] == "dm"


@pytest.mark.parametrize("flags", [
    ["--estimator", "antithetic", "--directions", "8"],
    ["--estimator", "sphere", "--no-blockwise"],
    ["--estimator", "coordinate", "--directions", "16", "--lowres", "2"],
    ["--estimator", "gaussian", "--lowres", "4", "--directions", "8"],
])
def test_estimator_flags_run_end_to_end_and_count_queries(tmp_path, flags):
    out = tmp_path / "run"
    done = subprocess.run([*CLI, "--ipc", "1", "--batch-size", "8", "--iterations", "3",
                           "--quiet", "--out", str(out), *flags], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    m = int(flags[flags.index("--directions") + 1]) if "--directions" in flags else 128
    per_step = 2 * m + 1 if flags[1] in ("antithetic", "coordinate") else m + 1
    assert [r["queries"] for r in rows] == [per_step * (i + 1) for i in range(3)]
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["estimator"] == flags[1]


def test_nevergrad_optimiser_drives_the_set_and_counts_queries(digits, tmp_path):
    pytest.importorskip("nevergrad")
    cfg = DistillConfig(estimator="gaussian", optimizer="ng:OnePlusOne", ipc=1, batch_size=16,
                        iterations=4, directions=6, lowres=2)
    result = distill(cfg, digits, tmp_path / "run")
    assert result.estimator == "ng:OnePlusOne" and result.queries == 4 * 7
    start = Loop(resolve(cfg, digits), digits).x.detach()
    assert not torch.equal(result.synthetic.images, start)  # the optimiser moved S
    done = subprocess.run([*CLI, "--resume", str(tmp_path / "run"), "--iterations", "6"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "nevergrad" in done.stderr


def test_default_zero_order_run_lowers_the_objective_faster_than_the_papers_step(digits):
    """The defaults (blockwise, 128 directions, SGD at the autograd lr) against Algorithm 2 as
    published (32 directions, forward differences, 0.1 / sqrt(1 + E)), equal queries."""
    default = distill(DistillConfig(estimator="gaussian", ipc=2, batch_size=32, iterations=8),
                      digits)
    paper = distill(DistillConfig(estimator="gaussian", ipc=2, batch_size=32, iterations=32,
                                  directions=32, blockwise=False, optimizer="paper"), digits)
    assert default.queries == 8 * 129 and paper.queries == 32 * 33
    measure = HeldOutDM(digits, nets=4, seed=99, net_seed=500)
    assert measure(default.synthetic.images) < measure(paper.synthetic.images)


@pytest.mark.parametrize("settings, expected", [
    (dict(ipc=10), 1),  # a class of digits IPC 10 is 640 values
    (dict(ipc=70), 2),  # 4,480 values: half resolution
    (dict(ipc=70, lowres=1), 1),  # asked for
    (dict(ipc=7, blockwise=False), 2),  # the whole set: 7 x 10 x 64 = 4,480 values
    (dict(ipc=70, estimator="autograd"), 1),
    (dict(ipc=70, objective="prototype", surrogate="dm"), 1),  # the guide is full-resolution
])
def test_lowres_is_chosen_by_the_size_one_estimate_covers(digits, tmp_path, settings, expected):
    cfg = DistillConfig(**{"estimator": "gaussian", **settings, "iterations": 1})
    loop = Loop(resolve(cfg, digits), digits)
    assert loop.plan.lowres == expected
    if cfg.estimator != "autograd":
        assert loop.estimator.lowres == expected
    distill(cfg, digits, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["lowres"] == expected


@pytest.mark.parametrize("flags", [
    dict(estimator="gaussian", directions=6), dict(estimator="antithetic", directions=4),
    dict(estimator="coordinate", directions=5), dict(objective="prototype", directions=3),
    dict(estimator="gaussian", optimizer="ng:OnePlusOne", directions=4),
])
def test_logged_queries_are_the_candidates_the_black_box_received(digits, flags):
    """Counted at the black box itself, not from the formula that sets the count."""
    if flags.get("optimizer", "").startswith("ng:"):
        pytest.importorskip("nevergrad")
    loop = Loop(resolve(DistillConfig(ipc=1, batch_size=8, **flags), digits), digits)
    received = []
    bind = loop.binding.objective.bind

    class Counting:
        def __init__(self, box):
            self.box = box
            self.separable, self.num_classes = (getattr(box, "separable", False),
                                                getattr(box, "num_classes", None))

        def __call__(self, candidates):
            received.append(len(candidates))
            return self.box(candidates)

        def blocks(self, candidates):
            received.append(len(candidates))
            return self.box.blocks(candidates)

    held_out = loop.binding.objective.needs_held_out
    loop.binding.objective = type("Spy", (), {"needs_held_out": held_out,
                                              "bind": lambda self, ctx: Counting(bind(ctx))})()
    before = loop.queries  # a scored warm start's fold-0 scorings, before the spy
    rows = [loop.advance() for _ in range(3)]
    assert rows[-1]["queries"] - before == sum(received) > 0
