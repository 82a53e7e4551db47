"""Distilled sets from any tool, for ``zodd evaluate PATH`` and ``--init PATH`` (``start``);
writing a set in another tool's layout is zodd.export, MTT's whitening zodd.zca.

Formats (``FORMATS``), told apart by what PATH is and holds; every file is read with
``torch.load(weights_only=True)``, so a file that would run code is refused:

* ``run``: a zodd run directory (config.json + synthetic.pt); it names its own data set.
* ``zodd``: a zodd ``synthetic.pt`` on its own (``{"images", "labels"}``).
* ``dc``: the Dataset Condensation family's result file (DC, DSA, DM):
  ``{"data": [[images, labels], ...], ...}``, one pair per experiment (``experiment`` picks one).
* ``mtt``: an MTT-style pair ``images_best.pt`` + ``labels_best.pt`` (PATH is their folder or
  the images file); labels may be hard ``[N]`` or soft ``[N, classes]``.

Images from the other tools are normalised as their code saves them (``pixels="standardised"``):
by the mean and std each tool's ``utils.get_dataset`` hard-codes (``TOOL_NORMS``): the Dataset
Condensation family (DC, DSA, DM, IDM) for MNIST, Fashion-MNIST, SVHN, CIFAR-10 and CIFAR-100
(CIFAR-10's std there is (0.2023, 0.1994, 0.2010) where the data's own is about 0.247); MTT
for CIFAR-10 and CIFAR-100 alike with CIFAR-10's constants (its code has no others; on the
data sets it lacks, the DC family's); the data set's own mean and std for any other. ``unit``
reads [0, 1] pixels, ``byte`` 0..255. ``zca``: MTT's ``--zca`` sets, whitened by kornia's
``ZCAWhitening(eps=0.1)`` fit on the training set's [0, 1] pixels (zodd.zca.Zca); they are
evaluated against the test set whitened the same way (zodd.zca.whitened). The default, ``auto``,
reads ``standardised`` but refuses a set that looks whitened (zodd.zca.looks_whitened), saying
so: a whitened set read as pixels would be evaluated against the wrong test images. Soft labels
that are not probabilities (rows of non-negative numbers summing to one) are taken as logits and
softmaxed; the report says which.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from zodd.data import ImageData
from zodd.files import quiet_load
from zodd.labels import soft_targets
from zodd.rundir import load_config
from zodd.synthetic import (STORED_FILE, SyntheticSet, class_major, from_payload,
                            load as load_run)
from zodd.types import Registry, ZoddError, to_pixels
from zodd.zca import WhitenedData, Zca, looks_whitened

FORMATS = Registry("format", [
    ("run", None, "a zodd run directory"),
    ("zodd", None, "a zodd synthetic.pt ({'images', 'labels'})"),
    ("dc", None, "a Dataset Condensation / DSA / DM result file ({'data': [[images, labels]]})"),
    ("mtt", None, "an MTT-style images_best.pt + labels_best.pt pair"),
])
PIXELS = Registry("pixels", [
    ("auto", None, "standardised, and a set that looks ZCA-whitened is refused (saying so)"),
    ("standardised", None, "normalised as the reference codes save their sets: by the mean and "
     "std they hard-code for MNIST, Fashion-MNIST, SVHN, CIFAR-10/100, else by the data set's "
     "own"),
    ("zca", None, "ZCA-whitened as MTT's --zca (kornia, eps 0.1, fit on the training set's "
     "[0, 1] pixels): evaluated against the test set whitened the same way"),
    ("unit", None, "[0, 1] pixels"),
    ("byte", None, "0..255 pixels"),
])
MTT_FILES = ("images_best.pt", "labels_best.pt")
# (mean, std) per data set as each tool's ``utils.get_dataset`` hard-codes them, by file format:
# the DC family (DC, DSA, DM, IDM) and MTT, whose CIFAR-100 branch keeps CIFAR-10's constants
_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_DC_NORMS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2861,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": _CIFAR10,
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
}
TOOL_NORMS = {"dc": _DC_NORMS, "mtt": {**_DC_NORMS, "cifar10": _CIFAR10, "cifar100": _CIFAR10}}
TOOL_NAMES = {"dc": "the DC family's", "mtt": "MTT's"}


@dataclass(frozen=True)
class Located:
    format: str
    path: Path  # the run directory, or the file (mtt: the images file)
    payload: object = None  # the file's contents, where telling the format read them (zodd, dc)


@dataclass(frozen=True)
class ForeignSet:
    set: SyntheticSet  # images standardised like the data set; labels [N] or [N, classes]
    format: str
    labels: str  # hard, soft (probabilities) or soft (logits, softmaxed)
    note: str = ""  # e.g. which experiment of several


def locate(path: str | Path) -> Located:
    """Which format PATH is (see the module's docstring), or a ZoddError naming them all."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file():
            return Located("run", p)
        if all((p / f).is_file() for f in MTT_FILES):
            return Located("mtt", p / MTT_FILES[0])
        raise ZoddError(f"{p} is neither a zodd run directory (config.json) nor a folder with "
                        f"{' and '.join(MTT_FILES)}")
    if not p.is_file():
        raise ZoddError(f"{p} does not exist")
    if p.name == MTT_FILES[0]:
        return Located("mtt", p)
    payload = _load(p)
    if isinstance(payload, dict) and {"images", "labels"} <= set(payload):
        return Located("zodd", p, payload)
    if isinstance(payload, dict) and "data" in payload:
        return Located("dc", p, payload)
    raise ZoddError(f"{p} is not a set zodd reads: {accepted()}")


def accepted() -> str:
    return "expected " + "; ".join(f"{k} ({v})" for k, v in FORMATS.descriptions.items())


def _load(path: Path):
    try:
        return quiet_load(path)
    except Exception as exc:
        why = ("it holds objects other than tensors and plain containers, which are not loaded"
               if "weights_only" in str(exc) or "Unsupported" in str(exc) else type(exc).__name__)
        raise ZoddError(f"{path} is not a readable set file ({why}): {accepted()}") from None


def read(located: Located, data: ImageData, pixels: str = "auto",
         experiment: int = 0) -> ForeignSet:
    """The set at ``located`` (not ``run``/``zodd``, which synthetic.load reads), its images
    brought to the data set's standardisation and checked against it."""
    PIXELS.check(pixels, "pixels")
    if located.format == "dc":
        pairs = located.payload["data"]
        if not isinstance(pairs, (list, tuple)) or not pairs:
            raise ZoddError(f"{located.path}: 'data' must be a list of [images, labels] pairs")
        if not 0 <= experiment < len(pairs):
            raise ZoddError(f"invalid experiment: {experiment} ({located.path} holds "
                            f"{len(pairs)}: 0 to {len(pairs) - 1})")
        pair = pairs[experiment]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ZoddError(f"{located.path}: data[{experiment}] is not an [images, labels] pair")
        images, labels = pair
        note = f"experiment {experiment} of {len(pairs)}"
    elif located.format == "mtt":
        images = _load(located.path)
        labels_path = located.path.with_name(MTT_FILES[1])
        if not labels_path.is_file():
            raise ZoddError(f"{located.path} has no {MTT_FILES[1]} beside it")
        labels = _load(labels_path)
        note = ""
    else:
        raise ValueError(located.format)
    images, labels, kind = _checked(images, labels, data, located.path)
    norms = TOOL_NORMS[located.format].get(data.name)
    if pixels == "auto":
        whitened_look = looks_whitened(images, data)
        if whitened_look:
            raise ZoddError(f"{located.path} looks ZCA-whitened (MTT's --zca): {whitened_look}; "
                            "evaluate it with --pixels zca (the test set whitened to match), or "
                            "--pixels standardised to read it as pixels anyway")
        pixels = "standardised"
    if pixels == "zca":
        if not isinstance(data, WhitenedData):  # zodd.load: the images, un-whitened
            images = data.standardise(Zca.fit(data.denormalise(data.train_x)).colour(images))
        note = "; ".join(filter(None, [note, "ZCA-whitened as MTT's --zca (eps 0.1, fit on the "
                                       "training pixels)"]))
    elif pixels == "standardised" and norms is not None:
        images = data.standardise(to_pixels(images, *norms))
        note = "; ".join(filter(None, [note, f"pixels read with {TOOL_NAMES[located.format]} "
                                       f"{data.name} mean and std"]))
    elif pixels != "standardised":
        images = data.standardise(images / 255 if pixels == "byte" else images)
    return ForeignSet(SyntheticSet(images, labels, data.num_classes), located.format, kind, note)


def _checked(images, labels, data: ImageData, path: Path) -> tuple[Tensor, Tensor, str]:
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise ZoddError(f"{path}: images and labels must be tensors")
    images = images.detach().float().cpu()
    if images.ndim == 3 and data.channels == 1:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1:] != data.train_x.shape[1:]:
        raise ZoddError(f"{path}: images are {tuple(images.shape)}, {data.name} needs "
                        f"[N, {', '.join(map(str, data.train_x.shape[1:]))}]")
    if not torch.isfinite(images).all():
        raise ZoddError(f"{path} holds non-finite pixels")
    labels = labels.detach().cpu()
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if len(labels) != len(images):
        raise ZoddError(f"{path}: {len(images)} images but {len(labels)} labels")
    if labels.ndim == 1:
        if labels.is_floating_point() and (labels != labels.round()).any():
            raise ZoddError(f"{path}: labels [N] must be whole class numbers")
        labels = labels.long()
        if labels.min() < 0 or labels.max() >= data.num_classes:
            raise ZoddError(f"{path}: labels run from {int(labels.min())} to "
                            f"{int(labels.max())}; {data.name} has {data.num_classes} classes")
        return images, labels, "hard"
    if labels.ndim != 2 or labels.shape[1] != data.num_classes:
        raise ZoddError(f"{path}: soft labels must be [N, {data.num_classes}] ({data.name}'s "
                        f"classes), not {list(labels.shape)}")
    labels = labels.float()
    if not torch.isfinite(labels).all():
        raise ZoddError(f"{path} holds non-finite labels")
    targets = soft_targets(labels)
    return images, targets, ("soft (probabilities)" if targets is labels else
                             "soft (logits, softmaxed)")


def random_ipc(s: SyntheticSet) -> int:
    """The images per class of a random-real baseline the size of ``s``."""
    return max(1, round(len(s.images) / s.num_classes))


def zodd_set(located: Located) -> SyntheticSet:
    """A run directory's or a lone zodd file's set."""
    if located.format == "run":
        return load_run(located.path)
    return from_payload(located.payload, located.path)


def start(path: str | Path, data: ImageData, ipc: int, rep, how: dict) -> SyntheticSet:
    """S's stored tensor for ``--init PATH``: a distilled set to go on from (another objective's
    run, another tool's set). A zodd run of the same data set whose representation.pt was made
    the way ``how`` says ({"name": ..., and its factor or latent size}) gives its stored tensor
    as it is; any other set (standardised pixels, hard labels) must hold ``ipc * rep.per_image``
    images of each class, which ``rep`` encodes (for latent codes and multi-formation a lossy
    step: the stored tensor is what the encoding keeps of them)."""
    located = locate(path)
    if located.format == "run":
        dataset = load_config(located.path).get("dataset")
        if dataset != data.name and Path(str(dataset)).name != data.name:
            raise ZoddError(f"--init {path}: that run distilled {dataset}, not {data.name}")
        stored = located.path / STORED_FILE
        if stored.is_file():
            kept = quiet_load(stored)
            shape = (data.num_classes * ipc, *rep.stored_shape(tuple(data.train_x.shape[1:])))
            if kept.get("representation") == how and tuple(kept["images"].shape) == shape:
                return SyntheticSet(kept["images"].float(), class_major(data.num_classes, ipc),
                                    data.num_classes)
    if located.format in ("run", "zodd"):
        given = zodd_set(located)
        images, labels, kind = _checked(given.images, given.labels, data, located.path)
    else:
        given = read(located, data, "standardised")
        images, labels, kind = given.set.images, given.set.labels, given.labels
    if kind != "hard":
        raise ZoddError(f"--init {path}: a set with soft labels cannot start a run (its labels "
                        "are fixed by class)")
    per_class, counts = ipc * rep.per_image, torch.bincount(labels, minlength=data.num_classes)
    if (counts != per_class).any():
        raise ZoddError(f"--init {path}: holds {counts.tolist()} images per class; --ipc {ipc}"
                        + (f" x {rep.per_image} decoded images each" if rep.per_image > 1 else "")
                        + f" needs {per_class} of each")
    images = images[torch.argsort(labels, stable=True)]
    return SyntheticSet(rep.encode(images.float()), class_major(data.num_classes, ipc),
                        data.num_classes)
