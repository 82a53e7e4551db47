"""One run across several processes (data parallel), on ``torch.distributed``: gloo on the
CPU, NCCL on CUDA GPUs, launched by ``torchrun`` (docs/gpus.md).

Every process holds S, the step's network and the run's root generator, and makes every draw
the single process would make (the network's initialisation, the real batch's indices, the
augmentation's seed, the estimator's directions): the processes stay in step without talking
about it. What splits is the real batch: of every class's ``n`` drawn images, process ``r``
takes the columns ``Shard.columns(n)`` (contiguous, their sizes differing by at most one). What
each process computes on its share is combined before S or the network moves:

- DM's real-side statistic, each class's mean embedding: a sum of the shares' sums, over n;
- gradient matching's real-side gradient, each class's mean cross-entropy gradient: the shares'
  gradients weighed by their share of n, summed;
- the updater's loss (CE, or the robust loss of the paper's Algorithm 1): the CVaR of a cluster
  is not a sum over examples, so every process gathers the per-example losses (scalars) and
  cluster ids of all shares, computes the loss of the whole batch with only its own examples'
  losses carrying their graph (``Shard.splice``), and the networks' gradients are summed
  (``Shard.reduce_gradients``): the sum is the whole batch's gradient, since each example's
  gradient is the loss's derivative in that example's loss (computed from the whole batch)
  times the example's own gradient.

S's side (the synthetic images' pass, the estimate, the step) is repeated whole by every
process: it is the same on each, and small next to the real batch. Sums are taken in another
order than one process takes them, so an N-process run equals the single-process run within
float32 summation (tests/test_distributed.py states the tolerance), not bit for bit.

What is not separable this way is refused in one line (``check``): objectives that score S
alone (no real batch to split), the kernel objectives and IDM's and FRePo's networks (their
pools and queues train on batches of their own), ``--one-pass``, Ray workers and nevergrad.
Only rank 0 writes the run directory; every process reads the checkpoint it resumes from.
"""
from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

import torch
from torch import Tensor

from zodd.types import ZoddError


class ProcessLost(ZoddError):
    """A process of the run ended (or the launcher stopped this one) mid-run."""


@dataclass(frozen=True)
class Shard:
    """This process's part of an N-process run: its ``rank`` among ``world`` processes."""

    rank: int
    world: int

    @property
    def writes(self) -> bool:
        """Whether this process writes the run directory and prints (rank 0)."""
        return self.rank == 0

    def columns(self, n: int) -> slice:
        """This process's contiguous share of ``n`` images of a class."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, value: Tensor) -> Tensor:
        """``value`` summed over the processes (a new tensor; every process gets the same)."""
        total = value.detach().clone()
        _collective(torch.distributed.all_reduce, total)
        return total

    def mean(self, local: Tensor) -> Tensor:
        """Each class's mean over the whole batch of per-example values ``[classes, share,
        ...]``: the shares' sums summed, over the batch's size."""
        count = self.sum(torch.tensor(float(local.shape[1]), device=local.device))
        return self.sum(local.sum(1)) / count

    def gather(self, local: Tensor) -> Tensor:
        """Per-example values ``[classes, share, ...]`` of every process, put together in the
        single process's order: ``[classes, n, ...]`` (detached)."""
        size = torch.tensor([local.shape[1]], device=local.device)
        sizes = [torch.empty_like(size) for _ in range(self.world)]
        _collective(torch.distributed.all_gather, sizes, size)
        sizes = [int(s) for s in sizes]
        padded = local.detach().new_zeros((local.shape[0], max(sizes), *local.shape[2:]))
        padded[:, :local.shape[1]] = local.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        _collective(torch.distributed.all_gather, parts, padded)
        return torch.cat([p[:, :n] for p, n in zip(parts, sizes)], 1)

    def splice(self, local: Tensor) -> Tensor:
        """The whole batch's per-example values ``[classes, n]`` with this process's own
        columns the live ``local`` ones (their graph kept), the others' detached."""
        whole = self.gather(local)
        start = self.columns(whole.shape[1]).start
        return torch.cat([whole[:, :start], local, whole[:, start + local.shape[1]:]], 1)

    def reduce_gradients(self, net: torch.nn.Module) -> None:
        """Each parameter's ``.grad`` summed over the processes, in place."""
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective, not one a layer
        _collective(torch.distributed.all_reduce, flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def agree(self, value):
        """Rank 0's ``value`` (any picklable object), on every process."""
        box = [value]
        _collective(torch.distributed.broadcast_object_list, box, src=0)
        return box[0]


def _collective(op, *args, **kwargs) -> None:
    try:
        op(*args, **kwargs)
    except (RuntimeError, ValueError) as exc:  # gloo / NCCL: a peer's socket closed
        raise ProcessLost(f"a process of the run stopped ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    """The gist of a backend's error: "[source.cc:545] Read error [host]:port: Connection reset
    by peer. This is ..." -> "Connection reset by peer"."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # the source file and line
    text = text.split(". ")[0]
    return text.rsplit(": ", 1)[-1][:160]


def from_environment(device: str) -> Shard | None:
    """The shard ``torchrun`` set up (``WORLD_SIZE`` above 1 in the environment), its process
    group joined (NCCL when the run's device is CUDA, else gloo; each process on the GPU of its
    ``LOCAL_RANK``); None for a single process."""
    if not launched():
        return None
    import torch.distributed as dist

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if cuda else "gloo")
        except (RuntimeError, ValueError) as exc:
            raise ZoddError(f"could not join the run's {os.environ['WORLD_SIZE']} processes "
                            f"({exc})") from None
    shard = Shard(dist.get_rank(), dist.get_world_size())
    if not shard.writes:  # stopping is rank 0's to decide (Shard.agree, each step); with rank 0
        # gone, the next collective ends this process
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
    return shard


def launched() -> bool:
    """Whether this process is one of several that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def writes_here() -> bool:
    """Whether this process writes the run directory and prints: the only one, or rank 0 of
    the processes ``torchrun`` started (read from the environment, before any group is
    joined)."""
    return not launched() or os.environ.get("RANK", "0") == "0"


def leave(together: bool = True) -> None:
    """The process group left at a run's end: ``together``, once every process got there (a
    process that leaves while another still talks to it ends that one); alone after a loss."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    if together:
        try:
            dist.barrier()
        except (RuntimeError, ValueError):
            pass
    dist.destroy_process_group()


def check(plan, shard: Shard | None, splitting: list[str]) -> None:
    """One line when the plan has a part that does not split over processes; ``splitting``:
    the objectives whose real batch splits (their ``splits_real``)."""
    if shard is None:
        return
    reasons = []
    if plan.objective not in splitting:
        reasons.append(f"--objective {plan.objective} (only {' and '.join(splitting)} split "
                       "their real batch)")
    if plan.queue_size or plan.pool_size:
        reasons.append("a network queue or pool (it trains on batches of its own)")
    if plan.one_pass:
        reasons.append("--one-pass")
    if plan.workers:
        reasons.append("--workers (Ray workers score candidates in one process's run)")
    if plan.surrogate:
        reasons.append("--surrogate")
    if plan.estimator.startswith("ng"):
        reasons.append(f"--estimator {plan.estimator}")
    if reasons:
        raise ZoddError(f"{shard.world} processes cannot share this run: "
                        + "; ".join(reasons) + "; run it as one process")
