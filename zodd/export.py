"""A zodd set written in another tool's layout (``zodd export``), so that tool evaluates it as
it evaluates its own sets.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from zodd.data import ImageData
from zodd.files import atomic_write
from zodd.labels import soft_targets
from zodd.sets import MTT_FILES, TOOL_NORMS
from zodd.synthetic import SyntheticSet
from zodd.types import Registry

EXPORTS = Registry("format", [
    ("dc", None, "a Dataset Condensation / DSA / DM result file {'data': [[images, labels]]}, "
     "normalised by the DC family's constants"),
    ("mtt", None, "a folder with MTT's images_best.pt + labels_best.pt, normalised by MTT's "
     "constants"),
])


def write(s: SyntheticSet, data: ImageData, format: str, out: Path) -> list[Path]:
    """``s`` (standardised like ``data``) in another tool's layout, its images normalised as
    that tool's code normalises ``data.name`` (``TOOL_NORMS``; the data set's own mean and std
    for any other), so that tool evaluates it as it evaluates its own sets. ``dc``: the file
    ``out``; ``mtt``: the folder ``out``. Each file is written whole or not at all. Learned
    label vectors are written as the probabilities the soft cross-entropy trains on (their
    softmax, as FRePo's ``soft_cross_entropy_loss``): those tools train with a cross-entropy,
    which reads float labels as probabilities."""
    EXPORTS.check(format, "format")
    images = s.images.detach().cpu().float()
    norms = TOOL_NORMS[format].get(data.name)
    if norms is not None:
        images = replace(data, mean=norms[0], std=norms[1]).standardise(data.denormalise(images))
    labels = s.labels.detach().cpu()
    labels = soft_targets(labels.float()) if labels.ndim == 2 else labels.long()
    if format == "dc":
        files = {out: {"data": [[images, labels]], "accs_all_exps": {}}}
    else:
        out.mkdir(parents=True, exist_ok=True)
        files = {out / MTT_FILES[0]: images, out / MTT_FILES[1]: labels}
    for path, payload in files.items():
        atomic_write(path, lambda f, payload=payload: torch.save(payload, f))
    return list(files)
