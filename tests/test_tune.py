"""zodd tune: the search-space grammar, the validation split, the results files, bad input, and
(marked ``ray``) whole sweeps: end to end, interrupted and resumed, with a failing trial."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tuning import space as spaces
from tuning.results import best_row, plot_alpha, summary, write_csv
from tuning.sweep import Sweep
from tuning.trial import Scoring, report_points, split_indices, validation_split
from zodd.types import ZoddError

CLI = [sys.executable, "-m", "zodd.cli"]
FAULTS = Path(__file__).with_name("fault_evaluator.py")


def _cli(*args, timeout=900, env=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# --- the space ----------------------------------------------------------------------------------
def test_param_specs_parse_to_values_and_ranges():
    p = spaces.parse("alpha=0.2,0.5,0.8")
    assert p.values == (0.2, 0.5, 0.8) and p.low is None
    p = spaces.parse("batch-size=64:512:log")
    assert (p.name, p.low, p.high, p.log, p.integer) == ("batch_size", 64, 512, True, True)
    p = spaces.parse("cvar_tail=upper,lower")
    assert p.values == ("upper", "lower")
    p = spaces.parse("augment=affine,dsa")
    assert p.values == ("affine", "dsa")
    p = spaces.parse("representation=pixel,multi")  # searchable like any named setting
    assert p.values == ("pixel", "multi")
    p = spaces.parse("blockwise=true,false")
    assert p.values == (True, False)


@pytest.mark.parametrize("text, words", [
    ("alpha", "expected NAME=VALUES"),
    ("nonsense=1,2", "not a zodd distill setting"),
    ("dataset=digits,mnist", "set for the whole sweep"),
    ("iterations=10,20", "set for the whole sweep"),
    ("alpha=0.5,1.5", "alpha"),
    ("alpha=0.8:0.2", "empty"),
    ("alpha=0:1:log", "lo > 0"),
    ("clusters=a,b", "not a valid int"),
    ("cvar_tail=upper:lower", "range"),
    ("alpha=", "no values"),
    ("updater=robust,fancy", "choose one of"),
])
def test_bad_param_specs_are_refused_with_a_reason(text, words):
    with pytest.raises(ZoddError, match=words):
        spaces.parse(text)


def test_default_space_follows_the_paper_and_leaves_clusters_out_at_low_ipc():
    names = lambda params: [p.name for p in params]  # noqa: E731
    assert names(spaces.build([], "random", ipc=10)) == ["alpha", "batch_size"]
    assert names(spaces.build([], "random", ipc=50)) == ["alpha", "clusters", "batch_size"]
    grid = spaces.build([], "grid", ipc=50)
    assert spaces.grid_size(grid) == 5 * 4 * 4
    extended = spaces.build(["sigma=0.01:1:log", "alpha=0.5,0.8"], "random", ipc=10)
    assert names(extended) == ["alpha", "batch_size", "sigma"]
    assert extended[0].values == (0.5, 0.8)
    assert names(spaces.build(["sigma=0.1,1"], "random", 10, defaults=False)) == ["sigma"]


def test_grid_search_needs_listed_values():
    with pytest.raises(ZoddError, match="grid search needs listed values"):
        spaces.build(["alpha=0.2:1.0"], "grid", ipc=10)


def test_space_round_trips_through_its_settings_file():
    params = spaces.build(["sigma=0.01:1:log", "cvar_tail=upper,lower"], "random", ipc=50)
    assert spaces.from_dict(json.loads(json.dumps(spaces.to_dict(params)))) == params


# --- the split and the scores -------------------------------------------------------------------
def test_validation_split_is_stratified_disjoint_fixed_and_leaves_the_test_set_alone(digits):
    keep, held = split_indices(digits, 0.2)
    keep2, held2 = split_indices(digits, 0.2)
    assert torch.equal(held, held2) and torch.equal(keep, keep2)
    assert not set(keep.tolist()) & set(held.tolist())
    assert sorted(keep.tolist() + held.tolist()) == list(range(len(digits.train_x)))
    for c, idx in enumerate(digits.class_indices()):
        assert int((digits.train_y[held] == c).sum()) == max(1, round(0.2 * len(idx)))
    split = validation_split(digits, 0.2)
    assert torch.equal(split.test_x, digits.train_x[held])
    assert torch.equal(split.train_x, digits.train_x[keep])
    with pytest.raises(ZoddError):
        validation_split(digits, 1.0)


def test_report_points_are_spread_and_end_at_the_last_iteration():
    assert report_points(300, 4) == [75, 150, 225, 300]
    assert report_points(10, 3) == [4, 7, 10]
    assert report_points(2, 5) == [1, 2]
    assert report_points(7, 1) == [7]


def test_scoring_mixes_accuracy_and_cluster_min():
    report = {"acc": {"mean": 90.0}, "cluster_min": {"mean": 60.0}}
    assert Scoring("acc").score(report) == 90.0
    assert Scoring("cluster_min").score(report) == 60.0
    assert Scoring("mix", mix=0.25).score(report) == pytest.approx(82.5)


# --- the results files --------------------------------------------------------------------------
def _rows():
    return [
        {"trial": "a", "alpha": 0.2, "status": "done", "score": 80.0, "acc": 80.0,
         "cluster_min": 50.0, "iterations": 10},
        {"trial": "b", "alpha": 0.8, "status": "stopped early", "score": 95.0, "acc": 95.0,
         "cluster_min": 70.0, "iterations": 5},
        {"trial": "c", "alpha": 0.6, "status": "done", "score": 85.0, "acc": 85.0,
         "cluster_min": 65.0, "iterations": 10},
        {"trial": "d", "alpha": 0.4, "status": "failed", "score": None,
         "error": "ZoddError: invalid depth"},
    ]


def _sweep():
    return Sweep(base={}, params=spaces.build(["alpha=0.2,0.4,0.6,0.8"], "grid", 10, False),
                 search="grid")


def test_best_is_the_top_trial_that_ran_to_the_end():
    assert best_row(_rows())["trial"] == "c"
    only_early = [r for r in _rows() if r["status"] != "done"]
    assert best_row(only_early)["trial"] == "b"
    with pytest.raises(ZoddError, match="no trial produced a score"):
        best_row([_rows()[3]])


def test_results_csv_holds_every_trial_and_the_failure(tmp_path):
    write_csv(_rows(), _sweep(), tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == ["a", "b", "c", "d"]
    assert table[3]["status"] == "failed" and "invalid depth" in table[3]["error"]
    assert float(table[1]["alpha"]) == 0.8 and table[3]["score"] == ""
    text = summary(_rows(), _sweep())
    assert "stopped early" in text and "failed" in text


def test_alpha_plot_is_a_png_and_needs_alpha_to_vary(tmp_path):
    pytest.importorskip("matplotlib")
    assert plot_alpha(_rows(), tmp_path / "a.png", "mix")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_alpha(_rows()[:1], tmp_path / "b.png", "acc")
    assert not (tmp_path / "b.png").exists()


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--param", "bogus=1,2"], "not a zodd distill setting"),
    (["--param", "alpha=2"], "alpha"),
    (["--search", "grid", "--param", "alpha=0.2:0.9"], "grid search needs listed values"),
    (["--search", "grid", "--num-samples", "3"], "--num-samples is for"),
    (["--search", "bogus"], "invalid search"),
    (["--metric", "loss"], "loss"),
    (["--mix", "2", "--metric", "mix"], "mix weight"),
    (["--reports", "0"], "reports"),
    (["--trial-retries", "-1"], "trial-retries"),
    (["--validation", "1.5"], "validation"),
    (["--cpus", "1", "--cpus-per-trial", "2"], "no trial could start"),
    (["--set", "alpha=0.5"], "both --set and searched"),
    (["--set", "ipc=zero"], "not a valid int"),
    (["--set", "nope=1"], "not a zodd distill setting"),
    (["--ipc", "0"], "ipc"),
    (["--config", "/nonexistent.json"], "not found"),
])
def test_bad_sweeps_are_one_line_errors_before_ray_starts(tmp_path, args, words):
    done = _cli("tune", *args, "--out", tmp_path / "sweep", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("zodd: error:")
    assert words in done.stderr
    assert not (tmp_path / "sweep").exists()


def test_resume_refuses_a_missing_sweep_and_changed_settings(tmp_path):
    done = _cli("tune", "--resume", tmp_path, timeout=120)
    assert done.returncode == 2 and "no sweep in" in done.stderr
    (tmp_path / "tune.json").write_text("{}")
    done = _cli("tune", "--resume", tmp_path, "--ipc", "5", timeout=120)
    assert done.returncode == 2 and "drop --ipc" in done.stderr
    done = _cli("tune", "--resume", tmp_path, timeout=120)
    assert done.returncode == 2 and "not a zodd sweep" in done.stderr


def test_a_non_empty_out_is_refused(tmp_path):
    (tmp_path / "x").write_text("keep me")
    done = _cli("tune", "--out", tmp_path, timeout=120)
    assert done.returncode == 2 and "not empty" in done.stderr
    assert (tmp_path / "x").read_text() == "keep me"


# --- whole sweeps (Ray) -------------------------------------------------------------------------
TINY = ["--dataset", "digits", "--iterations", 6, "--reports", 2, "--eval-epochs", 20,
        "--final-seeds", 1, "--set", "batch_size=16", "--cpus", 2]


@pytest.mark.ray
def test_sweep_end_to_end_and_the_best_config_reproduces(tmp_path):
    pytest.importorskip("ray.tune")
    out = tmp_path / "sweep"
    done = _cli("tune", *TINY, "--no-default-space", "--param", "alpha=0.3:1.0",
                "--num-samples", 3, "--out", out)
    assert done.returncode == 0, done.stderr
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and all(r["status"] in ("done", "stopped early") for r in table)
    assert (out / "score-vs-alpha.png").exists()
    summary_json = json.loads((out / "summary.json").read_text())
    assert summary_json["trials"] == 3 and "acc" in summary_json["test"]
    best = json.loads((out / "best.json").read_text())
    assert best["alpha"] == pytest.approx(summary_json["best_settings"]["alpha"])
    # what `zodd distill --config best.json` makes is the set the sweep evaluated on the test set
    again = tmp_path / "again"
    done = _cli("distill", "--config", out / "best.json", "--out", again, "--quiet")
    assert done.returncode == 0, done.stderr
    load = lambda d: torch.load(d / "synthetic.pt", weights_only=True)["images"]  # noqa: E731
    assert torch.equal(load(again), load(out / "best"))


@pytest.mark.ray
@pytest.mark.slow
def test_a_nevergrad_search_runs_its_trials_and_picks_a_best(tmp_path):
    pytest.importorskip("ray.tune")
    pytest.importorskip("nevergrad")
    out = tmp_path / "sweep"
    done = _cli("tune", *TINY, "--no-default-space", "--search", "ng:OnePlusOne", "--param",
                "alpha=0.3:1.0", "--num-samples", 2, "--scheduler", "fifo", "--no-final",
                "--out", out)
    assert done.returncode == 0, done.stderr
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and all(r["status"] == "done" for r in table)
    assert all(0.3 <= float(r["alpha"]) <= 1.0 for r in table)
    top = max(table, key=lambda r: float(r["score"]))
    best = json.loads((out / "best.json").read_text())
    assert best["alpha"] == pytest.approx(float(top["alpha"]))


@pytest.mark.ray
@pytest.mark.slow
def test_a_failing_trial_is_reported_not_fatal(tmp_path):
    pytest.importorskip("ray.tune")
    out = tmp_path / "sweep"
    # depth 5 pools 8-pixel digits below one pixel: that trial fails when it starts
    done = _cli("tune", *TINY, "--no-default-space", "--search", "grid", "--param",
                "depth=2,5", "--scheduler", "fifo", "--no-final", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stderr
    with open(out / "results.csv") as f:
        table = {r["depth"]: r for r in csv.DictReader(f)}
    assert table["5"]["status"] == "failed" and "invalid depth" in table["5"]["error"]
    assert table["2"]["status"] == "done"
    assert json.loads((out / "best.json").read_text())["depth"] == 2


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("retries", [2, 0])
def test_a_killed_trial_starts_again_from_its_checkpoint_and_the_sweep_completes(tmp_path,
                                                                                  retries):
    """The black box of the first trial kills the trial's process (its parent) once, after the
    trial's first report: with --trial-retries the trial goes on from that report and the table
    says it took two starts; without, it is a failed trial."""
    pytest.importorskip("ray.tune")
    out, kill = tmp_path / "sweep", tmp_path / "kill"
    kill.touch()
    env = {**os.environ, "ZODD_CALLS": str(tmp_path / "calls"), "ZODD_KILL": str(kill),
           "ZODD_KILL_ONCE": "1", "ZODD_FAIL_FROM": "5"}  # one call per step: in step 5 of 6
    done = _cli("tune", *TINY, "--cpus", 1, "--set", "objective=command", "--set",
                f"command={sys.executable} {FAULTS} kill {{input}}", "--set", "init=real",
                "--set", "directions=4", "--no-default-space", "--search", "grid", "--param",
                "alpha=0.5,0.9", "--scheduler", "fifo", "--no-final", "--trial-retries",
                retries, "--out", out, env=env)
    assert done.returncode == 0, done.stderr
    assert not kill.exists()  # the kill happened
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    if retries:
        assert sorted((r["status"], r["attempts"]) for r in table) == [("done", "1"),
                                                                       ("done", "2")]
    else:
        assert sorted(r["status"] for r in table) == ["done", "failed"]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_sweep_resumes_without_repeating_finished_trials(tmp_path, sig):
    """Interrupted (SIGINT: it says how to resume) or killed (SIGKILL: it says nothing)."""
    pytest.importorskip("ray.tune")
    out = tmp_path / "sweep"
    args = [*TINY, "--cpus", 1, "--no-default-space", "--param", "alpha=0.3:1.0",
            "--scheduler", "fifo", "--num-samples", 3, "--no-final", "--out", out]
    proc = subprocess.Popen([*CLI, "tune", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    finished, seen, deadline = [], [], time.time() + 600
    # one CPU runs one trial at a time: once a second trial reports, the first has ended
    while time.time() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if not line:
            break
        if "iteration 6," in line and not finished:
            finished.append(line.split()[1])
        elif finished and line.startswith("trial ") and finished[0] not in line:
            proc.send_signal(sig)
            break
    assert finished, "".join(seen)
    _, rest = proc.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "zodd tune --resume" in rest, rest
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / "best.json").exists()
    done = _cli("tune", "--resume", out)
    assert done.returncode == 0, done.stderr
    assert finished[0] not in done.stderr  # the finished trial was not run again
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and all(r["status"] == "done" for r in table)
    progress = Path(next((out / "sweep").glob(f"*{finished[0]}*"))) / "progress.csv"
    assert len(progress.read_text().splitlines()) == 1 + 2  # header + its 2 reports, once


def test_the_api_takes_one_options_object_and_keywords_over_it(tmp_path):
    """zodd.tune(options=SweepOptions(...)) is checked as the command's options are, before Ray
    starts; a keyword given beside the object wins, and the defaults live in SweepOptions."""
    import zodd
    from tuning.sweep import Sweep, SweepOptions
    from zodd.plan import settings

    grid = zodd.SweepOptions(search="grid", params=("alpha=0.2,0.8",), default_space=False,
                             num_samples=3)
    with pytest.raises(ZoddError, match="grid search runs every combination once"):
        zodd.tune(options=grid, out=tmp_path / "a")
    with pytest.raises(ZoddError, match="invalid validation"):
        zodd.tune(options=SweepOptions(validation=1.5), out=tmp_path / "b")
    with pytest.raises(ZoddError, match="unknown setting"):
        zodd.tune(options=grid, num_sample=2, out=tmp_path / "c")
    sweep = SweepOptions(params=("alpha=0.2,0.8",), default_space=False,
                         search="grid").sweep(settings(dataset="digits"))
    assert sweep.validation == SweepOptions.validation == Sweep.validation
    assert [p.values for p in sweep.params] == [(0.2, 0.8)] and not any(tmp_path.iterdir())
