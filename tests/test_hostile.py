"""Hostile input: every bad value gets exit status 2, one clear line on stderr, no traceback,
and nothing written."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_run import run_cli


def zodd(monkeypatch, capsys, *args):
    """``zodd ARGS...`` -> (exit status, stderr)."""
    code, _, err = run_cli(monkeypatch, capsys, *args)
    return code, err


def assert_refused(code, err, word=""):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("zodd: error:"), err
    assert "Traceback" not in err
    assert word.lower() in lines[0].lower(), (word, lines[0])


DISTILL_FLAGS = [
    # unknown names and empty values
    (["--dataset", "imagenet"], "dataset"), (["--dataset", ""], "dataset"),
    (["--objective", "nope"], "objective"), (["--objective", ""], "objective"),
    (["--estimator", "nope"], "estimator"), (["--updater", "best"], "updater"),
    (["--cvar-tail", "middle"], "cvar-tail"), (["--cvar-terms", "ce"], "cvar-terms"),
    (["--init", "zeros"], "init"),
    (["--objective", "prototype", "--surrogate", "prototype"], "surrogate"),
    (["--surrogate", "dm"], "surrogate"),  # dm alone resolves to autograd: nothing to guide
    (["--objective", "prototype", "--surrogate", "dm", "--estimator", "sphere"], "surrogate"),
    (["--objective", "prototype", "--surrogate", "dm", "--lowres", "2"], "surrogate"),
    (["--cluster-space", "latent"], "cluster-space"), (["--optimizer", "lbfgs"], "optimizer"),
    # wrong types
    (["--ipc", "ten"], "ipc"), (["--ipc", "1.5"], "ipc"), (["--alpha", "high"], "alpha"),
    (["--iterations", ""], "iterations"), (["--seed", "x"], "seed"),
    # out of range
    (["--ipc", "0"], "ipc"), (["--ipc", "-3"], "ipc"), (["--ipc", "1000"], "ipc"),
    (["--ipc", str(10**30)], "ipc"), (["--alpha", "0"], "alpha"), (["--alpha", "-0.1"], "alpha"),
    (["--alpha", "1.0001"], "alpha"), (["--clusters", "0"], "clusters"),
    (["--batch-size", "-3"], "batch-size"), (["--directions", "0"], "directions"),
    (["--iterations", "0"], "iterations"), (["--max-queries", "0"], "max-queries"),
    (["--checkpoint-every", "0"], "checkpoint-every"), (["--seed", "-1"], "seed"),
    (["--width", "0"], "width"), (["--width", str(10**9)], "width"), (["--depth", "5"], "depth"),
    (["--model-steps", "0"], "model-steps"), (["--reinit-every", "0"], "reinit-every"),
    (["--estimator", "gaussian", "--directions", "900000"], "directions"),
    (["--workers", "2"], "workers"),  # dm resolves to autograd: nothing to parallelise
    (["--workers", "-1"], "workers"),
    (["--lowres", "0"], "lowres"), (["--estimator", "gaussian", "--lowres", "3"], "lowres"),
    (["--optimizer", "bogus"], "optimizer"), (["--optimizer", "ng:NoSuchOptimiser"], "optimizer"),
    (["--optimizer", "ng:OnePlusOne"], "optimizer"),  # dm resolves to autograd
    (["--estimator", "coordinate", "--directions", "1000", "--ipc", "1"], "directions"),
    # NaN and infinities
    (["--alpha", "nan"], "alpha"), (["--lr", "inf"], "lr"), (["--sigma", "-inf"], "sigma"),
    (["--max-seconds", "nan"], "max-seconds"), (["--model-lr", "NaN"], "model-lr"),
    (["--sigma", "0"], "sigma"), (["--lr", "-1"], "lr"), (["--max-seconds", "0"], "max-seconds"),
    # contradictions and files
    (["--no-robust", "--updater", "robust"], "no-robust"),
    (["--config", "/nonexistent.json"], "config"),
    (["--resume", "/nonexistent-run"], "checkpoint"),
]


@pytest.mark.parametrize("flags, word", DISTILL_FLAGS, ids=[" ".join(f) for f, _ in DISTILL_FLAGS])
def test_bad_distill_flags(monkeypatch, capsys, tmp_path, flags, word):
    out = tmp_path / "out"
    extra = [] if "--resume" in flags else ["--out", out]
    assert_refused(*zodd(monkeypatch, capsys, "distill", *flags, *extra), word)
    assert not out.exists()


BAD_CONFIGS = [
    ("{not json", "JSON"), ("[1, 2]", "object"), ('{"alpha": "high"}', "alpha"),
    ('{"ipc": null}', "ipc"), ('{"colour": 1}', "colour"), ('{"alpha": 2}', "alpha"),
    ("", "JSON"),
]


@pytest.mark.parametrize("text, word", BAD_CONFIGS)
def test_bad_config_files(monkeypatch, capsys, tmp_path, text, word):
    (tmp_path / "c.json").write_text(text)
    out = tmp_path / "out"
    assert_refused(*zodd(monkeypatch, capsys, "distill", "--config", tmp_path / "c.json",
                         "--out", out), word)
    assert not out.exists()


def test_bad_output_directories(monkeypatch, capsys, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep")
    assert_refused(*zodd(monkeypatch, capsys, "distill", "--out", full), "not empty")
    assert [p.name for p in full.iterdir()] == ["mine.txt"]
    (tmp_path / "file").write_text("x")
    assert_refused(*zodd(monkeypatch, capsys, "distill", "--out", tmp_path / "file"),
                   "not a directory")
    assert_refused(*zodd(monkeypatch, capsys, "distill", "--out", "/proc/zodd-run"),
                   "not writable")
    assert_refused(*zodd(monkeypatch, capsys, "distill", "--out", " "), "empty")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "r"
    from zodd.config import DistillConfig
    from zodd.data import load
    from zodd.driver import distill

    distill(DistillConfig(ipc=1, iterations=1, batch_size=8), load("digits"), run)
    return run


def _copy_run(src, dst):
    dst.mkdir()
    for name in ("config.json", "synthetic.pt"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


BAD_SETS = {
    "missing": (None, "no synthetic.pt"),
    "garbage": (b"\x80\x02garbage", "not a readable"),
    "empty": (b"", "not a readable"),
    "truncated": ("truncate", "not a readable"),
    "wrong keys": ({"weights": torch.zeros(1)}, "not a zodd set"),
    "wrong rank": ({"images": torch.zeros(10, 8, 8), "labels": torch.arange(10)}, "shape"),
    "wrong size": ({"images": torch.zeros(10, 1, 5, 5), "labels": torch.arange(10)}, "fit"),
    "wrong channels": ({"images": torch.zeros(10, 3, 8, 8), "labels": torch.arange(10)}, "fit"),
    "nan pixels": ({"images": torch.full((10, 1, 8, 8), math.nan), "labels": torch.arange(10)},
                   "finite"),
    "labels mixed": ({"images": torch.zeros(10, 1, 8, 8), "labels": torch.arange(10).flip(0)},
                     "class-major"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETS))
def test_bad_synthetic_sets(monkeypatch, capsys, tmp_path, finished_run, case):
    run = _copy_run(finished_run, tmp_path / "run")
    payload, word = BAD_SETS[case]
    path = run / "synthetic.pt"
    if payload is None:
        path.unlink()
    elif payload == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", run, "--epochs", 1, "--seeds", 1), word)
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("text, word", [("{broken", "JSON"), ('{"ipc": -1}', "ipc"),
                                        ('{"dataset": "imagenet"}', "dataset")])
def test_bad_run_config_in_evaluate(monkeypatch, capsys, tmp_path, finished_run, text, word):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "config.json").write_text(text)
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", run), word)
    assert not (run / "metrics.json").exists()


def test_bad_evaluate_flags(monkeypatch, capsys, tmp_path, finished_run):
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", tmp_path / "nope"), "does not exist")
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", finished_run, "--protocol", "mtt"),
                   "protocol")
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", finished_run, "--dataset", "digits"),
                   "names its own data set")
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", finished_run, "--pixels", "unit"),
                   "standardised")
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", finished_run, "--models", ","),
                   "models")
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", finished_run, "--seeds", 0), "seeds")
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", finished_run, "--epochs", "x"), "epochs")
    assert_refused(*zodd(monkeypatch, capsys, "evaluate", finished_run, "--baseline", "best"),
                   "baseline")


FLOAT_FLAGS = {"--alpha": lambda v: 0 < v <= 1, "--sigma": lambda v: v > 0,
               "--lr": lambda v: v > 0, "--model-lr": lambda v: v > 0,
               "--max-seconds": lambda v: v > 0}
INT_FLAGS = {"--ipc": 1, "--clusters": 1, "--batch-size": 1, "--directions": 1,
             "--iterations": 1, "--model-steps": 1, "--reinit-every": 1, "--seed": 0,
             "--worker-retries": 0}
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(flag=st.sampled_from(sorted(FLOAT_FLAGS)),
       value=st.floats(allow_nan=True, allow_infinity=True))
def test_numeric_float_flags_outside_their_range(monkeypatch, capsys, tmp_path, flag, value):
    if math.isfinite(value) and FLOAT_FLAGS[flag](value):
        return  # a valid value: nothing to refuse
    out = tmp_path / f"out{abs(hash((flag, value)))}"
    assert_refused(*zodd(monkeypatch, capsys, "distill", flag, repr(value), "--out", out),
                   flag.lstrip("-"))
    assert not out.exists()


@SETTINGS
@given(flag=st.sampled_from(sorted(INT_FLAGS)), value=st.integers(max_value=0))
def test_numeric_int_flags_below_their_minimum(monkeypatch, capsys, tmp_path, flag, value):
    value = value - 1 if INT_FLAGS[flag] == 0 else value  # seed 0 is valid
    out = tmp_path / f"out{abs(hash((flag, value)))}"
    assert_refused(*zodd(monkeypatch, capsys, "distill", flag, value, "--out", out),
                   flag.lstrip("-"))
    assert not out.exists()
