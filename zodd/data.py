"""Data sets by name, as standardised float tensors in memory.

* ``digits``: scikit-learn's bundled 8x8 digits (no download); a fixed, stratified 70/30 split.
* ``mnist``, ``fashion-mnist``: the IDX files, from ``--data-dir`` (default ``$ZODD_DATA``, else
  the user cache dir) or, for Fashion-MNIST, from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``); otherwise downloaded through torchvision when online.
* ``cifar10``, ``svhn``: through torchvision, from the data dir, downloaded when online.
* a path (zodd.folder): an image-folder tree or an ``.npz`` array file of the user's own.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from zodd.config import DistillConfig
from zodd.types import Progress, Registry, ZoddError, to_pixels

SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10",
                     "svhn": "SVHN"}


@dataclass(frozen=True)
class ImageData:
    """A labelled image set split into train and test, standardised per channel."""

    name: str
    train_x: Tensor  # [N, ch, h, w] float32, standardised
    train_y: Tensor  # [N] int64
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = False  # whether a mirrored image keeps its class (augmentation may flip)
    classes: tuple[str, ...] = ()  # class names, by label; () when the source names none

    def class_name(self, label: int) -> str:
        return self.classes[label] if label < len(self.classes) else str(label)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def class_indices(self) -> list[Tensor]:
        return [torch.nonzero(self.train_y == c).flatten() for c in range(self.num_classes)]

    def denormalise(self, x: Tensor) -> Tensor:
        """Standardised images -> [0, 1] pixels."""
        return to_pixels(x, self.mean, self.std)

    def standardise(self, pixels: Tensor) -> Tensor:
        """[0, 1] pixels -> standardised images."""
        mean = torch.tensor(self.mean, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(-1, 1, 1)
        return (pixels - mean) / std


def draw_per_class(pools: list[Tensor], n: int, gen: torch.Generator) -> Tensor:
    """``n`` indices drawn without replacement from each pool (one pool per class), as
    ``[len(pools), n]``; the pools are taken in order, so the draws depend on ``gen`` alone."""
    return torch.stack([p[torch.randperm(len(p), generator=gen)[:n]] for p in pools])


def default_data_dir() -> Path:
    if os.environ.get("ZODD_DATA"):
        return Path(os.environ["ZODD_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "zodd"


def is_path(name: str) -> bool:
    """Whether a ``--dataset`` value names a file or folder rather than a registered data set."""
    return bool(name.strip()) and name not in DATASETS and (os.sep in name or name.endswith(".npz")
                                     or Path(name).exists())


def canonical(name: str) -> str:
    """A registered name as it is; a path made absolute (so a run's config reads anywhere).
    A name that is neither raises ZoddError listing both kinds."""
    if name in DATASETS:
        return name
    if is_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise ZoddError(f"invalid dataset: {name} does not exist (a folder tree or an .npz "
                            "file is expected)")
        return str(path.resolve())
    DATASETS.check(name, "dataset", extra=("PATH",))
    return name


def short_name(name: str) -> str:
    """A data set's name for file names and tables: a path's last component without suffix."""
    return Path(name).stem if is_path(name) else name


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` when given, else the default data dir."""
    return Path(data_dir) if data_dir else default_data_dir()


def load(name: str, data_dir: str | os.PathLike | None = None, image_size: int | None = None,
         test_fraction: float = 0.2, progress: Callable[[int, int], None] | None = None
         ) -> ImageData:
    """Load a data set by name or path (zodd.folder: an image-folder tree or an .npz); a
    missing data set raises ZoddError naming what is expected. ``image_size``: resize every
    image to this side (bilinear, antialiased); ``test_fraction``: for a folder tree with no
    train/ and test/, the share of each class held out as the test set (seed 0);
    ``progress(done, total)``: called while a folder's images are read."""
    root = data_root(data_dir)
    if is_path(name):
        from zodd.folder import read_path

        arrays = read_path(Path(canonical(name)), root / "cache", image_size, test_fraction,
                           progress)
        return _standardise(canonical(name), arrays.train, arrays.test, flip=False,
                            classes=arrays.classes)
    source = DATASETS[DATASETS.check(name, "data set")]
    train, test = source.read(root)
    if image_size is not None:
        from zodd.folder import resize

        train, test = (resize(train[0], image_size), train[1]), (resize(test[0], image_size),
                                                                 test[1])
    return _standardise(name, train, test, source.flip, source.classes)


def for_config(cfg: DistillConfig, data_dir: str | os.PathLike | None = None,
               progress: Progress | None = None) -> ImageData:
    """``cfg``'s data set (``data_dir`` overrides the config's); ``progress`` hears how far a
    folder's reading has got ("reading images")."""
    return load(cfg.dataset, data_dir or cfg.data_dir, **cfg.data_options(),
                progress=None if progress is None
                else lambda done, total: progress.update("reading images", done, total))


def _standardise(name: str, train: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], flip: bool = False,
                 classes: tuple[str, ...] = ()) -> ImageData:
    """uint8/float images [N, h, w(, ch)] in [0, 1] -> standardised float tensors [N, ch, h, w]."""
    def to_tensor(x: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x))
        t = t.float() / 255 if t.dtype == torch.uint8 else t.float()
        return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()

    train_x, test_x = to_tensor(train[0]), to_tensor(test[0])
    mean = tuple(train_x.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train_x.std(dim=(0, 2, 3)).tolist())
    train_y = torch.from_numpy(np.array(train[1])).long()
    test_y = torch.from_numpy(np.array(test[1])).long()
    raw = ImageData(name, train_x, train_y, test_x, test_y, int(train_y.max()) + 1, mean, std,
                    flip, tuple(classes))
    return replace(raw, train_x=raw.standardise(train_x), test_x=raw.standardise(test_x))


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.3,
                                              stratify=digits.target, random_state=0)
    return (x_tr, y_tr), (x_te, y_te)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ZoddError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ZoddError(f"{path} is truncated: expected {int(np.prod(dims))} values")
    return body.reshape(dims)


def _find_idx(name: str, root: Path) -> dict[str, Path] | None:
    dirs = [root, root / name, root / TORCHVISION_NAMES[name] / "raw", *SYSTEM_DIRS.get(name, [])]
    for d in dirs:
        found = {}
        for stem in IDX_FILES:
            for candidate in (d / stem, d / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def _idx(name: str, root: Path):
    files = _find_idx(name, root)
    if files is None:
        _download(name, root)
        files = _find_idx(name, root)
        if files is None:
            raise _missing(name, root)
    x_tr, y_tr, x_te, y_te = (_read_idx(files[s]) for s in IDX_FILES)
    return (x_tr / np.float32(255), y_tr), (x_te / np.float32(255), y_te)


def _torchvision_dataset(name: str, root: Path, train: bool, download: bool):
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_NAMES[name])
    if name == "svhn":
        return cls(str(root), split="train" if train else "test", download=download)
    return cls(str(root), train=train, download=download)


def _download(name: str, root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            _torchvision_dataset(name, root, train, download=True)
    except Exception:  # offline, refused or interrupted: the caller reports what is missing
        pass


def _torchvision(name: str, root: Path):
    splits = []
    for train in (True, False):
        try:
            ds = _torchvision_dataset(name, root, train, download=False)
        except Exception:
            _download(name, root)
            try:
                ds = _torchvision_dataset(name, root, train, download=False)
            except Exception:
                raise _missing(name, root) from None
        if name == "svhn":
            splits.append((ds.data.transpose(0, 2, 3, 1) / np.float32(255), ds.labels))
        else:
            splits.append((ds.data / np.float32(255), np.asarray(ds.targets)))
    return splits[0], splits[1]


def _missing(name: str, root: Path) -> ZoddError:
    expected = {
        "mnist": f"the four MNIST IDX files ({', '.join(IDX_FILES)}, optionally .gz) in {root}",
        "fashion-mnist": f"the four Fashion-MNIST IDX files ({', '.join(IDX_FILES)}, optionally "
                         f".gz) in {root} (or install the Debian package dataset-fashion-mnist)",
        "cifar10": f"cifar-10-batches-py/ (the python version of CIFAR-10) in {root}",
        "svhn": f"train_32x32.mat and test_32x32.mat in {root}",
    }[name]
    return ZoddError(f"data set {name!r} not found and could not be downloaded: expected "
                     f"{expected}; set --data-dir or $ZODD_DATA")


@dataclass(frozen=True)
class DataSource:
    """How a named data set is read (``read(root) -> (train, test)`` arrays of [0, 1] pixels)
    and what is true of it."""

    read: Callable[[Path], tuple]
    flip: bool  # a mirrored image keeps its class (clothes, vehicles; not digits or house numbers)
    classes: tuple[str, ...] = ()  # class names by label


DIGITS = tuple(str(d) for d in range(10))


DATASETS = Registry("dataset", [
    ("digits", DataSource(lambda root: _digits(), flip=False, classes=DIGITS),
     "scikit-learn's bundled 8x8 digits (no download)"),
    ("mnist", DataSource(lambda root: _idx("mnist", root), flip=False, classes=DIGITS),
     "MNIST, IDX files from the data dir or torchvision"),
    ("fashion-mnist", DataSource(lambda root: _idx("fashion-mnist", root), flip=True, classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
        "Bag", "Ankle boot")),
     "Fashion-MNIST, IDX files (also Debian's dataset-fashion-mnist) or torchvision"),
    ("cifar10", DataSource(lambda root: _torchvision("cifar10", root), flip=True, classes=(
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
        "truck")),
     "CIFAR-10 through torchvision"),
    ("svhn", DataSource(lambda root: _torchvision("svhn", root), flip=False, classes=DIGITS),
     "SVHN through torchvision"),
])
