"""--representation latent: the learned prior (trained once, cached, resumable, rebuilt when
corrupt), its differentiable decoder, and runs on codes that resume bit for bit."""
import json

import pytest
import torch

from cli_run import run_cli
from zodd import prior as priors
from zodd.representation import Latent


@pytest.fixture(autouse=True)
def _small_prior(tmp_path, monkeypatch):
    monkeypatch.setenv("ZODD_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(priors, "STEPS", 40)
    monkeypatch.setattr(priors, "SAVE_EVERY", 10)


def _weights(net):
    return [p.detach().clone() for p in net.parameters()]


def test_the_prior_is_trained_once_and_then_read_from_the_cache(digits, tmp_path):
    calls = []
    net = priors.load_or_train(digits, 8, root=tmp_path, progress=lambda s, t, l: calls.append(s))
    assert calls[-1] == 40 and priors.cache_path(digits, 8, root=tmp_path).is_file()
    calls.clear()
    again = priors.load_or_train(digits, 8, root=tmp_path, progress=lambda s, t, l: calls.append(s))
    assert not calls  # read, not trained
    assert all(torch.equal(a, b) for a, b in zip(_weights(net), _weights(again)))
    # it learned something: better than predicting the mean image
    assert priors.reconstruction_error(net, digits) < 0.9


def test_a_corrupt_cache_is_rebuilt_with_a_warning(digits, tmp_path):
    first = priors.load_or_train(digits, 8, root=tmp_path)
    path = priors.cache_path(digits, 8, root=tmp_path)
    path.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="unreadable"):
        rebuilt = priors.load_or_train(digits, 8, root=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(rebuilt)))
    assert torch.load(path, weights_only=True)["weights"]  # a good file again


def test_an_interrupted_training_resumes_to_the_same_weights(digits, tmp_path):
    whole = priors.load_or_train(digits, 8, root=tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_at_25(step, total, loss):
        if step == 25:
            raise Stop

    with pytest.raises(Stop):
        priors.load_or_train(digits, 8, root=tmp_path / "b", progress=stop_at_25)
    part = priors.cache_path(digits, 8, root=tmp_path / "b").with_suffix(".part")
    assert torch.load(part, weights_only=True)["step"] == 20
    resumed = priors.load_or_train(digits, 8, root=tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(_weights(whole), _weights(resumed)))
    assert not part.exists()


def test_the_decoder_is_differentiable_in_the_codes(digits, tmp_path):
    rep = Latent(priors.load_or_train(digits, 8, root=tmp_path))
    codes = rep.encode(digits.train_x[:6])
    assert codes.shape == (6, 8, 1, 1) == (6, *rep.stored_shape((1, 8, 8)))
    codes.requires_grad_(True)
    images = rep.decode(codes[None].expand(3, -1, -1, -1, -1))  # candidates [K, N, ...]
    assert images.shape == (3, 6, 1, 8, 8)
    (g,) = torch.autograd.grad(images.square().sum(), codes)
    assert g.abs().sum() > 0
    # finite differences agree with autograd
    d = torch.randn_like(codes)
    f = lambda c: rep.decode(c).square().sum()  # noqa: E731
    eps = 1e-3
    numeric = (f(codes.detach() + eps * d) - f(codes.detach() - eps * d)) / (2 * eps)
    assert float(numeric) == pytest.approx(float((g * d).sum()) / 3, rel=2e-2)  # 3 copies


SHORT = ["--representation", "latent", "--latent", "8", "--ipc", "2", "--batch-size", "16",
         "--checkpoint-every", "2", "--quiet"]


@pytest.mark.parametrize("estimator", ["autograd", "es"])
def test_a_latent_run_resumes_bitwise(tmp_path, monkeypatch, capsys, estimator):
    flags = [*SHORT, "--estimator", estimator, "--updater", "ce"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_cli(monkeypatch, capsys, "distill", *flags, "--iterations", "6",
                   "--out", str(whole))[0] == 0
    assert run_cli(monkeypatch, capsys, "distill", *flags, "--iterations", "3",
                   "--out", str(part))[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--resume", str(part),
                           "--iterations", "6", "--quiet")
    assert code == 0, err
    load = lambda run, f: torch.load(run / f, weights_only=True)  # noqa: E731
    assert torch.equal(load(whole, "synthetic.pt")["images"], load(part, "synthetic.pt")["images"])
    stored = load(whole, "representation.pt")
    assert stored["images"].shape == (20, 8, 1, 1)
    assert stored["representation"] == {"name": "latent", "latent": 8}
    assert load(whole, "synthetic.pt")["images"].shape == (20, 1, 8, 8)
    resolved = json.loads((whole / "config.json").read_text())["resolved"]
    assert resolved["lowres"] == 1


def test_latent_refuses_lowres_and_sizes_it_cannot_take(tmp_path, monkeypatch, capsys):
    from test_hostile import assert_refused

    code, _, err = run_cli(monkeypatch, capsys, "distill", *SHORT, "--estimator", "gaussian",
                           "--lowres", "2", "--out", str(tmp_path / "r"))
    assert_refused(code, err, "lowres")
    code, _, err = run_cli(monkeypatch, capsys, "distill", *SHORT, "--image-size", "10",
                           "--out", str(tmp_path / "s"))
    assert_refused(code, err, "divisible by 4")


@pytest.mark.ray
def test_ray_workers_score_latent_codes_as_the_process_does(digits):
    """The decoding travels with the black box to the workers: the same losses and set."""
    from zodd.config import DistillConfig
    from zodd.driver import distill

    runs = {}
    for workers in (0, 2):
        cfg = DistillConfig(objective="prototype", representation="latent", latent=8, ipc=1,
                            iterations=3, directions=4, warm_iterations=2, workers=workers)
        runs[workers] = distill(cfg, digits)
    assert [r["loss"] for r in runs[0].rows] == [r["loss"] for r in runs[2].rows]
    assert torch.equal(runs[0].synthetic.images, runs[2].synthetic.images)
