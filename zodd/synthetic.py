"""The synthetic set S: initialisation, and saving/loading it with its run files.

On disk a run directory holds ``synthetic.pt`` (a dict of plain tensors ``images`` [N, ch, h, w]
standardised like the data set, and ``labels``: [N] int64 class indices, or with ``--labels
learn`` [N, classes] float32 label vectors, one an image, the images class-major as ever;
loadable with ``weights_only=True``),
``config.json``, ``grid.png`` (one row per class) and ``log.jsonl``. Images are ordered by class,
the same number per class. A run whose representation is not ``pixel`` also writes
``representation.pt`` (the stored tensor and how to decode it; zodd.representation), and its
synthetic.pt holds the decoded images, so any tool trains on it as on any other set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from zodd.config import DistillConfig
from zodd.data import ImageData, draw_per_class
from zodd.representation import Pixel
from zodd.rundir import GRID_FILE, SET_FILE, STORED_FILE, atomic_write, quiet_load
from zodd.types import Registry, ZoddError



@dataclass
class SyntheticSet:
    images: Tensor  # [N, ch, h, w], N = classes * ipc, class-major
    labels: Tensor  # [N] class indices, or [N, classes] label vectors (learned or soft)
    num_classes: int
    source: Tensor | None = None  # training indices the set was initialised from, if any

    @property
    def ipc(self) -> int:
        return self.images.shape[0] // self.num_classes

    def by_class(self, images: Tensor | None = None) -> Tensor:
        """View ``[..., N, ch, h, w]`` as ``[..., classes, ipc, ch, h, w]``."""
        x = self.images if images is None else images
        return x.unflatten(-4, (self.num_classes, self.ipc))


@dataclass
class Run:
    """A distilled set and how it was made (what ``zodd.distill`` and ``zodd.load`` return)."""

    synthetic: SyntheticSet  # decoded images, class-major, standardised like the data set
    rows: list[dict] = field(default_factory=list)  # log.jsonl: one row per iteration
    stopped_by: str | None = "iterations"  # max_seconds, max_queries, interrupted; None: loaded
    plan: dict = field(default_factory=dict)  # what the settings resolved to (Plan.to_dict)
    config: DistillConfig | None = None  # the settings as asked
    path: Path | None = None  # the run directory (None: nothing was written)
    # --select-every: the step whose set was kept (the best on fold 0) and its score there
    kept: dict | None = None

    @property
    def images(self) -> torch.Tensor:
        return self.synthetic.images

    @property
    def labels(self) -> torch.Tensor:
        return self.synthetic.labels

    @property
    def log(self) -> list[dict]:
        return self.rows

    @property
    def queries(self) -> int:
        return self.rows[-1]["queries"] if self.rows else 0

    @property
    def estimator(self) -> str:
        return self.plan.get("estimator", "")

    def __repr__(self) -> str:
        dataset = self.config.dataset if self.config else "?"
        return (f"Run({dataset}, {len(self.images)} images, {len(self.rows)} iterations, "
                f"path {self.path})")


def _real(data: ImageData, ipc: int, gen: torch.Generator, rep) -> tuple[Tensor, Tensor]:
    source = draw_per_class(data.class_indices(), ipc * rep.per_image, gen).flatten()
    return rep.encode(data.train_x[source].clone()), source


def _noise(data: ImageData, ipc: int, gen: torch.Generator, rep) -> tuple[Tensor, None]:
    shape = rep.stored_shape(tuple(data.train_x.shape[1:]))
    return torch.randn((data.num_classes * ipc, *shape), generator=gen), None


INITS = Registry("init", [
    ("real", _real, "random real training images of each class (with --representation "
     "multi: factor^2 of them shrunk into each stored image)"),
    ("noise", _noise, "N(0, 1) pixels (standardised; with --representation latent, codes)"),
    ("dm", None, "--warm-iterations steps of distribution matching with exact gradients "
     "(no queries) from the real start, in the run's representation, then the run's own "
     "steps"),
])


def initialise(data: ImageData, ipc: int, how: str, gen: torch.Generator,
               rep=Pixel()) -> SyntheticSet:
    """``ipc`` stored images per class of representation ``rep`` (zodd.representation), made
    as ``INITS[how]`` says."""
    smallest = min(len(i) for i in data.class_indices())
    if ipc * rep.per_image > smallest:
        raise ZoddError(f"invalid ipc: {ipc} (needs {ipc * rep.per_image} real images a class; "
                        f"the smallest class of {data.name} holds {smallest})")
    made = INITS[INITS.check(how)]
    if made is None:
        raise ValueError(f"init {how!r} is a run of its own (zodd.loop.warm_start)")
    images, source = made(data, ipc, gen, rep)
    return SyntheticSet(images, class_major(data.num_classes, ipc), data.num_classes, source)


def class_major(classes: int, per_class: int) -> Tensor:
    """The labels of a class-major set: ``per_class`` of class 0, then of class 1, …"""
    return torch.arange(classes).repeat_interleave(per_class)


def save(s: SyntheticSet, out: Path, data: ImageData | None = None,
         stored: SyntheticSet | None = None, representation: dict | None = None,
         grid_of_stored: bool = True) -> None:
    """Write synthetic.pt, the images to train on (and grid.png when the data set is given to
    denormalise). With ``stored`` (a set whose representation is not pixels), also
    representation.pt: the stored tensor and labels and ``representation`` (how to decode
    them: its name, and its factor or its prior); grid.png then shows the stored images when
    they are images (``grid_of_stored``), else the decoded ones."""
    payload = {"images": s.images.detach().cpu().contiguous(), "labels": s.labels.cpu()}
    atomic_write(out / SET_FILE, lambda f: torch.save(payload, f))
    if stored is not None:
        kept = {"images": stored.images.detach().cpu().contiguous(),
                "labels": stored.labels.cpu(), "representation": dict(representation or {})}
        atomic_write(out / STORED_FILE, lambda f: torch.save(kept, f))
    if data is not None:
        shown = stored if stored is not None and grid_of_stored else s
        save_grid(shown, out / GRID_FILE, data)


def save_grid(s: SyntheticSet, path: Path, data: ImageData) -> None:
    """One row of images per class, the class's name (when the data set names its classes)
    written to the left of its row."""
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid

    images = data.denormalise(s.images.detach().cpu()).clamp(0, 1)
    scale = max(1, 32 // images.shape[-1])  # make 8 px digits visible
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=s.ipc, padding=1)
    picture = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    if data.classes:
        font = ImageFont.load_default()
        names = [data.class_name(c) for c in range(s.num_classes)]
        margin = 6 + max(int(font.getlength(n)) for n in names)
        labelled = Image.new("RGB", (picture.width + margin, picture.height), "white")
        labelled.paste(picture, (margin, 0))
        draw, row = ImageDraw.Draw(labelled), images.shape[-2] + 1
        for c, name in enumerate(names):
            draw.text((3, 1 + c * row + row // 2), name, fill="black", font=font, anchor="lm")
        picture = labelled
    atomic_write(path, lambda f: picture.save(f, format="png"))


def load(run_dir: str | os.PathLike) -> SyntheticSet:
    """Read a run directory's synthetic.pt safely (weights_only) and check its shape."""
    path = Path(run_dir) / SET_FILE
    if not path.is_file():
        raise ZoddError(f"no {SET_FILE} in {run_dir}")
    return load_file(path)


def load_file(path: Path) -> SyntheticSet:
    """A zodd set file (synthetic.pt's format) read safely (weights_only), its shape checked."""
    try:
        payload = quiet_load(path)
    except Exception as exc:
        raise ZoddError(f"{path} is not a readable zodd set ({type(exc).__name__})") from None
    return from_payload(payload, path)


def from_payload(payload, path: Path) -> SyntheticSet:
    """A loaded zodd set file's contents (``path``: where they came from), its shape checked."""
    if not isinstance(payload, dict) or not {"images", "labels"} <= set(payload):
        raise ZoddError(f"{path} is not a zodd set (needs tensors 'images' and 'labels')")
    images, labels = payload["images"], payload["labels"]
    if not (isinstance(images, Tensor) and isinstance(labels, Tensor)) or images.ndim != 4 \
            or labels.ndim not in (1, 2) or len(images) != len(labels) or len(labels) == 0:
        raise ZoddError(f"{path} has the wrong shape: images [N, ch, h, w] and labels [N] (or "
                        "[N, classes]) expected")
    if not torch.isfinite(images).all():
        raise ZoddError(f"{path} holds non-finite pixels")
    if labels.ndim == 2:  # label vectors: the images class-major, N a multiple of the classes
        num_classes = labels.shape[1]
        if num_classes < 2 or len(labels) % num_classes or not torch.isfinite(labels).all():
            raise ZoddError(f"{path}: label vectors must be finite, [N, classes] with N a "
                            "multiple of the classes (class-major images)")
        return SyntheticSet(images.float(), labels.float(), num_classes)
    labels = labels.long()
    num_classes = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts != counts[0]).any() or (labels != class_major(num_classes, int(counts[0]))).any():
        raise ZoddError(f"{path}: labels must be class-major with the same count per class")
    return SyntheticSet(images.float(), labels, num_classes)
