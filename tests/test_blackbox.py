"""Objectives with no gradient, the external-command contract, and faults of the black box."""
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from objectives import OBJECTIVES
from objectives.command import parse_scores
from zodd.estimators import Gaussian
from zodd.guard import Guarded
from zodd.models import build_model
from zodd.types import EvaluationError, StepContext

ROOT = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).with_name("fault_evaluator.py")
CLI = [sys.executable, "-m", "zodd.cli", "distill"]


def _ctx(digits, n=20):
    gen = torch.Generator().manual_seed(0)
    idx = digits.class_indices()
    pick = lambda: digits.train_x[torch.stack(  # noqa: E731
        [i[torch.randperm(len(i), generator=gen)[:n]] for i in idx])]
    return StepContext(build_model(1, 10, 8, seed=0), pick(), torch.arange(10).repeat_interleave(2),
                       10, seed=3, held_out=pick(), pixel_mean=digits.mean, pixel_std=digits.std)


@pytest.mark.parametrize("name", ["prototype", "trained"])
def test_scores_are_black_boxes_with_no_gradient(name, digits):
    objective = OBJECTIVES[name]()
    assert not objective.differentiable and objective.needs_held_out
    f = objective.bind(_ctx(digits))
    candidates = torch.randn(3, 20, 1, 8, 8)
    losses = f(candidates)
    assert losses.shape == (3,) and ((losses >= 0) & (losses <= 100)).all()
    assert torch.equal(losses, f(candidates))  # common random numbers: a fixed function


def test_prototype_error_is_zero_on_its_own_held_out_images(digits):
    ctx = _ctx(digits, n=2)
    f = OBJECTIVES["prototype"]().bind(ctx)
    assert float(f(ctx.held_out.flatten(0, 1)[None])[0]) == 0.0
    candidates = torch.randn(2, 20, 1, 8, 8)
    assert torch.allclose(f.blocks(candidates).sum(1), f(candidates))


@pytest.mark.parametrize("text, k, expected", [
    ("[1, 2.5]", 2, [1.0, 2.5]), ("0.25", 1, [0.25]), ('{"scores": [3]}', 1, [3.0]),
    ("[NaN, 1]", 2, [math.nan, 1.0]),
])
def test_parse_scores_accepts_the_contract(text, k, expected):
    got = parse_scores(text, k)
    assert len(got) == k
    assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, expected))


@pytest.mark.parametrize("text, k", [("", 1), ("hello", 2), ("[1]", 2), ('["a", 1]', 2),
                                     ("[true, 1]", 2), ("0.5", 2), ('{"x": 1}', 1)])
def test_parse_scores_refuses_anything_else(text, k):
    with pytest.raises(EvaluationError):
        parse_scores(text, k)


def test_guard_retries_then_counts_what_still_fails():
    calls = []

    class Flaky:
        differentiable = False

        def __call__(self, c):
            calls.append(len(c))
            if len(calls) == 1:
                raise EvaluationError("first call fails")
            out = c.sum(1)
            return torch.where(c[:, 0] == 0, math.nan, out)  # the all-zero candidate never works

    guard = Guarded(Flaky(), retries=2)
    candidates = torch.arange(4.0)[:, None].expand(4, 3).clone()
    losses = guard(candidates)
    assert calls == [4, 4, 1]  # all, all again (the call failed), then only candidate 0
    assert math.isnan(losses[0]) and torch.equal(losses[1:], torch.tensor([3.0, 6.0, 9.0]))
    assert guard.failures == 1 and guard.retried == 5


def test_gaussian_leaves_failed_directions_out_and_refuses_a_failed_centre():
    x = torch.zeros(5, dtype=torch.float64)

    def f(c):
        out = (c ** 2).sum(1) + c[:, 0]
        out[1] = math.nan  # the first perturbed set fails
        return out

    est = Gaussian(directions=6, sigma=1e-3).estimate(f, x, torch.Generator().manual_seed(0))
    assert torch.isfinite(est.grad).all() and est.extra["failed_directions"] == 1
    with pytest.raises(EvaluationError):
        Gaussian(directions=3).estimate(lambda c: torch.full((len(c),), math.nan), x,
                                        torch.Generator())


def _run(tmp_path, out, evaluator_args, *flags, env_extra=None):
    env = {**os.environ, "ZODD_CALLS": str(tmp_path / "calls"), **(env_extra or {})}
    cmd = f"{sys.executable} {FAULTS} {evaluator_args} {{input}}"
    return subprocess.run([*CLI, "--objective", "command", "--command", cmd, "--ipc", "1",
                           "--directions", "4", "--quiet", "--out", str(out), *map(str, flags)],
                          capture_output=True, text=True, env=env, timeout=300)


def _images(run):
    return torch.load(run / "synthetic.pt", weights_only=True)["images"].numpy().tobytes()


@pytest.fixture(scope="module")
def three_good_steps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("good")
    done = _run(tmp, tmp / "run", "ok", "--iterations", 3)
    assert done.returncode == 0, done.stderr
    return tmp / "run"


@pytest.mark.parametrize("mode", ["raise", "exit", "timeout", "garbage", "nan", "wrong-count"])
def test_each_fault_ends_the_run_with_the_last_good_set_saved(tmp_path, three_good_steps, mode):
    """Calls 1-3 succeed, call 4 on misbehaves: step 4 fails after its retry, the run ends (no
    failure tolerated) and the set on disk is the set after step 3."""
    run = tmp_path / "run"
    done = _run(tmp_path, run, mode, "--iterations", 10, "--retries", 1, "--max-failures", 0,
                "--command-timeout", 2, env_extra={"ZODD_FAIL_FROM": "4"})
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "max-failures" in err[0] and "last good set" in err[0], done.stderr
    assert "Traceback" not in done.stderr
    assert _images(run) == _images(three_good_steps)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and rows[-1]["loss"] is None and "skipped" in rows[-1]
    assert int((tmp_path / "calls").read_text()) == 5  # call 4 and its one retry


def test_a_transient_fault_is_retried_and_the_run_goes_on(tmp_path, three_good_steps):
    run = tmp_path / "run"
    done = _run(tmp_path, run, "exit", "--iterations", 3, "--retries", 1,
                env_extra={"ZODD_FAIL_FROM": "2", "ZODD_FAIL_UNTIL": "3"})
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    # the whole call was retried: es asks 2M + 1 = 9 candidates (M = 4 antithetic pairs, S)
    assert rows[1]["retried"] == 9 and rows[1]["failures"] == 0
    assert _images(run) == _images(three_good_steps)  # the retry gave the same values


def test_missing_program_is_refused_up_front(tmp_path):
    done = subprocess.run([*CLI, "--objective", "command", "--command", "no-such-program-zodd",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2 and "not found" in done.stderr
    assert not (tmp_path / "o").exists()


def test_readme_example_evaluator_runs_end_to_end(tmp_path):
    example = ROOT / "examples" / "knn_evaluator.py"
    page = (ROOT / "docs" / "black-box.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S)
    assert block and block.group(1).strip() == example.read_text().strip()
    run = tmp_path / "run"
    done = subprocess.run([*CLI, "--objective", "command", "--command",
                           f"{sys.executable} {example} {{input}}", "--iterations", "2",
                           "--directions", "4", "--quiet", "--out", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 <= r["loss"] <= 1 for r in rows)
    assert rows[-1]["queries"] == 2 * (2 * 4 + 1)  # es: S and 4 antithetic pairs a step


def test_autograd_refuses_a_score_with_no_gradient(tmp_path):
    done = subprocess.run([*CLI, "--objective", "prototype", "--estimator", "autograd",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2 and "not differentiable" in done.stderr


@pytest.mark.ray
def test_workers_give_the_same_losses_as_in_process(tmp_path):
    rows = {}
    for workers in (0, 2):
        run = tmp_path / f"w{workers}"
        done = subprocess.run([*CLI, "--objective", "prototype", "--iterations", "3",
                               "--directions", "8", "--workers", str(workers), "--quiet",
                               "--out", str(run)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        rows[workers] = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert rows[0] == rows[2]
    assert _images(tmp_path / "w0") == _images(tmp_path / "w2")


def test_in_process_evaluation_does_not_import_ray(digits):
    code = ("import sys; from zodd.config import DistillConfig; from zodd.data import load; "
            "from zodd.driver import distill; "
            "distill(DistillConfig(objective='prototype', ipc=1, iterations=2, directions=2), "
            "load('digits')); print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_command_sees_pixels_in_zero_one_as_the_contract_says(digits):
    """S's standardised values may lie far beyond the pixels' range; the program gets them
    clipped to [0, 1] (what an image file of S would hold), with the step's seed and fold."""
    program = ("import json, sys, numpy as np; x = np.load(sys.argv[1])['images']; "
               "print(json.dumps([float(x.min()), float(x.max()), float(sys.argv[2]), "
               "float(sys.argv[3])]))")
    spec = OBJECTIVES["command"](argv=(sys.executable, "-c", program, "{input}", "{seed}",
                                       "{fold}"))
    box = spec.bind(dataclasses.replace(_ctx(digits), fold=2))
    candidates = torch.randn(4, 20, 1, 8, 8) * 50  # thousands of pixels beyond [0, 1]
    low, high, seed, fold = box(candidates).tolist()
    assert low == 0.0 and high == 1.0
    assert (seed, fold) == (3, 2)
