"""The Python API (zodd.api): the command line's settings, checks and files, without the
command line."""
import subprocess
import sys

import pytest
import torch

import zodd
from zodd.types import Progress, ZoddError


class Heard(Progress):
    def __init__(self):
        self.notes, self.updates = [], []

    def note(self, text):
        self.notes.append(text)

    def update(self, task, done, total, detail=None):
        self.updates.append((task, done, total))


def test_a_setting_the_command_line_lacks_is_refused_in_one_line():
    with pytest.raises(ZoddError, match="unknown setting: 'batchsize'"):
        zodd.distill(batchsize=8)
    with pytest.raises(ZoddError, match="invalid ipc"):
        zodd.distill(ipc=0)


def test_distill_writes_what_the_command_writes_and_load_reads_it_back(tmp_path):
    run = zodd.distill(ipc=1, iterations=3, batch_size=16, out=tmp_path / "api")
    subprocess.run([sys.executable, "-m", "zodd.cli", "distill", "--ipc", "1", "--iterations",
                    "3", "--batch-size", "16", "--out", str(tmp_path / "cli"), "--quiet"],
                   check=True)
    made = torch.load(tmp_path / "cli" / "synthetic.pt", weights_only=True)
    assert torch.equal(run.images.cpu(), made["images"])  # one seed, one set, either way
    loaded = zodd.load(tmp_path / "api")
    assert torch.equal(loaded.images, run.images.cpu()) and loaded.log == run.log
    assert loaded.config.ipc == 1 and loaded.plan["estimator"] == "autograd"
    assert run.stopped_by == "iterations" and len(run.log) == 3


def test_progress_hears_every_step_and_should_stop_ends_the_run():
    heard = Heard()  # asked to stop once step 2 is reported: the step under way then finishes
    run = zodd.distill(ipc=1, iterations=10, batch_size=16, progress=heard,
                       should_stop=lambda: len(heard.updates) >= 2)
    assert run.stopped_by == "interrupted" and len(run.log) == 3
    assert heard.updates == [("distilling", k, 10) for k in (1, 2, 3)]


def test_evaluate_takes_an_in_memory_set_and_needs_its_data_set():
    run = zodd.distill(ipc=1, iterations=2, batch_size=16)
    with pytest.raises(ZoddError, match="does not name its data set"):
        zodd.evaluate(run.synthetic)
    heard = Heard()
    report = zodd.evaluate(run.synthetic, "digits", seeds=1, epochs=2, vs_random=False,
                           progress=heard)
    assert report.path is None and 0 <= report["acc"]["mean"] <= 100
    assert ("evaluating", 1, 1) in heard.updates and report.table().startswith("set")
    from_run = zodd.evaluate(run, seeds=1, epochs=2, vs_random=False)  # the run names digits
    assert from_run["acc"]["mean"] == report["acc"]["mean"]  # same set, same seeds
    # one settings object, reused across sets, is the same evaluation as the keywords; a
    # keyword given beside it wins, and an unknown one is refused in one line
    settings = zodd.Evaluation(seeds=1, epochs=2, vs_random=False, lr=0.5)
    as_object = zodd.evaluate(run, settings=settings, lr=0.01)
    assert as_object["acc"]["mean"] == report["acc"]["mean"]
    with pytest.raises(ZoddError, match="unexpected keyword argument 'epoch'"):
        zodd.evaluate(run, settings=settings, epoch=3)
