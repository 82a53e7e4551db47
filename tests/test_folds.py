"""A score's data in folds: ``{seed}`` / ``{fold}`` reach a command fresh each step and the same
on a resume, and ``--select-every`` keeps the best set on fold 0, not the last."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zodd.data import load
from zodd.synthetic import initialise

CLI = [sys.executable, "-m", "zodd.cli", "distill"]
SCORER = Path(__file__).with_name("fold_evaluator.py")


def _run(tmp_path, out, *flags, nan_fold=None, resume=False):
    env = {**os.environ, "ZODD_SEEN": str(tmp_path / "seen")}
    if nan_fold is not None:
        env["ZODD_NAN_FOLD"] = str(nan_fold)
    if resume:
        args = ["--resume", str(out)]
    else:
        cmd = f"{sys.executable} {SCORER} {{seed}} {{fold}} {{folds}} {{input}}"
        args = ["--objective", "command", "--command", cmd, "--ipc", "1", "--init", "real",
                "--directions", "2", "--out", str(out)]
    return subprocess.run([*CLI, *args, *map(str, flags)], capture_output=True, text=True,
                          env=env, timeout=300)


def _seen(tmp_path) -> list[tuple[int, int, int]]:
    return [tuple(map(int, line.split())) for line in (tmp_path / "seen").read_text().split("\n")
            if line]


def _rows(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _images(run):
    return torch.load(run / "synthetic.pt", weights_only=True)["images"]


def test_seed_and_fold_reach_the_program_fresh_each_step_and_the_same_on_a_resume(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    done = _run(whole, whole / "run", "--iterations", 6, "--select-every", 1, "--quiet")
    assert done.returncode == 0, done.stderr
    seen = _seen(whole)
    search = [s for s in seen if s[1] != 0]
    assert len(search) == 6  # es at 2 directions: its 5 candidates in one call a step
    assert len({s[0] for s in search}) == 6  # a fresh seed every step
    assert all(fold == 1 + seed % 4 and folds == 5 for seed, fold, folds in search)
    # fold 0 (the set to keep): before the first step, then after each; always seed 0
    assert [s for s in seen if s[1] == 0] == [(0, 0, 5)] * 7
    parts.mkdir()
    for flags in (("--iterations", 3), ("--iterations", 6)):
        done = _run(parts, parts / "run", *flags, "--select-every", 1, "--quiet",
                    resume=flags[1] == 6)
        assert done.returncode == 0, done.stderr
    assert _seen(parts) == seen  # the resumed run asked what the uninterrupted one asked
    assert torch.equal(_images(parts / "run"), _images(whole / "run"))


def test_the_kept_set_is_the_best_on_fold_zero_not_the_last(tmp_path):
    """The search moves S towards grey; on fold 0 that is worse, so the best set there is the
    one the run started from (step 0), which the run keeps and saves."""
    kept, last = tmp_path / "kept", tmp_path / "last"
    steady = ("--directions", 8, "--lr", 0.05)  # a search that goes where its score says
    done = _run(tmp_path, kept, "--iterations", 6, "--select-every", 2, *steady)
    assert done.returncode == 0, done.stderr
    assert "kept the set of step 0" in done.stdout
    rows = _rows(kept)
    scores = [rows[0]["held_out_start"]] + [r["held_out"] for r in rows if "held_out" in r]
    assert len(scores) == 4 and scores == sorted(scores) and scores[-1] > scores[0]
    start = initialise(load("digits"), 1, "real", torch.Generator().manual_seed(0)).images
    assert torch.equal(_images(kept), start)
    done = _run(tmp_path, last, "--iterations", 6, "--select-every", 0, *steady, "--quiet")
    assert done.returncode == 0, done.stderr
    assert not torch.equal(_images(last), start)  # the last set: the search's own


def test_a_zodd_held_out_score_keeps_its_fold_zero_apart(digits):
    """prototype scores on zodd's held-out images: the search's draws never touch fold 0."""
    from zodd.build import binding
    from zodd.plan import resolve, settings
    from zodd.representation import REPRESENTATIONS

    plan = resolve(settings(objective="prototype", ipc=1, iterations=1), digits)
    assert plan.select_every > 0
    rep = REPRESENTATIONS["pixel"].of(2, None)
    b = binding(plan, digits, rep, torch.arange(10), digits.train_x, None)
    for zero, rest in zip(b.fold_zero, b.held_out):
        assert len(zero) and len(rest) and not torch.isin(zero, rest).any()
        assert len(zero) + len(rest) == len(torch.unique(torch.cat([zero, rest])))


@pytest.mark.parametrize("where", ["search", "choosing"])
def test_a_scorer_failing_on_one_fold_is_handled_as_any_failure(tmp_path, where):
    """NaN on fold 0: those scorings fail (retried, counted), the run goes on and keeps its
    last set. NaN on one search fold: the steps drawn there are skipped, as a failed f(S)."""
    nan_fold = 0 if where == "choosing" else 1
    run = tmp_path / "run"
    done = _run(tmp_path, run, "--iterations", 6, "--select-every", 1, "--folds", 3,
                "--retries", 0, "--max-failures", 100, "--quiet", nan_fold=nan_fold)
    assert done.returncode == 0, done.stderr
    rows, seen = _rows(run), _seen(tmp_path)
    if where == "choosing":
        assert all(r["held_out"] is None and "held_out_fault" in r for r in rows)
        assert rows[-1]["step"] == 6 and all(r["loss"] is not None for r in rows)
        return
    search = [s for s in seen if s[1] != 0]
    assert {s[1] for s in search} == {1, 2}  # both search folds were drawn in 6 steps
    assert [("skipped" in r) for r in rows] == [s[1] == 1 for s in search]
    assert rows[-1]["failures"] >= 1
