"""The command line as a user meets it: a real end-to-end run on digits, budgets, bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_run import run_cli as zodd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

FAST = ["--iterations", "4", "--batch-size", "16", "--quiet"]


def test_distill_then_evaluate_end_to_end(tmp_path):
    """Real subprocesses, as typed by a user."""
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "zodd.cli"]
    done = subprocess.run([*cli, "distill", "--iterations", "6", "--batch-size", "32",
                           "--out", str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {"synthetic.pt", "config.json", "grid.png", "log.jsonl"} <= {p.name for p in run.iterdir()}
    payload = torch.load(run / "synthetic.pt", weights_only=True)
    assert payload["images"].shape == (100, 1, 8, 8)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"queries", "loss", "seconds", "ce", "mean_cvar", "max_cvar"} <= set(rows[0])
    config = json.loads((run / "config.json").read_text())
    assert config["updater"] == "robust" and config["resolved"]["estimator"] == "autograd"
    assert "version" in config and "git_sha" in config

    done = subprocess.run([*cli, "evaluate", str(run), "--seeds", "2", "--epochs", "20"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("acc", "cluster_min", "noise", "blur", "invert"):
        assert 0 <= metrics[key]["mean"] <= 100 and metrics[key]["std"] >= 0
    assert metrics["acc"]["mean"] > 50  # ten digits from 100 images: far above chance
    assert "cluster_min" in done.stdout and "blur: Gaussian kernel" in done.stdout


def test_random_baseline_uses_the_runs_initialisation(monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    code, _, err = zodd(monkeypatch, capsys, "distill", "--iterations", "1", "--ipc", "2",
                        "--out", run, "--quiet")
    assert code == 0, err
    code, _, err = zodd(monkeypatch, capsys, "evaluate", run, "--baseline", "random",
                        "--seeds", "1", "--epochs", "2", "--quiet")
    assert code == 0, err
    assert json.loads((run / "metrics_random.json").read_text())["set"] == "random"
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("flag, value, stopped", [
    ("--max-queries", 3, "max_queries"), ("--max-seconds", 0.01, "max_seconds"),
    ("--iterations", 2, "iterations"),
])
def test_budgets_stop_cleanly_and_save(monkeypatch, capsys, tmp_path, flag, value, stopped):
    run = tmp_path / "run"
    code, out, err = zodd(monkeypatch, capsys, "distill", "--iterations", 50, "--batch-size", 16,
                          "--ipc", 1, flag, value, "--out", run)
    assert code == 0, err
    assert f"({stopped})" in out
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]
    if stopped == "max_seconds":  # the first step whose time reaches the budget is the last
        assert rows[-1]["seconds"] >= value and all(r["seconds"] < value for r in rows[:-1])
    else:
        assert len(rows) == {"max_queries": 3, "iterations": 2}[stopped]
    assert (run / "synthetic.pt").exists()


def test_gaussian_estimator_lowers_the_objective(digits):
    """Zero-order only: the distilled set scores lower than its initialisation on networks and
    real batches that the run never saw."""
    from harness import HeldOutDM
    from zodd.config import DistillConfig
    from zodd.driver import distill
    from zodd.synthetic import initialise

    cfg = DistillConfig(estimator="gaussian", ipc=2, batch_size=32, iterations=25, directions=32)
    result = distill(cfg, digits)  # the defaults otherwise: blockwise, SGD at lr 1
    assert result.estimator == "gaussian" and result.queries == 25 * 33
    start = initialise(digits, 2, "real", torch.Generator().manual_seed(0)).images
    measure = HeldOutDM(digits, nets=4, seed=99, net_seed=500)
    assert measure(result.synthetic.images) < 0.9 * measure(start)


def test_missing_or_corrupt_set_is_refused(monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    assert zodd(monkeypatch, capsys, "distill", *FAST, "--ipc", 1, "--out", run)[0] == 0
    (run / "synthetic.pt").write_bytes(b"\x80garbage")
    code, _, err = zodd(monkeypatch, capsys, "evaluate", run)
    assert code == 2 and "not a readable zodd set" in err and len(err.strip().splitlines()) == 1
    (run / "synthetic.pt").unlink()
    code, _, err = zodd(monkeypatch, capsys, "evaluate", run)
    assert code == 2 and "no synthetic.pt" in err
    assert not (run / "metrics.json").exists()


def test_non_empty_or_unwritable_out_is_refused(monkeypatch, capsys, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    code, _, err = zodd(monkeypatch, capsys, "distill", *FAST, "--out", full)
    assert code == 2 and "not empty" in err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not __import__("os").access(locked, __import__("os").W_OK):  # root can write anyway
        code, _, err = zodd(monkeypatch, capsys, "distill", *FAST, "--out", locked / "run")
        assert code == 2 and "not writable" in err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = zodd(monkeypatch, capsys, "distill", *FAST, "--out", a_file)
    assert code == 2 and "not a directory" in err


def test_config_file_round_trip_and_flags_override(monkeypatch, capsys, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert zodd(monkeypatch, capsys, "distill", *FAST, "--ipc", 1, "--alpha", 0.5,
                "--out", first)[0] == 0
    code, _, err = zodd(monkeypatch, capsys, "distill", "--config", first / "config.json",
                        "--iterations", 2, "--quiet", "--out", second)
    assert code == 0, err
    config = json.loads((second / "config.json").read_text())
    assert config["alpha"] == 0.5 and config["ipc"] == 1 and config["iterations"] == 2
    (tmp_path / "bad.json").write_text('{"alpha": "high"}')
    code, _, err = zodd(monkeypatch, capsys, "distill", "--config", tmp_path / "bad.json",
                        "--out", tmp_path / "c")
    assert code == 2 and "alpha" in err


def test_readme_quickstart_is_two_commands_and_ci_runs_the_second():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "zodd distill" in commands[0]
    assert commands[1] in (root / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("objective", ["dm", "gm"])
def test_native_updater_trains_no_network_on_real_data(digits, objective):
    from zodd.config import DistillConfig
    from zodd.driver import distill

    cfg = DistillConfig(objective=objective, updater="native", ipc=1, batch_size=8, iterations=3)
    result = distill(cfg, digits)
    assert len(result.rows) == 3
    assert not any(k in row for row in result.rows for k in ("ce", "mean_cvar"))
    assert result.rows[-1]["loss"] < float("inf")
