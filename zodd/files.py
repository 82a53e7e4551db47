"""Files written whole or not at all, and tensors read without running code."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def quiet_load(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warnings about what a
    damaged file looks like (the caller turns a failure into one line of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)
