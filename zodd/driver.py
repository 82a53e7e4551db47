"""A run: a :class:`zodd.loop.Loop` driven to its budget, its run directory written as it goes
(zodd.rundir), its checkpoints, its resume, and its Ray workers started and stopped.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import torch

from objectives import OBJECTIVES
from zodd import distributed, rundir
from zodd.config import DistillConfig
from zodd.data import ImageData
from zodd.loop import Loop
from zodd.plan import resolve
from zodd.synthetic import Run
from zodd.types import ClusterError, ZoddError


def distill(cfg: DistillConfig, data: ImageData, out: Path | None = None,
            on_step: Callable[[dict, torch.Tensor], None] | None = None, resume: bool = False,
            should_stop: Callable[[], bool] = lambda: False,
            note: Callable[[str], None] = lambda text: None,
            prior: torch.nn.Module | None = None) -> Run:
    """Run one distillation. With ``out`` the run's files are written there (zodd.rundir):
    config.json at the start, one log.jsonl row per iteration, a checkpoint every
    ``cfg.checkpoint_every`` iterations (default about once a minute), synthetic.pt and grid.png
    at the end. With ``resume`` it continues from the checkpoint in ``out``. Stops at the first
    budget reached (iterations, max_seconds, max_queries) or when ``should_stop()`` turns true,
    which saves a checkpoint first. ``on_step(row, images)`` sees each log row and the set after
    that step; its time is not counted in the run's seconds; ``note(text)`` hears what the run
    does before its first step (a warm start). With ``cfg.workers`` above 0 candidates are
    evaluated on Ray actors started and shut down here. ``prior``: the representation's learned
    prior when the caller holds it (else it is loaded from its cache).

    Launched by ``torchrun`` (``WORLD_SIZE`` above 1), the run is one of N processes sharing
    each step's real batch (zodd.distributed): only rank 0 writes ``out`` and hears
    ``on_step`` and ``note``; every process reads the checkpoint it resumes from."""
    plan = resolve(cfg, data)  # cfg stays the config as asked (config.json, checkpoints)
    shard = distributed.from_environment(plan.device)
    try:
        distributed.check(plan, shard, [name for name, objective in OBJECTIVES.items()
                                        if getattr(objective, "splits_real", False)])
    except ZoddError:
        distributed.leave()
        raise
    source = out  # the run directory a resume reads (every process)
    if shard is not None and not shard.writes:
        out, on_step, note = None, None, lambda text: None
    if plan.init == "dm" and not resume:
        note(f"warm start: DM with exact gradients before the first query (--init dm), "
             + (f"at most {plan.warm_iterations} steps, while they improve the score on fold 0"
                if plan.select_every else f"{plan.warm_iterations} steps"))
    pool, loop, log, result, lock, finished = None, None, None, None, None, False
    try:
        if out is not None:
            lock = rundir.Lock(out)  # before anything there is read or written
        if plan.workers > 0:  # check() refused workers for autograd
            from zodd.parallel import RayPool

            pool = RayPool(plan.workers, plan.seed, plan.ray_address, plan.worker_retries)
        loop = Loop(plan, data, pool, resuming=resume, prior=prior, shard=shard)
        if loop.warm.steps and plan.select_every:
            note(f"warm start: {loop.warm.steps} DM steps in {loop.warm.seconds:.0f} s; the set "
                 f"of step {loop.warm.kept} was the best on fold 0")
        if resume and source is not None:
            state = rundir.read_checkpoint(source)
            rundir.check_resumable(DistillConfig.from_dict(json.loads(state["config"])), cfg)
            loop.load_state_dict(state)
        if out is not None:
            rundir.write_config(out, cfg.to_dict(), plan.to_dict())
        log = rundir.Log(out, loop.step if resume and out is not None else None)
        result = Run(loop.syn, log.rows, plan=plan.to_dict(), config=cfg, path=out)
        try:
            _run(loop, cfg, result, out, log, on_step, should_stop)
        except distributed.ProcessLost as exc:
            kept = (f"; the checkpoint of step {loop.checkpointed} is kept: continue with zodd "
                    f"distill --resume {source}" if loop.checkpointed is not None and source
                    else "")
            raise distributed.ProcessLost(f"{exc}{kept}") from None
        finished = True
    finally:
        if pool is not None:
            pool.close()
        if log:
            log.close()
        try:
            if result is not None:  # the run began: its set is saved whatever ended it
                for leaf in loop.leaves:
                    leaf.requires_grad_(False)
                result.kept = loop.keep()  # --select-every: the best set on fold 0
                result.synthetic = loop.decoded_set()
                if out is not None:
                    _save_set(loop, out, result.synthetic)
        finally:
            if lock is not None:
                lock.release(remove_folder=result is None)
            distributed.leave(together=finished)  # an error leaves at once: the others stop
    return result


def _save_set(loop: Loop, out: Path, final) -> None:
    try:
        loop.save(out, final)
    except OSError as exc:  # each file is written whole or not at all (zodd.files)
        raise ZoddError(f"could not write the set in {out} ({exc.strerror or exc}); its last "
                        "checkpoint is kept") from None


def _checkpoint(loop: Loop, cfg: DistillConfig, out: Path, state: dict | None = None) -> None:
    """The loop's state (or ``state``, one taken before) and the config as asked, which a
    resume checks its own against."""
    rundir.save_checkpoint({**(state or loop.state_dict()),
                            "config": json.dumps(cfg.to_dict())}, out)


def _advance(loop: Loop, cfg: DistillConfig, out: Path | None) -> dict:
    """One step. With Ray workers the state before it is kept: when the cluster fails mid-step
    (zodd.parallel) the loop goes back to it, its checkpoint is written and the run ends; a
    resume then makes the step as a run without the fault would have."""
    if loop.binding.pool is None or not loop.stepper.resumable:
        return loop.advance()
    before = copy.deepcopy(loop.state_dict())
    try:
        return loop.advance()
    except ClusterError as exc:
        loop.load_state_dict(before)
        where = ""
        if out is not None:
            _checkpoint(loop, cfg, out, before)
            where = (f"; the set and checkpoint of step {loop.step} are saved: continue with "
                     f"zodd distill --resume {out}")
        raise ClusterError(f"{exc}{where}") from None


def _run(loop: Loop, cfg: DistillConfig, result: Run, out: Path | None, log: rundir.Log,
         on_step, should_stop) -> None:
    plan = loop.plan  # its budgets; cfg, the config as asked, goes into the checkpoints
    last_checkpoint = time.perf_counter()

    def flush() -> None:  # S checked, the rows' values fetched in one transfer and written
        started = time.perf_counter()
        loop.check_finite(log.pending[0]["step"])
        images = loop.images() if on_step else None  # the set after the group's last step
        for row in log.flush():
            if on_step:
                on_step(row, images)
        loop.seconds += time.perf_counter() - started

    while loop.step < plan.iterations:
        started = time.perf_counter()
        try:
            log.add(_advance(loop, cfg, out))
        except ClusterError:
            if log.pending:
                flush()  # the rows up to the checkpoint just written
            raise
        loop.seconds += time.perf_counter() - started
        log.pending[-1]["seconds"] = round(loop.seconds, 4)
        if loop.failures > plan.max_failures:
            flush()
            last = log.rows[-1]
            raise ZoddError(
                f"the black box failed {loop.failures} times, more than --max-failures "
                f"{plan.max_failures} (last: {last.get('fault', last.get('skipped'))})"
                + (f"; the last good set is saved in {out}" if out else ""))
        if plan.max_seconds is not None and loop.seconds >= plan.max_seconds:
            result.stopped_by = "max_seconds"
        elif plan.max_queries is not None and loop.queries >= plan.max_queries:
            result.stopped_by = "max_queries"
        elif should_stop():
            result.stopped_by = "interrupted"
        if loop.shard is not None:  # rank 0's clock and signals decide for every process
            result.stopped_by = loop.shard.agree(result.stopped_by)
        due = (loop.step % plan.checkpoint_every == 0 if plan.checkpoint_every
               else time.perf_counter() - last_checkpoint >= plan.checkpoint_seconds)
        # a checkpoint also at the end, so a finished run can be extended with --resume
        end = result.stopped_by != "iterations" or loop.step >= plan.iterations
        if end:  # --select-every: the last set is a candidate for keeping too
            started = time.perf_counter()
            log.pending[-1].update(loop.choose(last=True))
            loop.seconds += time.perf_counter() - started
        if due or end or len(log.pending) >= plan.log_every:
            flush()
        if out is not None and (due or end):
            started = time.perf_counter()
            _checkpoint(loop, cfg, out)
            loop.checkpointed = loop.step
            last_checkpoint = time.perf_counter()
            loop.seconds += last_checkpoint - started
        if result.stopped_by != "iterations":
            break
