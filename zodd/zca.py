"""ZCA whitening as MTT's ``--zca`` does it, for sets saved whitened (``zodd evaluate
--pixels zca``): the whitening fit on a data set's training pixels, the data set with its images
whitened to match, and the test that tells a whitened set from a standardised one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zodd.data import ImageData

ZCA_EPS = 0.1  # MTT's K.enhance.ZCAWhitening(eps=0.1, compute_inv=True)
DETECT_IMAGES = 5000  # training images whose whitening the detection compares a set with


@dataclass(frozen=True)
class Zca:
    """ZCA whitening as MTT's ``--zca`` does it (kornia's ``ZCAWhitening(eps=0.1)``, fit on the
    training set's [0, 1] pixels, flattened to D numbers an image):

        mu = mean of x,   C = (x - mu)^T (x - mu) / (N - 1) = U diag(s) U^T,
        z = (x - mu) U diag((s + eps)^-1/2) U^T,   x = z U diag((s + eps)^1/2) U^T + mu.
    """

    mean: Tensor  # [D]
    forward: Tensor  # [D, D]
    inverse: Tensor  # [D, D]

    @classmethod
    def fit(cls, pixels: Tensor, eps: float = ZCA_EPS) -> "Zca":
        flat = pixels.flatten(1).double()
        mean = flat.mean(0)
        centred = flat - mean
        s, u = torch.linalg.eigh(centred.T @ centred / (len(flat) - 1))
        s = s.clamp(min=0)  # the covariance is semi-definite: rounding may leave -1e-17
        return cls(mean.float(), ((u * (s + eps).rsqrt()) @ u.T).float(),
                   ((u * (s + eps).sqrt()) @ u.T).float())

    def whiten(self, pixels: Tensor) -> Tensor:
        return ((pixels.flatten(1) - self.mean) @ self.forward).view(pixels.shape)

    def colour(self, z: Tensor) -> Tensor:
        """Whitened images -> [0, 1] pixels (the inverse of :meth:`whiten`)."""
        return (z.flatten(1) @ self.inverse + self.mean).view(z.shape)


@dataclass(frozen=True)
class WhitenedData(ImageData):
    """A data set whose images are ZCA-whitened (``zca``): evaluation trains and tests on them
    as MTT's ``--zca`` does; ``denormalise`` and ``standardise`` go between them and [0, 1]
    pixels, so the test set's shifts (noise, blur, inversion) and clusters are made on pixels."""

    zca: Zca | None = None

    def denormalise(self, x: Tensor) -> Tensor:
        return self.zca.colour(x)

    def standardise(self, pixels: Tensor) -> Tensor:
        return self.zca.whiten(pixels)


def whitened(data: ImageData) -> WhitenedData:
    """``data`` with train and test images ZCA-whitened by a :class:`Zca` fit on its training
    pixels (named ``NAME-zca``, so caches keyed by name keep it apart)."""
    train = data.denormalise(data.train_x)
    zca = Zca.fit(train)
    return WhitenedData(f"{data.name}-zca", zca.whiten(train), data.train_y,
                        zca.whiten(data.denormalise(data.test_x)), data.test_y, data.num_classes,
                        (0.0,) * data.channels, (1.0,) * data.channels, data.flip, data.classes,
                        zca=zca)


def neighbour_correlation(images: Tensor) -> float:
    """The correlation of horizontally neighbouring pixels, pooled over images and channels:
    about 0.9 for natural images, near 0 (or below) once they are whitened."""
    pairs = torch.stack([images[..., :-1].flatten(), images[..., 1:].flatten()]).double()
    return float(torch.corrcoef(pairs)[0, 1])


def looks_whitened(images: Tensor, data: ImageData) -> str:
    """Why ``images`` (as a file holds them) look ZCA-whitened rather than standardised ('' when
    they do not): their neighbouring pixels correlate nearer the data's whitened training images
    than its plain ones."""
    own = neighbour_correlation(images)
    pick = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
    train = data.denormalise(data.train_x[pick[:DETECT_IMAGES]])
    plain = neighbour_correlation(train)
    white = neighbour_correlation(Zca.fit(train).whiten(train))
    if not abs(own - white) < abs(own - plain):  # nearer the pixels, or undefined (flat data)
        return ""
    return (f"neighbouring pixels correlate {own:.2f}, nearer {data.name}'s whitened images "
            f"({white:.2f}) than its pixels ({plain:.2f})")
