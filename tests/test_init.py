"""--init PATH: a run goes on from a distilled set (another objective's run, another tool's file),
its stored tensor reused when the representation matches, encoded otherwise; and a resumed run
does not need that set any more."""
import shutil

import pytest
import torch

from cli_run import run_cli
from test_hostile import assert_refused
from zodd import prior as priors
from zodd.config import DistillConfig
from zodd.driver import distill
from zodd.loop import Loop
from zodd.plan import resolve
from zodd.representation import Multi

SMALL = dict(ipc=2, batch_size=16, iterations=3, updater="native")


def _images(run, name="synthetic.pt"):
    return torch.load(run / name, weights_only=True)["images"]


@pytest.fixture
def dm_run(tmp_path, digits):
    out = tmp_path / "dm"
    distill(DistillConfig(**SMALL), digits, out)
    return out


def test_a_run_starts_from_another_runs_set_exactly(dm_run, digits, tmp_path):
    loop = Loop(resolve(DistillConfig(**SMALL, init=str(dm_run), objective="prototype"), digits),
                digits)
    assert torch.equal(loop.x.detach(), _images(dm_run))
    assert loop.syn.source is None  # every real image counts as held out for a score


def test_a_foreign_file_in_another_order_is_sorted_by_class(dm_run, digits, tmp_path):
    payload = torch.load(dm_run / "synthetic.pt", weights_only=True)
    order = torch.randperm(len(payload["labels"]))
    path = tmp_path / "dc.pt"  # the Dataset Condensation family's format, shuffled
    torch.save({"data": [[payload["images"][order], payload["labels"][order]]]}, path)
    loop = Loop(resolve(DistillConfig(**SMALL, init=str(path)), digits), digits)
    start = loop.x.detach()
    # each started image is one of the file's, of the class its position in S says
    match = (start.flatten(1)[:, None] == payload["images"].flatten(1)[None]).all(-1)
    assert (match.sum(1) == 1).all()
    assert torch.equal(payload["labels"][match.float().argmax(1)], loop.syn.labels)


def test_multi_reuses_a_multi_runs_stored_tensor_and_encodes_a_pixel_set(tmp_path, digits,
                                                                           dm_run):
    multi = tmp_path / "multi"
    kw = dict(SMALL, ipc=1, representation="multi")
    distill(DistillConfig(**kw), digits, multi)
    again = Loop(resolve(DistillConfig(**kw, init=str(multi)), digits), digits)
    assert torch.equal(again.x.detach(), _images(multi, "representation.pt"))
    # a pixel run of IPC 2 x 2^2 ... is needed for IPC 1 at factor 2: 4 images a class
    pixels = tmp_path / "pixels4"
    distill(DistillConfig(**dict(SMALL, ipc=4)), digits, pixels)
    encoded = Loop(resolve(DistillConfig(**kw, init=str(pixels)), digits), digits)
    assert torch.equal(encoded.x.detach(), Multi(2).encode(_images(pixels)))


def test_latent_codes_from_a_pixel_run(tmp_path, monkeypatch, digits, dm_run):
    monkeypatch.setenv("ZODD_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(priors, "STEPS", 20)
    cfg = DistillConfig(**SMALL, init=str(dm_run), representation="latent", latent=8)
    loop = Loop(resolve(cfg, digits), digits)
    assert loop.x.shape == (20, 8, 1, 1)
    assert torch.equal(loop.x.detach(), loop.rep.encode(_images(dm_run)))


def test_a_resumed_run_no_longer_needs_the_set_it_started_from(tmp_path, monkeypatch, capsys,
                                                               dm_run):
    flags = ["--ipc", "2", "--batch-size", "16", "--updater", "native", "--objective",
             "prototype", "--checkpoint-every", "1", "--quiet", "--init", str(dm_run)]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_cli(monkeypatch, capsys, "distill", *flags, "--iterations", "4",
                   "--out", whole)[0] == 0
    assert run_cli(monkeypatch, capsys, "distill", *flags, "--iterations", "2",
                   "--out", part)[0] == 0
    shutil.rmtree(dm_run)
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--resume", part, "--iterations",
                           "4", "--quiet")
    assert code == 0, err
    assert torch.equal(_images(whole), _images(part))


@pytest.fixture
def other_digits(tmp_path):
    """Another data set of 8 px, one-channel images in ten classes: the shapes fit, the data
    set does not."""
    import numpy as np

    x = np.random.default_rng(0).integers(0, 255, (200, 8, 8), dtype=np.uint8)
    y = np.arange(200) % 10
    path = tmp_path / "other.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    return path


@pytest.mark.parametrize("flags, word", [
    (["--init", "no/such/set"], "does not exist"),
    (["--init", "nonsense"], "invalid init"),
    (["--ipc", "3"], "needs 3 of each"),
    (["--dataset", "OTHER"], "distilled digits"),
])
def test_a_set_that_cannot_start_the_run_is_one_line(tmp_path, monkeypatch, capsys, dm_run,
                                                     other_digits, flags, word):
    flags = [str(other_digits) if f == "OTHER" else f for f in flags]
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--ipc", "2", "--iterations", "1",
                           "--quiet", "--init", str(dm_run), *flags, "--out", tmp_path / "r")
    assert_refused(code, err, word)


def test_soft_labels_cannot_start_a_run(tmp_path, monkeypatch, capsys):
    torch.save(torch.randn(20, 1, 8, 8), tmp_path / "images_best.pt")
    torch.save(torch.softmax(torch.randn(20, 10), 1), tmp_path / "labels_best.pt")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--ipc", "2", "--iterations", "1",
                           "--quiet", "--init", tmp_path, "--out", tmp_path / "r")
    assert_refused(code, err, "soft labels")


# --- --init dm: a warm start with exact gradients before the first query -----------------------
def test_auto_starts_matching_from_real_images_and_scores_from_dm(digits):
    assert resolve(DistillConfig(objective="dm"), digits).init == "real"
    for score in ("prototype", "trained"):
        assert resolve(DistillConfig(objective=score), digits).init == "dm"
    assert resolve(DistillConfig(objective="prototype", init="real"), digits).init == "real"


def test_the_warm_start_is_exactly_a_dm_run_of_that_many_steps(digits, tmp_path):
    dm = tmp_path / "dm"
    distill(DistillConfig(ipc=2, batch_size=16, iterations=4, objective="dm",
                          estimator="autograd", updater="native", seed=3), digits, dm)
    loop = Loop(resolve(DistillConfig(ipc=2, batch_size=16, objective="prototype", seed=3,
                                      warm_iterations=4), digits), digits)
    assert torch.equal(loop.x.detach(), _images(dm))
    assert loop.seconds > 0 and loop.queries == 0  # its time is the run's, it asked nothing
    start = Loop(resolve(DistillConfig(ipc=2, seed=3), digits), digits)  # the real start
    assert torch.equal(loop.syn.source, start.syn.source)  # kept out of the held-out images


def test_a_warm_start_scored_on_fold_zero_stops_there_and_hands_on_its_best_set(digits,
                                                                                 tmp_path):
    """DM steps scored on fold 0 every 2: the warm start ends after WARM_PATIENCE scorings
    found nothing better (or at its most) and hands on the best set scored: exactly a DM run
    of that many steps."""
    from zodd.plan import WARM_PATIENCE

    cfg = DistillConfig(ipc=2, batch_size=16, objective="prototype", seed=3, select_every=2,
                        warm_iterations=60)
    loop = Loop(resolve(cfg, digits), digits)
    warm = loop.warm
    assert warm.kept % 2 == 0 and 0 < warm.kept <= warm.steps <= 60
    assert warm.steps == 60 or warm.steps - warm.kept == 2 * WARM_PATIENCE
    assert warm.queries == warm.steps // 2 and loop.queries == warm.queries
    dm = tmp_path / "dm"
    distill(DistillConfig(ipc=2, batch_size=16, iterations=warm.kept, objective="dm",
                          estimator="autograd", updater="native", seed=3), digits, dm)
    assert torch.equal(loop.x.detach(), _images(dm))


def test_a_warm_started_run_resumes_bitwise(tmp_path, monkeypatch, capsys):
    flags = ["--ipc", "2", "--batch-size", "16", "--objective", "prototype", "--init", "dm",
             "--warm-iterations", "3", "--checkpoint-every", "1", "--quiet"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_cli(monkeypatch, capsys, "distill", *flags, "--iterations", "4",
                   "--out", whole)[0] == 0
    assert run_cli(monkeypatch, capsys, "distill", *flags, "--iterations", "2",
                   "--out", part)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "distill", "--resume", part, "--iterations",
                           "4", "--quiet")
    assert code == 0, err
    assert torch.equal(_images(whole), _images(part))
