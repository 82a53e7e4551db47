"""The synthetic set S: initialisation, and saving/loading it with its run files.

On disk a run directory holds ``synthetic.pt`` (a dict of plain tensors ``images`` [N, ch, h, w]
standardised like the data set, and ``labels`` [N]; loadable with ``weights_only=True``),
``config.json``, ``grid.png`` (one row per class) and ``log.jsonl``. Images are ordered by class,
``ipc`` per class.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from zodd.data import ImageData, draw_per_class
from zodd.types import ZoddError

SET_FILE = "synthetic.pt"
CONFIG_FILE = "config.json"


@dataclass
class SyntheticSet:
    images: Tensor  # [N, ch, h, w], N = classes * ipc, class-major
    labels: Tensor  # [N]
    num_classes: int
    source: Tensor | None = None  # training indices the set was initialised from, if any

    @property
    def ipc(self) -> int:
        return self.images.shape[0] // self.num_classes

    def by_class(self, images: Tensor | None = None) -> Tensor:
        """View ``[..., N, ch, h, w]`` as ``[..., classes, ipc, ch, h, w]``."""
        x = self.images if images is None else images
        return x.unflatten(-4, (self.num_classes, self.ipc))


def initialise(data: ImageData, ipc: int, how: str, gen: torch.Generator) -> SyntheticSet:
    """``how="real"``: ipc random real training images per class; ``"noise"``: N(0, 1) pixels."""
    per_class = data.class_indices()
    smallest = min(len(i) for i in per_class)
    if ipc > smallest:
        raise ZoddError(f"invalid ipc: {ipc} (the smallest class of {data.name} holds "
                        f"{smallest} training images)")
    source = None
    if how == "real":
        source = draw_per_class(per_class, ipc, gen).flatten()
        images = data.train_x[source].clone()
    elif how == "noise":
        shape = (data.num_classes * ipc, *data.train_x.shape[1:])
        images = torch.randn(shape, generator=gen)
    else:
        raise ZoddError(f"unknown init {how!r}")
    labels = torch.arange(data.num_classes).repeat_interleave(ipc)
    return SyntheticSet(images, labels, data.num_classes, source)


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


def save(s: SyntheticSet, out: Path, data: ImageData | None = None) -> None:
    """Write synthetic.pt (and grid.png when the data set is given to denormalise)."""
    payload = {"images": s.images.detach().cpu().contiguous(), "labels": s.labels.cpu()}
    atomic_write(out / SET_FILE, lambda f: torch.save(payload, f))
    if data is not None:
        save_grid(s, out / "grid.png", data)


def save_grid(s: SyntheticSet, path: Path, data: ImageData) -> None:
    from torchvision.utils import save_image

    images = data.denormalise(s.images.detach().cpu()).clamp(0, 1)
    scale = max(1, 32 // images.shape[-1])  # make 8 px digits visible
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    atomic_write(path, lambda f: save_image(images, f, nrow=s.ipc, padding=1, format="png"))


def save_json(obj: dict, path: Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def load(run_dir: str | os.PathLike) -> SyntheticSet:
    """Read a run directory's synthetic.pt safely (weights_only) and check its shape."""
    path = Path(run_dir) / SET_FILE
    if not path.is_file():
        raise ZoddError(f"no {SET_FILE} in {run_dir}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ZoddError(f"{path} is not a readable zodd set ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or not {"images", "labels"} <= set(payload):
        raise ZoddError(f"{path} is not a zodd set (needs tensors 'images' and 'labels')")
    images, labels = payload["images"], payload["labels"]
    if not (isinstance(images, Tensor) and isinstance(labels, Tensor)) or images.ndim != 4 \
            or labels.ndim != 1 or len(images) != len(labels) or len(labels) == 0:
        raise ZoddError(f"{path} has the wrong shape: images [N, ch, h, w] and labels [N] expected")
    if not torch.isfinite(images).all():
        raise ZoddError(f"{path} holds non-finite pixels")
    labels = labels.long()
    num_classes = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts != counts[0]).any() or (labels != torch.arange(num_classes).repeat_interleave(
            int(counts[0]))).any():
        raise ZoddError(f"{path}: labels must be class-major with the same count per class")
    return SyntheticSet(images.float(), labels, num_classes)


def load_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ZoddError(f"no {CONFIG_FILE} in {run_dir}") from None
    except (OSError, ValueError) as exc:
        raise ZoddError(f"{path} is not readable JSON ({exc})") from None
