"""A user's own data set, from a path: an image-folder tree or an ``.npz`` array file.

* **Folder tree**: ``PATH/train/<class>/*.png|jpg|...`` and ``PATH/test/<class>/...``; or one
  tree ``PATH/<class>/...`` whose images are split per class into train and test (a fraction
  ``test_fraction`` of each class held out, seed 0). Class names are the folder names, sorted;
  files with other suffixes, and hidden files, are ignored. Images are read with Pillow: all
  greyscale -> one channel, else RGB. Every image must have the same square size unless
  ``image_size`` resizes them. The decoded arrays are cached (``cache/folder-<key>.npz``), keyed
  by the tree's file names, sizes and modification times and the options, so a changed tree is
  read again.
* **.npz**: ``x_train, y_train, x_test, y_test`` (images uint8 in 0..255 or float in [0, 1],
  ``[N, h, w]``, ``[N, h, w, ch]`` or ``[N, ch, h, w]``; integer labels), optionally ``classes``
  (names by label). Labels that are not 0..C-1 are mapped to their rank, and named by value.

Every problem (one class, an empty class, mixed sizes, an unreadable file, a missing key) is a
ZoddError of one line.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from zodd.files import atomic_write
from zodd.types import ZoddError

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
SPLIT_SEED = 0


@dataclass(frozen=True)
class Arrays:
    """Images in [0, 1] (float32, ``[N, h, w]`` or ``[N, h, w, ch]``) with labels, per split."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: tuple[str, ...]


def read_path(path: Path, cache: Path, image_size: int | None, test_fraction: float,
              progress: Callable[[int, int], None] | None = None) -> Arrays:
    if path.is_dir():
        return _read_tree(path, cache, image_size, test_fraction, progress)
    if path.suffix == ".npz":
        return _read_npz(path, image_size)
    raise ZoddError(f"invalid dataset: {path} is neither a folder of class folders nor an .npz "
                    "file")


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """``[N, h, w(, ch)]`` images -> ``[N, size, size(, ch)]`` (bilinear, antialiased), float32
    in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    nhwc = x.ndim == 4
    x = x.permute(0, 3, 1, 2) if nhwc else x[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False).clamp(0, 1)
    return (x.permute(0, 2, 3, 1) if nhwc else x[:, 0]).contiguous().numpy()


# --- .npz ------------------------------------------------------------------------------------

def _read_npz(path: Path, image_size: int | None) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise ZoddError(f"{path} lacks {', '.join(missing)} (an .npz data set holds "
                                f"{', '.join(NPZ_KEYS)}, optionally classes)")
            arrays = {k: f[k] for k in (*NPZ_KEYS, *(["classes"] if "classes" in f.files
                                                      else []))}
    except ZoddError:
        raise
    except Exception as exc:
        raise ZoddError(f"{path} is not a readable .npz file ({type(exc).__name__})") from None
    x_train, x_test = _hwc(arrays["x_train"], path, "x_train"), _hwc(arrays["x_test"], path,
                                                                      "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ZoddError(f"{path}: x_train images are {x_train.shape[1:]}, x_test's "
                        f"{x_test.shape[1:]}")
    y_train, y_test = (_labels(arrays[k], len(x), path, k) for k, x in
                       (("y_train", x_train), ("y_test", x_test)))
    values = np.unique(y_train)
    if not np.isin(y_test, values).all():
        raise ZoddError(f"{path}: y_test holds labels that y_train lacks")
    names = tuple(str(v) for v in values)
    if "classes" in arrays:
        given = [str(c) for c in np.asarray(arrays["classes"]).ravel()]
        if len(given) < int(values.max()) + 1 or values.min() < 0:
            raise ZoddError(f"{path}: classes names {len(given)} classes, the labels run to "
                            f"{int(values.max())}")
        names = tuple(given[int(v)] for v in values)
    y_train, y_test = np.searchsorted(values, y_train), np.searchsorted(values, y_test)
    _check_classes(names, np.bincount(y_train, minlength=len(names)), path)
    if image_size is not None:
        x_train, x_test = resize(x_train, image_size), resize(x_test, image_size)
    else:
        _check_square(x_train.shape[1:3], path)
    return Arrays((_unit(x_train, path), y_train), (_unit(x_test, path), y_test), names)


def _hwc(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``[N, h, w]``, ``[N, h, w, ch]`` or ``[N, ch, h, w]`` (ch 1, 3 or 4) -> ``[N, h, w]`` or
    ``[N, h, w, ch]``."""
    if x.dtype.kind not in "uif" or len(x) == 0:
        raise ZoddError(f"{path}: {key} must be a non-empty array of numbers, not {x.dtype}")
    if x.ndim == 3:
        return x
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            pass
        elif x.shape[1] in (1, 3, 4):
            x = x.transpose(0, 2, 3, 1)
        else:
            raise ZoddError(f"{path}: {key} has shape {x.shape}; expected [N, h, w, ch] or "
                            "[N, ch, h, w] with 1, 3 or 4 channels")
        x = x[..., :3] if x.shape[-1] == 4 else x  # drop an alpha channel
        return x[..., 0] if x.shape[-1] == 1 else x
    raise ZoddError(f"{path}: {key} has shape {x.shape}; expected [N, h, w], [N, h, w, ch] or "
                    "[N, ch, h, w]")


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.dtype.kind not in "ui" or y.ndim != 1 or len(y) != n:
        raise ZoddError(f"{path}: {key} must be {n} integer labels, one per image (got "
                        f"{y.dtype} {y.shape})")
    return y.astype(np.int64)


def _unit(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    x = x.astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ZoddError(f"{path}: float images must lie in [0, 1] (found {x.min():g} to "
                        f"{x.max():g}); store uint8 for 0..255")
    return x


def _check_square(hw: tuple[int, ...], where) -> None:
    if hw[0] != hw[1]:
        raise ZoddError(f"{where}: images are {hw[0]}x{hw[1]}; zodd's networks take square "
                        "images: pass --image-size N to resize them")


def _check_classes(names, counts, where) -> None:
    if len(names) < 2:
        raise ZoddError(f"{where}: a data set needs at least two classes (found {len(names)})")
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty:
        raise ZoddError(f"{where}: class {empty[0]!r} has no training images")


# --- folder trees ----------------------------------------------------------------------------

def _images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_folders(root: Path) -> dict[str, list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {p.name: _images_of(p) for p in folders}


def _read_tree(root: Path, cache: Path, image_size: int | None, test_fraction: float,
               progress) -> Arrays:
    split = (root / "train").is_dir() and (root / "test").is_dir()
    if split:
        train, test = _class_folders(root / "train"), _class_folders(root / "test")
        if set(test) - set(train):
            raise ZoddError(f"{root}/test has classes that {root}/train lacks: "
                            f"{', '.join(sorted(set(test) - set(train)))}")
    else:
        if not 0 < test_fraction < 1:
            raise ZoddError(f"invalid test-fraction: {test_fraction} (a tree without train/ and "
                            "test/ is split; the fraction must lie in (0, 1))")
        train, test = _class_folders(root), {}
    names = tuple(train)
    _check_classes(names, [len(train[n]) for n in names], root)
    files = [(p, i) for i, n in enumerate(names) for p in train[n]]
    test_files = [(p, names.index(n)) for n in test for p in test[n]]
    key = _tree_key(root, files + test_files, image_size, test_fraction if not split else None)
    cached = cache / f"folder-{key}.npz"
    arrays = _read_cache(cached, names)
    if arrays is not None:
        return arrays
    everything = _decode([p for p, _ in files + test_files], image_size, root, progress)
    labels = np.array([c for _, c in files + test_files], dtype=np.int64)
    x, y = everything[:len(files)], labels[:len(files)]
    if split:
        train_xy, test_xy = (x, y), (everything[len(files):], labels[len(files):])
        if len(test_files) == 0:
            raise ZoddError(f"{root}/test holds no images")
    else:
        held = _held_out(y, test_fraction, root, names)
        train_xy, test_xy = (x[~held], y[~held]), (x[held], y[held])
    arrays = Arrays(train_xy, test_xy, names)
    _write_cache(cached, arrays)
    return arrays


def _held_out(y: np.ndarray, fraction: float, root: Path, names) -> np.ndarray:
    """A boolean mask: ``fraction`` of each class (at least one image), drawn with seed 0."""
    rng = np.random.default_rng(SPLIT_SEED)
    held = np.zeros(len(y), dtype=bool)
    for c in range(len(names)):
        idx = np.flatnonzero(y == c)
        k = max(1, round(fraction * len(idx)))
        if k >= len(idx):
            raise ZoddError(f"{root}: class {names[c]!r} has {len(idx)} image(s), too few to "
                            f"hold out {fraction:g} of them and train on the rest")
        held[rng.choice(idx, size=k, replace=False)] = True
    return held


def _decode(paths: list[Path], image_size: int | None, root: Path, progress) -> np.ndarray:
    from PIL import Image

    images, sizes, modes = [], {}, set()
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im.load()
                grey = im.mode in ("1", "L", "I", "I;16", "F") or (
                    im.mode == "P" and _palette_is_grey(im))
                im = im.convert("L" if grey else "RGB")
                if image_size is not None:
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                images.append(im)
        except Exception as exc:
            raise ZoddError(f"{p} is not a readable image ({type(exc).__name__})") from None
        modes.add(images[-1].mode)
        sizes.setdefault(images[-1].size, p)
        if len(sizes) > 1:
            (s1, p1), (s2, p2) = list(sizes.items())[:2]
            raise ZoddError(f"{root}: images of different sizes ({p1.relative_to(root)} is "
                            f"{s1[0]}x{s1[1]}, {p2.relative_to(root)} {s2[0]}x{s2[1]}): pass "
                            "--image-size N to resize them")
        if progress is not None:
            progress(i + 1, len(paths))
    w, h = next(iter(sizes))
    _check_square((h, w), root)
    if "RGB" in modes:
        images = [im.convert("RGB") for im in images]
    return np.stack([np.asarray(im, dtype=np.uint8) for im in images]).astype(np.float32) / 255


def _palette_is_grey(im) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _tree_key(root: Path, files, image_size, test_fraction) -> str:
    h = hashlib.sha256(json.dumps([str(root), image_size, test_fraction]).encode())
    for p, c in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{c}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _read_cache(path: Path, names) -> Arrays | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            if tuple(str(n) for n in f["classes"]) != tuple(names):
                return None
            return Arrays((f["x_train"], f["y_train"]), (f["x_test"], f["y_test"]), tuple(names))
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(path: Path, arrays: Arrays) -> None:
    """Keep the decoded tree (as uint8); an unwritable cache only costs the next read."""
    to_byte = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(
            f, x_train=to_byte(arrays.train[0]), y_train=arrays.train[1],
            x_test=to_byte(arrays.test[0]), y_test=arrays.test[1],
            classes=np.array(arrays.classes)))
    except OSError:
        pass
