"""Labels as a part of S (``--labels learn``): one label vector per stored image, learned with
the images (the kernel family's sets: KIP, FRePo, RFAD, RCIG).

**What is learned.** ``Y [N, classes]``, float, beside the stored images ``X``. It starts as
FRePo's ``init_proto`` makes it: the centred one-hot vector (``1 - 1/C`` for the class, ``-1/C``
elsewhere) divided by ``sqrt(C / 10)`` (FRePo's ``scale_y``; 1 for ten classes). A stored image
that decodes into several (``--representation multi``) hands its label to each of them.

**How S moves as one point.** Every way of moving S sees one tensor, the pair packed row by row:
``pack(X, Y) = [X.flatten(1) | Y]``, ``[N, ch*h*w + C]`` (``[N, L + C]`` for codes), class-major
as before. ``Labelled`` is the black box over packed candidates: it splits each row, decodes the
images and hands the objective both (``box.blocks(images, labels)``), so autograd's gradient
reaches both blocks through the split, a zero-order direction is one Gaussian vector over the
packed row, and a nevergrad optimiser searches the packed array. **How directions are split**:
they are not: each direction perturbs images and labels together with the same radius sigma, so
every finite difference measures both blocks at once, and the label block (C values an image
against ch*h*w) is estimated from the same queries as the images. The step then splits
the estimate back (``zodd.steppers.split``) and moves the two blocks as two parameters of the
optimiser, each with its own step size (``--label-lr``; by default the images' lr: with LAMB,
FRePo's optimiser, the two are scaled by their own trust ratios, which is how FRePo gives its
labels their own step).

Only objectives that read labels (``reads_labels``: krr, frepo, command) can learn them; the
others match per-class statistics in which a label vector has no part, and are refused.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from zodd.types import BlackBox, Registry, WrappedBox

LABELS = Registry("labels", [
    ("onehot", "onehot", "one class an image, fixed (every method but the kernel family's)"),
    ("learn", "learn", "one label vector an image, learned with the images (KIP, FRePo, RFAD, "
     "RCIG); starts as FRePo's centred one-hot"),
])


def initial(classes: int, per_class: int) -> Tensor:
    """FRePo's starting labels of a class-major set: the centred one-hot vectors divided by
    ``sqrt(classes / 10)``, ``[classes * per_class, classes]``."""
    return centred(torch.arange(classes).repeat_interleave(per_class), classes) / math.sqrt(
        classes / 10)


def centred(labels: Tensor, classes: int) -> Tensor:
    """The regression target of hard labels ``[M]``: centred one-hot ``[M, classes]``."""
    return F.one_hot(labels, classes).float() - 1.0 / classes


def soft_targets(labels: Tensor) -> Tensor:
    """Label vectors ``[N, C]`` as the probabilities a cross-entropy trains on: kept where they
    are probabilities already, else their softmax (FRePo's ``soft_cross_entropy_loss``, at
    temperature 1)."""
    sums = labels.sum(1)
    if (labels >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        return labels
    return labels.softmax(1)


def pack(x: Tensor, y: Tensor) -> Tensor:
    """``x [N, ...]`` and ``y [N, C]`` as one ``[N, x-values + C]`` tensor."""
    return torch.cat([x.reshape(len(x), -1), y], 1)


def unpack(packed: Tensor, stored_shape: tuple[int, ...], classes: int) -> tuple[Tensor, Tensor]:
    """``[..., N, D + C]`` -> (stored images ``[..., N, *stored_shape]``, labels
    ``[..., N, C]``)."""
    x, y = packed.split([packed.shape[-1] - classes, classes], -1)
    return x.unflatten(-1, stored_shape), y


class Labelled(WrappedBox):
    """A black box over packed candidates ``[K, N, D + C]``: each split into stored images and
    labels, the images decoded by ``rep`` (each label repeated to the images its stored image
    decodes into) and both handed to ``box`` (an objective that ``reads_labels``). Blocks and
    separability carry over; differentiable when ``box`` is."""

    def __init__(self, box: BlackBox, rep, stored_shape: tuple[int, ...], classes: int):
        self.box, self.rep, self.stored_shape, self.classes = box, rep, stored_shape, classes

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.box, "differentiable", False))

    def _evaluate(self, candidates: Tensor, blocks: bool) -> Tensor:
        x, y = unpack(candidates, self.stored_shape, self.classes)
        images = self.rep.decode(x)
        labels = y.repeat_interleave(images.shape[-4] // x.shape[-4], dim=-2)
        return self.box.blocks(images, labels) if blocks else self.box(images, labels)
