"""Spreading a step's candidates over Ray actors.

``RayPool.wrap(box)`` is a BlackBox that wraps a BlackBox: it splits the candidates into one
contiguous chunk per actor, evaluates the chunks in parallel and gives the losses back in
candidate order, so an estimator cannot tell it from an in-process call. A worker that dies is
restarted and its chunk scored again (``Cluster``); what Ray cannot mend is a
:class:`zodd.types.ClusterError`, which the guard passes on and the run ends with. Ray is driven
from a child process (``RayPool``), so that whatever Ray does to that process the run's own keeps
its set. Ray is imported only here, and only when ``--workers`` is above 0. A local cluster is
bound to 127.0.0.1 and starts no dashboard.
"""
from __future__ import annotations

import logging
import pickle
import signal
import socket

import torch
from torch import Tensor

from zodd.types import BlackBox, ClusterError, EvaluationError, WrappedBox, ZoddError


class _Worker:
    def __init__(self, seed: int, index: int):
        torch.manual_seed(seed * 1009 + index)  # per-worker seed derived from the run's seed
        torch.set_num_threads(1)

    def evaluate(self, box: BlackBox, candidates: Tensor, blocks: bool = False) -> Tensor:
        with torch.no_grad():
            return box.blocks(candidates) if blocks else box(candidates)


def _import_ray(purpose: str = "--workers", extra: str = "ray"):
    """(ray, whether this process is already connected to a cluster)."""
    try:
        import ray
    except ImportError:
        raise ZoddError(f"{purpose} needs Ray: pip install 'zodd[{extra}]'") from None
    return ray, ray.is_initialized()


def start_ray(num_cpus: int | None, address: str | None = None, dashboard: bool = False,
              purpose: str = "--workers", extra: str = "ray"):
    """Join ``address``, or start a local cluster bound to 127.0.0.1 (no dashboard unless asked);
    returns (ray, whether this call started it). Starting nothing when Ray is already up."""
    ray, running = _import_ray(purpose, extra)
    if running:
        return ray, False
    # the notice that a local cluster uses token authentication (it does; nothing to act on)
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=False,
                     configure_logging=False, _node_ip_address="127.0.0.1")
    except Exception as exc:
        raise ZoddError(f"could not start or join Ray ({type(exc).__name__}: {exc})") from None
    return ray, True


class Cluster:
    """``workers`` Ray actors, each restarted by Ray when its process dies (on any node with a
    free CPU) and its unfinished call retried there, up to ``retries`` times per call: a
    candidate's loss depends only on the step's draws, so a retried chunk gives the same losses.
    What Ray cannot mend ends the step with a :class:`ClusterError`. Lives in the process that
    drives Ray: :class:`RayPool`'s own child, or a ``zodd tune`` trial."""

    POLL = 1.0  # seconds between checks of the local Ray node while a step's chunks run

    def __init__(self, workers: int, seed: int, address: str | None = None, retries: int = 3):
        ray, self.owns = start_ray(workers, address)
        self.ray, self.retries = ray, retries
        actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=retries)(_Worker)
        self.actors = [actor.remote(seed, i) for i in range(workers)]
        node = getattr(getattr(ray, "_private", None), "worker", None)
        node = getattr(getattr(node, "global_worker", None), "node", None)
        self.store = getattr(node, "plasma_store_socket_name", None)

    def evaluate(self, box: BlackBox, candidates: Tensor, blocks: bool) -> Tensor:
        """The losses of ``candidates`` (one contiguous chunk per actor), in their order."""
        self.check_node()
        ref = self.ray.put(box)  # one copy of the bound objective per step
        chunks = [c for c in torch.tensor_split(candidates.detach(), len(self.actors)) if len(c)]
        futures = [a.evaluate.remote(ref, c, blocks) for a, c in zip(self.actors, chunks)]
        return torch.cat(self.gather(futures))

    def check_node(self) -> None:
        """ClusterError when this machine's Ray node (its object store) is gone: Ray ends the
        process at the next call that needs the store, so the step must stop before it."""
        if self.store is None:
            return
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(self.store)
        except OSError:
            raise ClusterError("the Ray node on this machine died (its object store does not "
                               "answer)") from None
        finally:
            probe.close()

    def gather(self, futures: list) -> list[Tensor]:
        """The chunks' losses, waiting in slices of POLL seconds so that a dead local node or a
        cluster with no CPU left for a restarted worker ends the step instead of hanging it."""
        ray = self.ray
        waited = 0.0
        while True:
            _, pending = ray.wait(futures, num_returns=len(futures), timeout=self.POLL)
            if not pending:
                break
            waited += self.POLL
            self.check_node()
            if waited >= 10 * self.POLL and ray.cluster_resources().get("CPU", 0) < 1:
                raise ClusterError("no Ray node with a CPU is left for the workers")
        try:
            return ray.get(futures)
        except ray.exceptions.RayTaskError as exc:  # the box raised on the worker: its fault
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise EvaluationError(f"on a worker: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as exc:  # a worker, node or object lost past the retries
            raise ClusterError(f"Ray lost a worker and scoring again failed {self.retries + 1} "
                               f"times ({type(exc).__name__}; see --worker-retries)") from None

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()


def _serve(conn, workers: int, seed: int, address: str | None, retries: int) -> None:
    """RayPool's child: drives Ray for the run's process, one request at a time, until told to
    close or the run's process is gone (its end of the pipe closed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle (a clean stop)
    torch.set_num_threads(1)
    try:
        cluster = Cluster(workers, seed, address, retries)
    except ZoddError as exc:
        conn.send_bytes(pickle.dumps(("refused", str(exc))))
        return
    conn.send_bytes(pickle.dumps(("ready", None)))
    try:
        while True:
            try:
                request = conn.recv_bytes()
            except (EOFError, OSError):
                break
            if request == b"close":
                break
            box, candidates, blocks = pickle.loads(request)
            try:
                reply = ("ok", cluster.evaluate(box, candidates, blocks))
            except ClusterError as exc:
                reply = ("cluster", str(exc))
            except EvaluationError as exc:
                reply = ("evaluation", str(exc))
            except Exception as exc:  # the box could not be sent or run: counted as its failure
                reply = ("evaluation", f"{type(exc).__name__}: {exc}")
            conn.send_bytes(pickle.dumps(reply))
    finally:
        cluster.close()


class RayPool:
    """The run's Ray workers (a :class:`Cluster`), driven from a child process of the run's
    own: Ray ends a process whose node is lost (its object store gone) without a word, so the
    run's process never connects to Ray itself; the child's end is a ClusterError here, and the
    run keeps its set. Inside a process already connected to Ray (a ``zodd tune`` trial) the
    Cluster is driven in place."""

    def __init__(self, workers: int, seed: int, address: str | None = None, retries: int = 3):
        import multiprocessing

        ray, connected = _import_ray()
        self.pickler = ray.cloudpickle  # a bound objective may hold what plain pickle cannot
        self.cluster = self.process = None
        if connected:
            self.cluster = Cluster(workers, seed, address, retries)
            return
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve, name="zodd-ray", daemon=True,
                                       args=(theirs, workers, seed, address, retries))
        self.process.start()
        theirs.close()
        kind, text = self._receive("while starting")
        if kind == "refused":
            self.close()
            raise ZoddError(text)

    def wrap(self, box: BlackBox) -> "RayBox":
        return RayBox(self, box)

    def evaluate(self, box: BlackBox, candidates: Tensor, blocks: bool) -> Tensor:
        if self.cluster is not None:
            return self.cluster.evaluate(box, candidates, blocks)
        try:
            self.conn.send_bytes(self.pickler.dumps((box, candidates.detach().cpu(), blocks)))
        except OSError:
            self._gone("")
        kind, value = self._receive("mid-step")
        if kind == "cluster":
            raise ClusterError(value)
        if kind == "evaluation":
            raise EvaluationError(value)
        return value.to(candidates.device)

    def _receive(self, when: str):
        while not self.conn.poll(0.5):
            if not self.process.is_alive():
                self._gone(when)
        try:
            return pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self._gone(when)

    def _gone(self, when: str):
        self.process.join(timeout=5)
        raise ClusterError(f"Ray ended the process that drives it {when} (status "
                           f"{self.process.exitcode}): it does so when the Ray node on this "
                           "machine is lost")

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            return
        if self.process is None:
            return
        try:
            if self.process.is_alive():
                self.conn.send_bytes(b"close")
            self.process.join(timeout=60)
        except OSError:
            pass
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.process = None

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RayBox(WrappedBox):
    def __init__(self, pool: RayPool, box: BlackBox):
        self.pool, self.box = pool, box

    def _evaluate(self, candidates: Tensor, blocks: bool) -> Tensor:
        return self.pool.evaluate(self.box, candidates, blocks)
