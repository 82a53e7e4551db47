"""Checkpoints and exact resume: a killed run, resumed, ends bit for bit where an uninterrupted
run ends."""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from cli_run import run_cli

CLI = [sys.executable, "-m", "zodd.cli", "distill"]
SMALL = ["--ipc", "2", "--batch-size", "16", "--checkpoint-every", "1", "--quiet"]


def _run(args, **kw):
    return subprocess.run([*CLI, *SMALL, *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


def _images(run):
    return torch.load(run / "synthetic.pt", weights_only=True)["images"].numpy().tobytes()


def _rows(run):
    path = run / "log.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _start_and_stop_at(run, args, rows, sig):
    proc = subprocess.Popen([*CLI, *SMALL, *map(str, args), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _rows(run) < rows and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(sig)
    _, proc.stderr_text = proc.communicate(timeout=120)
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per estimator."""
    out = {}
    for est in ("autograd", "gaussian"):
        run = tmp_path_factory.mktemp("ref") / est
        done = _run(["--estimator", est, "--iterations", 30, "--out", run])
        assert done.returncode == 0, done.stderr
        out[est] = run
    return out


KILL_SEED = 20261126  # the kill step is a seeded draw, so a failure reproduces


@pytest.mark.parametrize("estimator", ["autograd", "gaussian"])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference, estimator):
    run = tmp_path / "run"
    at = random.Random(f"{KILL_SEED}-{estimator}").randint(3, 20)
    proc = _start_and_stop_at(run, ["--estimator", estimator, "--iterations", 30], at,
                              signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    done = _run(["--resume", run])
    assert done.returncode == 0, done.stderr
    assert _images(run) == _images(reference[estimator]), f"killed after {at} rows"
    assert _rows(run) == 30  # the log holds each step once


def test_sigterm_saves_a_checkpoint_and_resume_completes(tmp_path, reference):
    run = tmp_path / "run"
    proc = _start_and_stop_at(run, ["--estimator", "autograd", "--iterations", 30], 5,
                              signal.SIGTERM)
    assert proc.returncode == 130
    assert "--resume" in proc.stderr_text and "Traceback" not in proc.stderr_text
    assert (run / "checkpoint.pt").exists() and (run / "synthetic.pt").exists()
    assert _run(["--resume", run]).returncode == 0
    assert _images(run) == _images(reference["autograd"])


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    run = tmp_path / "run"
    assert _run(["--estimator", "autograd", "--iterations", 6, "--out", run]).returncode == 0
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    done = _run(["--resume", run, "--iterations", 30])
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and "checkpoint.prev.pt" in done.stderr
    assert _images(run) == _images(reference["autograd"])


def test_a_full_disk_at_a_checkpoint_keeps_the_one_before_and_ends_with_one_line(
        tmp_path, monkeypatch, capsys, reference):
    """The fourth checkpoint's write fails half-way with ENOSPC: the third stays checkpoint.pt
    (the second checkpoint.prev.pt), no partial file is left, the run stops with one line and
    its set, and a resume ends where the run without the fault ends."""
    from zodd import rundir

    real, checkpoints = rundir.atomic_write, []

    def full_disk(path, write):
        if "checkpoint" in path.name:
            checkpoints.append(path)
            if len(checkpoints) == 4:
                def half(f):
                    f.write(b"zodd" * 1024)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real(path, half)
        return real(path, write)

    monkeypatch.setattr(rundir, "atomic_write", full_disk)
    run = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "distill", *SMALL, "--estimator", "autograd",
                           "--iterations", 30, "--out", run)
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    read = lambda name: torch.load(run / name, weights_only=True)["step"]  # noqa: E731
    assert read("checkpoint.pt") == 3 and read("checkpoint.prev.pt") == 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".lock"]
    assert (run / "synthetic.pt").exists()
    monkeypatch.undo()
    done = _run(["--resume", run, "--iterations", 30])
    assert done.returncode == 0, done.stderr
    assert _images(run) == _images(reference["autograd"])


def test_a_second_run_in_the_same_directory_is_refused_while_the_first_writes(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([*CLI, *SMALL, "--iterations", "100000", "--out", str(run)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while _rows(run) < 2 and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        config = (run / "config.json").read_text()
        for args in (["--out", run, "--overwrite", "--ipc", 1], ["--resume", run]):
            second = _run(args)
            assert second.returncode == 2 and "in use by another zodd run" in second.stderr
            assert str(first.pid) in second.stderr
        assert (run / "config.json").read_text() == config
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one writer's rows, none interleaved
    assert _run(["--resume", run, "--iterations", len(steps) + 1]).returncode == 0  # now free


def test_resume_refuses_a_different_config(tmp_path):
    run = tmp_path / "run"
    assert _run(["--iterations", 2, "--out", run]).returncode == 0
    done = _run(["--resume", run, "--alpha", "0.5"])
    assert done.returncode == 2 and "alpha" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_resume_refuses_another_output_directory_or_config(tmp_path):
    run = tmp_path / "run"
    assert _run(["--iterations", 2, "--out", run]).returncode == 0
    for extra in (["--out", tmp_path / "elsewhere"], ["--config", run / "config.json"]):
        done = _run(["--resume", run, *extra])
        assert done.returncode == 2 and "drop --config and --out" in done.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_resume_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert _run(["--iterations", 2, "--out", run]).returncode == 0
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        torch.save({"images": torch.zeros(1)}, run / name)
    done = _run(["--resume", run])
    assert done.returncode == 2 and "not a zodd checkpoint" in done.stderr
    os.remove(run / "checkpoint.pt")
    os.remove(run / "checkpoint.prev.pt")
    done = _run(["--resume", run])
    assert done.returncode == 2 and "no checkpoint" in done.stderr


def test_a_finished_run_extended_with_resume_matches_one_long_run(tmp_path, reference):
    """A run ends with a checkpoint, so --resume with more iterations continues it exactly."""
    run = tmp_path / "run"
    done = _run(["--estimator", "autograd", "--iterations", 12, "--out", run,
                 "--checkpoint-every", 5])
    assert done.returncode == 0, done.stderr
    done = _run(["--resume", run, "--iterations", 30])
    assert done.returncode == 0, done.stderr
    assert _images(run) == _images(reference["autograd"])
    assert _rows(run) == 30
