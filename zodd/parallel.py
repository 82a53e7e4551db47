"""Spreading a step's candidates over Ray actors.

``RayPool.wrap(box)`` is a BlackBox that wraps a BlackBox: it splits the candidates into one
contiguous chunk per actor, evaluates the chunks in parallel and gives the losses back in
candidate order, so an estimator cannot tell it from an in-process call. Ray is imported only
here, and only when ``--workers`` is above 0. A local cluster is bound to 127.0.0.1 and starts
no dashboard.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from zodd.types import BlackBox, EvaluationError, WrappedBox, ZoddError


class _Worker:
    def __init__(self, seed: int, index: int):
        torch.manual_seed(seed * 1009 + index)  # per-worker seed derived from the run's seed
        torch.set_num_threads(1)

    def evaluate(self, box: BlackBox, candidates: Tensor, blocks: bool = False) -> Tensor:
        with torch.no_grad():
            return box.blocks(candidates) if blocks else box(candidates)


def start_ray(num_cpus: int | None, address: str | None = None, dashboard: bool = False,
              purpose: str = "--workers", extra: str = "ray"):
    """Join ``address``, or start a local cluster bound to 127.0.0.1 (no dashboard unless asked);
    returns (ray, whether this call started it). Starting nothing when Ray is already up."""
    try:
        import ray
    except ImportError:
        raise ZoddError(f"{purpose} needs Ray: pip install 'zodd[{extra}]'") from None
    if ray.is_initialized():
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


class RayPool:
    def __init__(self, workers: int, seed: int, address: str | None = None):
        ray, self.owns = start_ray(workers, address)
        self.ray = ray
        actor = ray.remote(num_cpus=1)(_Worker)
        self.actors = [actor.remote(seed, i) for i in range(workers)]

    def wrap(self, box: BlackBox) -> "RayBox":
        return RayBox(self, box)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RayBox(WrappedBox):
    def __init__(self, pool: RayPool, box: BlackBox):
        self.pool, self.box = pool, box

    def _evaluate(self, candidates: Tensor, blocks: bool) -> Tensor:
        ray = self.pool.ray
        ref = ray.put(self.box)  # one copy of the bound objective in the object store per step
        chunks = [c for c in torch.tensor_split(candidates.detach(), len(self.pool.actors))
                  if len(c)]
        futures = [a.evaluate.remote(ref, c, blocks) for a, c in zip(self.pool.actors, chunks)]
        try:
            return torch.cat(ray.get(futures))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise EvaluationError(f"on a worker: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as exc:
            raise EvaluationError(f"Ray: {type(exc).__name__}") from None
