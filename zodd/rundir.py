"""The run directory: what a run writes beside its set, and how it is written.

* ``config.json``: the settings asked for, the plan they resolved to (``resolved``), zodd's version
  and git SHA;
* ``log.jsonl``: one JSON row per iteration, appended and flushed as the run goes;
* ``checkpoint.pt`` (and the one before, ``checkpoint.prev.pt``): the whole loop state
  (``zodd.loop.Loop.state_dict``);
* ``synthetic.pt``, ``representation.pt`` and ``grid.png``: the set (zodd.synthetic.save);
* ``metrics*.json``: what ``zodd evaluate`` wrote (``metrics_name``);
* ``.lock``: held while a run writes the directory, so that a second one is refused.

Every file is written through a temporary file in the same directory, fsync and rename, so a
crash mid-write leaves the earlier file intact; every ``.pt`` file is read with
``weights_only=True``.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from zodd import __version__
from zodd.config import DistillConfig
from zodd.files import atomic_write, quiet_load  # noqa: F401 (their home for callers)
from zodd.types import ZoddError

# every file of a run directory is named here
CONFIG_FILE, LOG_FILE = "config.json", "log.jsonl"
CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
SET_FILE, GRID_FILE = "synthetic.pt", "grid.png"  # the set (decoded) and its picture
LOCK_FILE = ".lock"  # held by the run writing the directory (Lock)
STORED_FILE = "representation.pt"  # the stored tensor, for representations other than pixel
CHECKPOINT_FORMAT = "zodd-checkpoint-1"
# settings that a resumed run may change: they end the run sooner or later, not differently
RESUMABLE_CHANGES = {"iterations", "max_seconds", "max_queries", "checkpoint_every", "data_dir",
                     "workers", "ray_address", "worker_retries", "max_failures",
                     "device"}


def metrics_name(augment: str, own_augment: str, baseline: str | None = None,
                 tag: str | None = None) -> str:
    """The metrics file ``zodd evaluate`` writes: metrics.json, or metrics_BASELINE.json for a
    baseline; ``.TAG`` for a protocol other than the default (its name: zodd.evaluation.
    metrics_file), and ``-AUGMENT`` for an augmentation other than the protocol's own (e.g.
    metrics-dsa.json, metrics.dsa.json, metrics_random.plain.json)."""
    name = "metrics" + (f"_{baseline}" if baseline else "")
    if tag:
        name += f".{tag}"
    return name + (f"-{augment}" if augment != own_augment else "") + ".json"


def run_name(dataset: str, cfg: DistillConfig) -> str:
    """The folder a run goes to when no ``--out`` is given (``dataset``: its short name)."""
    return (f"{dataset}-ipc{cfg.ipc}-{cfg.objective}-{cfg.estimator}-{cfg.updater}"
            f"-s{cfg.seed}")


def check_out(out: Path, overwrite: bool, flag: str = "--out") -> None:
    """Refuse an output directory that is a file, holds files (unless ``overwrite``) or cannot
    be written, before any work starts."""
    if not str(out).strip():
        raise ZoddError(f"{flag} is empty")
    if out.exists() and not out.is_dir():
        raise ZoddError(f"{flag} {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ZoddError(f"{flag} {out} is not empty; choose another directory or pass "
                        "--overwrite")
    parent = out if out.exists() else next(p for p in out.absolute().parents if p.exists())
    if not writable(parent):
        raise ZoddError(f"{flag} {out} is not writable")


def writable(directory: Path) -> bool:
    """A real probe: os.access says yes to root even on read-only file systems."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=directory, prefix=".zodd-probe-"))
    except OSError:
        return False
    return True


def save_json(obj: dict, path: Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def load_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ZoddError(f"no {CONFIG_FILE} in {run_dir}") from None
    except (OSError, ValueError) as exc:
        raise ZoddError(f"{path} is not readable JSON ({exc})") from None


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_metadata() -> dict[str, Any]:
    return {"version": __version__, "git_sha": git_sha()}


def write_config(out: Path, asked: dict, resolved: dict) -> None:
    save_json({**asked, "resolved": resolved, **run_metadata()}, out / CONFIG_FILE)


def has_checkpoint(out: Path) -> bool:
    return (out / CHECKPOINT).exists() or (out / PREVIOUS).exists()


def save_checkpoint(state: dict, out: Path) -> None:
    """Write checkpoint.pt, keeping the one before as checkpoint.prev.pt. The new one is written
    whole under a temporary name first: a write that fails (a full disk) leaves both as they
    were and ends the run with one line."""
    current, new = out / CHECKPOINT, out / f".{CHECKPOINT}.new"
    try:
        atomic_write(new, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))
    except OSError as exc:
        raise ZoddError(f"could not write a checkpoint in {out} ({exc.strerror or exc}); the "
                        "checkpoint before it is kept") from None
    if current.exists():
        current.replace(out / PREVIOUS)
    new.replace(current)


class Lock:
    """One run at a time in a directory: an exclusive lock on ``.lock`` (which holds the
    owner's process id), held while the run writes there; a second run is refused."""

    def __init__(self, out: Path):
        import fcntl

        self.created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / LOCK_FILE
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            owner = self.file.read().strip() or "another process"
            self.file.close()
            raise ZoddError(f"{out} is in use by another zodd run (process {owner}); wait for "
                            "it to end or choose another directory") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self, remove_folder: bool = False) -> None:
        """Closing releases the lock; the file stays (removing it would race with a run that
        opened it meanwhile), unless ``remove_folder``: a run that never began leaves no folder
        it made."""
        if remove_folder and self.created and [p.name for p in self.path.parent.iterdir()] == [
                LOCK_FILE]:
            self.path.unlink()
            self.path.parent.rmdir()
        self.file.close()


def read_checkpoint(out: Path) -> dict:
    """The newest readable checkpoint in ``out``; falls back to the previous one (with a
    warning) when the newest is damaged."""
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = out / name
        if not path.exists():
            continue
        try:
            state = quiet_load(path)
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}")
            continue
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            problems.append(f"{name}: not a zodd checkpoint")
            continue
        if problems:
            warnings.warn(f"{out}/{CHECKPOINT} is unreadable ({problems[0]}); resuming from "
                          f"{name} at step {state['step']}")
        return state
    if problems:
        raise ZoddError(f"no usable checkpoint in {out} ({'; '.join(problems)})")
    raise ZoddError(f"no checkpoint in {out}")


class Log:
    """The run's rows: ``add`` collects them as the loop makes them (values may be tensors on a
    GPU), ``flush`` fetches their values in one transfer, keeps them in ``rows`` and appends them
    to log.jsonl (when the run has a directory). On resume the file is cut back to the
    checkpoint's step (a crash can leave later rows, or half a row)."""

    def __init__(self, out: Path | None, resume_at: int | None = None):
        self.pending: list[dict] = []
        self.path = None if out is None else out / LOG_FILE
        self.rows = read_log(self.path, resume_at) if resume_at is not None else []
        self.file = None
        if self.path is not None:
            atomic_write(self.path, lambda f: f.write(
                "".join(json.dumps(r) + "\n" for r in self.rows).encode()))
            self.file = open(self.path, "a")

    def add(self, row: dict) -> None:
        self.pending.append(row)

    def flush(self) -> list[dict]:
        """The pending rows, now plain and written; returns them."""
        rows, self.pending = plain(self.pending), []
        self.rows += rows
        if self.file is not None:
            self.file.write("".join(json.dumps(row) + "\n" for row in rows))
            self.file.flush()
        return rows

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def plain(rows: list[dict]) -> list[dict]:
    """``rows`` with every tensor value (a 0-dim loss or term, maybe on a GPU) made a float, all
    fetched in one transfer."""
    found = [(row, k) for row in rows for k, v in row.items() if isinstance(v, torch.Tensor)]
    if found:
        values = torch.stack([row[k].detach().float().reshape(()) for row, k in found]).tolist()
        for (row, k), value in zip(found, values):
            row[k] = value
    return rows


def read_log(path: Path, upto: int) -> list[dict]:
    """The rows of steps 1..``upto`` (the first unreadable line ends the read)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                break  # a line cut by the crash
            if row.get("step", upto + 1) > upto:
                break
            rows.append(row)
    return rows


def check_resumable(saved: DistillConfig, wanted: DistillConfig) -> None:
    for name, value in wanted.to_dict().items():
        if name not in RESUMABLE_CHANGES and getattr(saved, name) != value:
            raise ZoddError(f"cannot resume: {name.replace('_', '-')} is {value!r} here but "
                            f"{getattr(saved, name)!r} in the checkpoint")
