"""Where a run computes (--device): names are checked, the device is recorded, and a CUDA run
draws what a CPU run draws. The CUDA tests run where torch sees a GPU and skip elsewhere."""
import json
from dataclasses import replace

import pytest
import torch

from cli_run import run_cli as zodd
from zodd.config import DistillConfig
from zodd.driver import distill
from zodd.loop import Loop
from zodd.plan import check, resolve
from zodd.evaluation import EvalConfig, evaluate
from zodd.types import ZoddError, resolve_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
FAST = DistillConfig(ipc=2, iterations=3, batch_size=16, seed=3)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "", "cuda:"])
def test_a_bad_device_name_is_refused(name):
    with pytest.raises(ZoddError, match="invalid device"):
        check(replace(FAST, device=name))


def test_auto_is_the_gpu_when_there_is_one():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_missing_gpu_is_one_line_and_no_output(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = zodd(monkeypatch, capsys, "distill", "--device", "cuda", "--iterations", 1,
                        "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "not available here" in err
    assert not (tmp_path / "run" / "synthetic.pt").exists()


def test_ray_workers_need_the_cpu():
    with pytest.raises(ZoddError, match="workers"):
        check(replace(FAST, device="cuda", workers=2, estimator="gaussian"))


def test_the_device_is_recorded(monkeypatch, capsys, tmp_path, digits):
    run = tmp_path / "run"
    distill(replace(FAST, device="cpu"), digits, run)
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cpu" and config["resolved"]["device"] == "cpu"
    assert DistillConfig.from_dict(config).device == "cpu"  # the record reads back
    report = evaluate(distill(FAST, digits).synthetic, digits,
                      EvalConfig(seeds=1, epochs=1, device="cpu"))
    assert report["protocol"]["device"] == "cpu"


# --- on a GPU -------------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("settings", [
    dict(objective="dm"), dict(objective="gm"), dict(objective="dm", updater="native"),
    dict(objective="gm", updater="native"), dict(objective="dm", updater="ce"),
    dict(objective="dm", ipc=12, clusters=4, cluster_space="feature"),
    dict(objective="dm", estimator="gaussian", directions=8),
    dict(objective="gm", estimator="antithetic", directions=4, lowres=2),
    dict(objective="dm", estimator="sphere", directions=4, blockwise=False),
    dict(objective="dm", estimator="coordinate", directions=4, lowres=2),
    dict(objective="prototype", estimator="gaussian", directions=4, surrogate="dm"),
    dict(objective="trained", estimator="gaussian", directions=2),
])
def test_a_cuda_run_draws_what_a_cpu_run_draws(digits, settings):
    """Same seed, same draws: the first set is identical and a few steps later the two sets
    differ only by rounding."""
    cfg = replace(FAST, **settings)
    on_cpu = Loop(resolve(replace(cfg, device="cpu"), digits), digits)
    on_gpu = Loop(resolve(replace(cfg, device="cuda"), digits), digits)
    assert on_gpu.x.device.type == "cuda"
    assert torch.equal(on_cpu.x.detach(), on_gpu.x.detach().cpu())
    for _ in range(cfg.iterations):
        row_cpu, row_gpu = on_cpu.advance(), on_gpu.advance()
        assert row_cpu["queries"] == row_gpu["queries"]
    assert torch.equal(on_cpu.gen.get_state(), on_gpu.gen.get_state())  # same draws, in order
    gap = (on_cpu.x.detach() - on_gpu.x.detach().cpu()).abs().max()
    moved = (on_cpu.x.detach() - Loop(resolve(replace(cfg, device="cpu"), digits), digits).x.detach()).abs().max()
    assert gap < 0.05 * moved + 1e-4


@cuda
def test_a_cuda_checkpoint_resumes_on_the_cpu(digits, tmp_path):
    run = tmp_path / "run"
    cfg = replace(FAST, iterations=2, device="cuda")
    distill(cfg, digits, run)
    resumed = distill(replace(cfg, iterations=4, device="cpu"), digits, run, resume=True)
    assert resumed.rows[-1]["step"] == 4 and resumed.synthetic.images.device.type == "cpu"


@cuda
def test_cuda_evaluation_matches_the_cpu(digits):
    syn = distill(replace(FAST, device="cuda"), digits).synthetic
    base = EvalConfig(seeds=1, epochs=30)
    on_cpu = evaluate(syn, digits, replace(base, device="cpu"))
    on_gpu = evaluate(syn, digits, replace(base, device="cuda"))
    assert on_gpu["protocol"]["device"].startswith("cuda")
    for metric in ("acc", "noise", "blur", "invert"):
        assert abs(on_cpu[metric]["mean"] - on_gpu[metric]["mean"]) < 3.0, metric


def test_out_of_device_memory_is_one_line(monkeypatch, capsys, tmp_path):
    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 980.00 MiB. GPU 0 "
                                     "has a total capacity of 79.18 GiB")

    monkeypatch.setattr("zodd.loop.Loop.advance", full)
    code, _, err = zodd(monkeypatch, capsys, "distill", "--iterations", 2, "--out",
                        tmp_path / "run", "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("zodd: error: CUDA out of memory: lower --batch-size")
