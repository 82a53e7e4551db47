"""Faults of the cluster, not of the black box (marked ``ray``): a Ray worker killed while it
scores candidates, a worker that keeps dying, the local Ray node gone, a node of a multi-node
cluster removed. Each run either ends with the set the same seed makes without the fault, or stops
with one line of zodd's, its last completed step's set and checkpoint saved, and a resume that
makes that same set."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zodd.config import DistillConfig
from zodd.driver import distill

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # fault injections: CI's second command
FAULTS = Path(__file__).with_name("fault_evaluator.py")
CLI = [sys.executable, "-m", "zodd.cli", "distill"]
RUN = ["--ipc", "1", "--directions", "4", "--workers", "2", "--iterations", "6", "--quiet"]


def _distill(tmp_path, out, mode="ok", *flags, kill=None, once=True, resume=False):
    env = {**os.environ, "ZODD_CALLS": str(tmp_path / f"calls-{out.name}"),
           "ZODD_KILL": str(tmp_path / "kill"), "ZODD_FAIL_FROM": "5"}
    if once:
        env["ZODD_KILL_ONCE"] = "1"
    if kill:
        (tmp_path / "kill").touch()
    else:
        (tmp_path / "kill").unlink(missing_ok=True)
    cmd = f"{sys.executable} {FAULTS} {mode} {{input}}"
    args = ["--resume", str(out)] if resume else [
        "--objective", "command", "--command", cmd, *RUN, "--out", str(out), *map(str, flags)]
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=600)


def _images(run):
    return torch.load(run / "synthetic.pt", weights_only=True)["images"].numpy().tobytes()


def _rows(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _zodd_lines(stderr):
    """zodd's own lines (Ray prints its notices of dead workers and nodes beside them)."""
    return [line for line in stderr.splitlines() if line.startswith("zodd")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Six steps with two workers and no fault."""
    tmp = tmp_path_factory.mktemp("reference")
    done = _distill(tmp, tmp / "run")
    assert done.returncode == 0, done.stderr
    return tmp / "run"


def test_a_worker_killed_mid_step_is_restarted_and_the_set_is_unchanged(tmp_path, reference):
    run = tmp_path / "run"
    done = _distill(tmp_path, run, "kill", kill=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "kill").exists()  # the kill happened (the call that made it removed it)
    assert _images(run) == _images(reference)
    assert [r["loss"] for r in _rows(run)] == [r["loss"] for r in _rows(reference)]
    assert not any("failures" in r or "skipped" in r for r in _rows(run))  # not the box's fault


def test_without_worker_retries_the_same_kill_ends_the_run(tmp_path, reference):
    """The mechanism's off switch: --worker-retries 0 makes the kill above fatal."""
    done = _distill(tmp_path, tmp_path / "run", "kill", "--worker-retries", 0, kill=True)
    assert done.returncode == 2 and "--worker-retries" in _zodd_lines(done.stderr)[-1]


def test_a_worker_that_keeps_dying_stops_the_run_and_resume_makes_the_same_set(tmp_path,
                                                                               reference):
    run = tmp_path / "run"
    done = _distill(tmp_path, run, "kill", "--worker-retries", 1, kill=True, once=False)
    assert done.returncode == 2
    lines = _zodd_lines(done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--worker-retries" in lines[0] and f"--resume {run}" in lines[0]
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["step"] == len(_rows(run)) and 0 < saved["step"] < 6  # rows up to it, no more
    assert (run / "synthetic.pt").exists() and not list(run.glob(".*.pt.*"))  # nothing half-made
    done = _distill(tmp_path, run, resume=True)  # the worker no longer dies
    assert done.returncode == 0, done.stderr
    assert _images(run) == _images(reference)
    assert [r["loss"] for r in _rows(run)] == [r["loss"] for r in _rows(reference)]


def test_the_local_ray_node_killed_mid_step_stops_the_run_with_its_set_saved(tmp_path,
                                                                             reference):
    """Ray ends a process whose node's object store is gone at its next call to the store: the
    run must stop before, keep its set and checkpoint, and resume on a new local cluster."""
    run = tmp_path / "run"
    done = _distill(tmp_path, run, "kill-node", kill=True)
    assert done.returncode == 2, done.stderr
    lines = _zodd_lines(done.stderr)
    assert len(lines) == 1 and "Ray node" in lines[0] and "--resume" in lines[0], done.stderr
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 6 and (run / "synthetic.pt").exists()
    done = _distill(tmp_path, run, resume=True)
    assert done.returncode == 0, done.stderr
    assert _images(run) == _images(reference)


BETWEEN_STEPS = """
import os, signal, sys
from pathlib import Path
from zodd.config import DistillConfig
from zodd.data import load
from zodd.driver import distill

def kill(row, images):  # after step 2: the first process of this run's Ray named sys.argv[2]
    if row["step"] != 2:
        return
    parents, names = {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            names[int(proc.name)] = (proc / "cmdline").read_bytes().split(b"\\0")[0].decode()
        except (OSError, ValueError, IndexError):
            continue
    def ours(pid):
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False
    os.kill(next(p for p, n in names.items() if n.endswith(sys.argv[2]) and ours(p)),
            signal.SIGKILL)

cfg = DistillConfig(objective="prototype", ipc=1, iterations=5, directions=4, workers=2,
                    checkpoint_every=1)
distill(cfg, load("digits"), Path(sys.argv[1]), on_step=kill)
"""


@pytest.mark.parametrize("process", ["/raylet", "ray::DashboardAgent"])
def test_the_local_ray_node_lost_between_steps_stops_the_run_with_its_set_saved(tmp_path,
                                                                                process):
    """Killed between steps, the node's death shows in no call of the run: Ray ends the process
    that drives it (at its next call to the object store, or at once when the raylet, fate-sharing
    with its dashboard agent, shuts down and its objects are lost). That process is zodd's child,
    so the run stops as zodd's own error with its checkpoint and set."""
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", BETWEEN_STEPS, str(run), process],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "ClusterError: " in done.stderr, done.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
    assert (run / "synthetic.pt").exists()


def test_a_lost_node_s_workers_move_to_the_other_node_and_the_set_is_unchanged(tmp_path,
                                                                               digits):
    """Two nodes of Ray's test cluster on this machine: the head full (a placeholder holds its
    CPUs: a placement group), so both workers start on the second node; after step 2 it goes and the
    second node is removed: the workers restart on the head and the run finishes as without."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cfg = DistillConfig(objective="prototype", ipc=1, iterations=5, directions=4, workers=2,
                        checkpoint_every=1)
    without = distill(cfg, digits, tmp_path / "without")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        holder = ray.util.placement_group([{"CPU": 2}])
        ray.get(holder.ready())
        second = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        placed = []

        def lose_the_second_node(row, images):
            if row["step"] == 2:
                placed.extend(_actor_nodes(ray))
                ray.util.remove_placement_group(holder)
                cluster.remove_node(second)

        run = distill(DistillConfig(**{**cfg.to_dict(), "ray_address": cluster.address}),
                      digits, tmp_path / "run", on_step=lose_the_second_node)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert placed and set(placed) == {second.node_id}
    assert torch.equal(run.synthetic.images, without.synthetic.images)
    assert [r["loss"] for r in run.log] == [r["loss"] for r in without.log]


def _actor_nodes(ray):
    """Where the live workers of the run are (their node ids, from Ray's actor table: the state
    API needs a dashboard, which the test cluster does not start)."""
    table = ray._private.state.actors().values()
    return [a["Address"]["NodeID"] for a in table
            if a["ActorClassName"].endswith("_Worker") and a["State"] == "ALIVE"]
