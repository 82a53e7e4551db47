"""How S is stored (``--representation``): the tensor the estimators and optimisers act on, and
its differentiable decoding into the images the objectives, the robust updater and the
evaluation see.

* ``pixel``: S is its images (decoding is the identity).
* ``multi`` (``--factor F``, default 2): IDC's multi-formation (Kim et al., 2022). The stored
  tensor keeps the IPC budget, IPC full-size images per class; each decodes into its F x F
  tiles, each resized (bilinear) to full size, so a class holds IPC * F^2 training images of
  coarser detail. The real initialisation encodes F^2 real images into each stored image
  (each downsampled to a tile, area averaging), as IDC does.
* ``latent`` (``--latent L``, default 32): each image is a code of L numbers, stored as
  ``[N, L, 1, 1]``, decoded by the data set's learned prior (zodd.prior: a small autoencoder
  trained on the training images, cached); the real initialisation encodes real images. A
  zero-order estimate then searches L numbers an image instead of ch x h x w pixels.

Decoded images are ordered like stored ones: class-major, the F^2 images of one stored image
together, row-major over its tiles. Class c's decoded images depend only on class c's stored
images, so per-class blocks and separability carry over.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zodd.types import BlackBox, Registry, WrappedBox


@dataclass(frozen=True)
class Pixel:
    """Each representation declares what it needs and what a run stores of it: ``of(factor,
    prior)`` makes it from the run's settings; ``needs_prior``, whether it decodes through the
    data set's learned prior (zodd.prior; the run loads or trains it); ``has_pixels``, whether
    the stored tensor is images (a zero-order estimator may then draw coarser directions);
    ``values_per_image(cfg, data)``, the numbers one stored item holds; ``record()``, how
    representation.pt says it decodes (None: nothing beyond synthetic.pt); and ``shows_stored``,
    whether grid.png pictures the stored tensor (images) or the decoded set."""

    needs_prior = False
    has_pixels = True
    shows_stored = False

    @classmethod
    def of(cls, factor: int, prior: nn.Module | None):
        return cls()

    @staticmethod
    def values_per_image(cfg, data) -> int:
        return data.channels * data.image_size ** 2

    @property
    def per_image(self) -> int:
        """Decoded images per stored image."""
        return 1

    def record(self) -> dict | None:
        return None

    def decode(self, x: Tensor) -> Tensor:
        return x

    def encode(self, images: Tensor) -> Tensor:
        return images

    def stored_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one stored item, for images of ``image_shape`` (ch, h, w)."""
        return tuple(image_shape)


@dataclass(frozen=True)
class Multi:
    factor: int = 2
    needs_prior = False
    has_pixels = True
    shows_stored = True
    values_per_image = Pixel.values_per_image

    @classmethod
    def of(cls, factor: int, prior: nn.Module | None):
        return cls(factor)

    @property
    def per_image(self) -> int:
        return self.factor ** 2

    def record(self) -> dict:
        return {"name": "multi", "factor": self.factor}

    def stored_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape)

    def decode(self, x: Tensor) -> Tensor:
        """``x [..., N, ch, h, w]`` -> ``[..., N * F^2, ch, h, w]``."""
        f, (ch, h, w) = self.factor, x.shape[-3:]
        th, tw = h // f, w // f
        tiles = x.reshape(-1, ch, f, th, f, tw).permute(0, 2, 4, 1, 3, 5).reshape(-1, ch, th, tw)
        full = F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)
        return full.reshape(*x.shape[:-4], x.shape[-4] * f * f, ch, h, w)

    def encode(self, images: Tensor) -> Tensor:
        """``[N * F^2, ch, h, w]`` -> ``[N, ch, h, w]``: each group of F^2 images shrunk to
        tiles and laid out row-major (decoding gives them back at tile resolution)."""
        f, (ch, h, w) = self.factor, images.shape[-3:]
        tiles = F.adaptive_avg_pool2d(images, (h // f, w // f))
        return tiles.reshape(-1, f, f, ch, h // f, w // f).permute(0, 3, 1, 4, 2, 5).reshape(
            -1, ch, h, w)


@dataclass(frozen=True, eq=False)
class Latent:
    prior: nn.Module  # zodd.prior.Autoencoder, frozen: encode [N, ch, s, s] <-> decode [N, L]
    needs_prior = True
    has_pixels = False
    shows_stored = False

    @classmethod
    def of(cls, factor: int, prior: nn.Module | None):
        if prior is None:
            raise ValueError("the latent representation needs its prior (zodd.prior)")
        return cls(prior)

    @staticmethod
    def values_per_image(cfg, data) -> int:
        return cfg.latent

    @property
    def per_image(self) -> int:
        return 1

    def record(self) -> dict:
        return {"name": "latent", "latent": self.prior.latent}

    def stored_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.prior.latent, 1, 1)

    def decode(self, x: Tensor) -> Tensor:
        """``x [..., N, L, 1, 1]`` -> images ``[..., N, ch, s, s]`` (differentiable in x)."""
        images = self.prior.decode(x.reshape(-1, x.shape[-3]))
        return images.reshape(*x.shape[:-3], *images.shape[1:])

    def encode(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.prior.encode(images)[..., None, None]


REPRESENTATIONS = Registry("representation", [  # classes: of(factor, prior) makes one
    ("pixel", Pixel, "S is its images"),
    ("multi", Multi, "IPC stored images per class, each decoding into its factor x factor tiles "
     "resized to full size (IDC's multi-formation)"),
    ("latent", Latent, "each image a code of --latent numbers, decoded by the data set's "
     "learned prior (an autoencoder zodd trains once and caches)"),
])


class Decoded(WrappedBox):
    """A black box over stored tensors: ``box`` evaluated on their decoded images (blocks and
    separability carry over: decoding keeps classes apart). Differentiable when ``box`` is, so
    the exact gradient flows through the decoding to the stored tensor."""

    def __init__(self, box: BlackBox, rep):
        self.box, self.rep = box, rep

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.box, "differentiable", False))

    def _evaluate(self, candidates: Tensor, blocks: bool) -> Tensor:
        decoded = self.rep.decode(candidates)
        return self.box.blocks(decoded) if blocks else self.box(decoded)


def decoded(box: BlackBox, rep) -> BlackBox:
    """``box`` over ``rep``'s stored tensors (``box`` itself for pixels)."""
    return box if isinstance(rep, Pixel) else Decoded(box, rep)
