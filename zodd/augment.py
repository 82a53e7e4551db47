"""Siamese augmentation: one random transform per group (a class, for matching) and step,
applied alike to the real and the synthetic images of that group (and to every candidate of the
step), so matching compares like with like and finite differences see no augmentation noise.
The same transforms, drawn once per image, augment the networks trained on a set.

``AUGMENTS`` (``--augment``):

* ``affine``: a random scale (±20 %), rotation (±15°), shift (±12.5 %) and, where the data set
  allows, horizontal flip, composed into one affine warp (zodd's original augmentation);
* ``dsa``: Differentiable Siamese Augmentation (Zhao & Bilen, 2021) in its default "single"
  mode: each group gets one operation drawn from colour (brightness + saturation + contrast),
  crop (an integer shift of up to 1/8 of the side, zero padded), cutout (a zeroed square of half
  the side), flip (where allowed), scale (each axis in [1/1.2, 1.2]) and rotation (±15°), with
  DSA's published ranges;
* ``none``.

Every draw comes from the generator passed in (the run's), consumes the same number of values
whatever is chosen, and every operation is differentiable in the images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from zodd.types import Registry


def random_affine(num: int, gen: torch.Generator, flip: bool, scale: float = 0.2,
                  rotate_deg: float = 15.0, shift: float = 0.125) -> Tensor:
    """``num`` random affine matrices [num, 2, 3] (scale, rotation, shift, optional h-flip)."""
    u = torch.rand(num, 4, generator=gen) * 2 - 1
    s = 1 + scale * u[:, 0]
    a = math.radians(rotate_deg) * u[:, 1]
    sign = torch.ones(num)
    if flip:
        sign = torch.where(torch.rand(num, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(a) * s, torch.sin(a) * s
    row0 = torch.stack([cos * sign, -sin, 2 * shift * u[:, 2]], 1)
    row1 = torch.stack([sin * sign, cos, 2 * shift * u[:, 3]], 1)
    return torch.stack([row0, row1], 1)


def apply_per_class(x: Tensor, theta: Tensor) -> Tensor:
    """Warp ``x [..., classes, n, ch, h, w]`` with ``theta[c]`` for every image of class c."""
    classes, n = x.shape[-5], x.shape[-4]
    lead = x.shape[:-5]
    flat = x.reshape(-1, *x.shape[-3:])
    reps = flat.shape[0] // (classes * n)
    t = theta.to(x.device, x.dtype).repeat_interleave(n, 0).repeat(reps, 1, 1)
    grid = F.affine_grid(t, list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(*lead, classes, n, *x.shape[-3:])


@dataclass(frozen=True)
class Affine:
    """One affine warp per group (``random_affine``)."""

    theta: Tensor  # [groups, 2, 3]

    @classmethod
    def draw(cls, groups: int, gen: torch.Generator, flip: bool) -> "Affine":
        return cls(random_affine(groups, gen, flip))

    def __call__(self, x: Tensor) -> Tensor:
        """``x [..., groups, n, ch, h, w]``, group g warped by ``theta[g]``."""
        return apply_per_class(x, self.theta)


# DSA's operations and published ranges (ParamDiffAug of the reference code)
DSA_OPS = ("colour", "crop", "cutout", "flip", "scale", "rotate")
DSA_BRIGHTNESS, DSA_SATURATION, DSA_CONTRAST = 1.0, 2.0, 0.5
DSA_CROP, DSA_CUTOUT, DSA_SCALE, DSA_ROTATE_DEG = 0.125, 0.5, 1.2, 15.0


@dataclass(frozen=True)
class DSA:
    """One DSA operation per group (module docstring). ``op[g]`` indexes ``DSA_OPS``; the
    parameters of every operation are drawn for every group, and only the chosen one acts."""

    op: Tensor  # [groups] long
    colour: Tensor  # [groups, 3]: brightness shift, saturation factor, contrast factor
    theta: Tensor  # [groups, 2, 3]: the crop, flip, scale or rotation as an affine warp
    cutout: Tensor  # [groups, 2]: the cut square's centre, in fractions of the side

    @classmethod
    def draw(cls, groups: int, gen: torch.Generator, flip: bool) -> "DSA":
        ops = [i for i, name in enumerate(DSA_OPS) if flip or name != "flip"]
        op = torch.tensor(ops)[torch.randint(len(ops), (groups,), generator=gen)]
        u = torch.rand(groups, 10, generator=gen)
        colour = torch.stack([(u[:, 0] - 0.5) * DSA_BRIGHTNESS, u[:, 1] * DSA_SATURATION,
                              u[:, 2] + DSA_CONTRAST], 1)
        eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(groups, 1, 1)
        crop = eye.clone()  # a shift in [-1/8, 1/8] of the side; rounded to whole pixels on use
        crop[:, :, 2] = (u[:, 3:5] * 2 - 1) * DSA_CROP
        mirror = eye.clone()
        mirror[:, 0, 0] = torch.where(u[:, 5] < 0.5, -1.0, 1.0)
        scaled = eye.clone()
        low = 1 / DSA_SCALE
        scaled[:, 0, 0], scaled[:, 1, 1] = (u[:, 6:8] * (DSA_SCALE - low) + low).unbind(1)
        a = (u[:, 8] * 2 - 1) * math.radians(DSA_ROTATE_DEG)
        rotated = torch.stack([torch.stack([a.cos(), -a.sin(), 0 * a], 1),
                               torch.stack([a.sin(), a.cos(), 0 * a], 1)], 1)
        theta = eye
        for name, warp in (("crop", crop), ("flip", mirror), ("scale", scaled),
                           ("rotate", rotated)):
            theta = torch.where((op == DSA_OPS.index(name))[:, None, None], warp, theta)
        cutout = torch.stack([u[:, 9], torch.rand(groups, generator=gen)], 1)
        return cls(op, colour, theta, cutout)

    def _is(self, names: tuple[str, ...], x: Tensor) -> Tensor:
        """Whether each group's operation is among ``names``, shaped to broadcast over x."""
        hit = torch.zeros_like(self.op, dtype=torch.bool)
        for name in names:
            hit |= self.op == DSA_OPS.index(name)
        return hit.to(x.device).view(-1, 1, 1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        """``x [..., groups, n, ch, h, w]``, group g transformed by its operation; the other
        groups pass through unchanged (bit for bit)."""
        h, w = x.shape[-2:]
        c = self.colour.to(x.device, x.dtype).view(-1, 3, 1, 1, 1, 1).unbind(1)
        coloured = x + c[0]
        grey = coloured.mean(-3, keepdim=True)
        coloured = (coloured - grey) * c[1] + grey
        mean = coloured.mean((-3, -2, -1), keepdim=True)
        coloured = (coloured - mean) * c[2] + mean
        out = torch.where(self._is(("colour",), x), coloured, x)
        theta = self.theta.clone()
        side = torch.tensor([w, h], dtype=theta.dtype)
        is_crop = self.op == DSA_OPS.index("crop")  # whole-pixel shifts (2k/side in grid units)
        theta[is_crop, :, 2] = torch.round(theta[is_crop, :, 2] * side / 2) * 2 / side
        warped = apply_per_class(out, theta)
        out = torch.where(self._is(("crop", "flip", "scale", "rotate"), x), warped, out)
        centre = (self.cutout * torch.tensor([h, w])).long().to(x.device)  # [groups, 2]
        half = int(DSA_CUTOUT * h) // 2, int(DSA_CUTOUT * w) // 2
        rows = torch.arange(h, device=x.device)[None, :] - centre[:, :1]
        cols = torch.arange(w, device=x.device)[None, :] - centre[:, 1:]
        keep = ~((rows.abs() < max(half[0], 1))[:, :, None] & (cols.abs() < max(half[1], 1))
                 [:, None, :])  # [groups, h, w]
        cut = out * keep.to(x.dtype)[:, None, None]
        return torch.where(self._is(("cutout",), x), cut, out)


AUGMENTS = Registry("augment", [
    ("affine", Affine, "one random scale/rotation/shift (and flip where allowed) per class "
     "and step"),
    ("dsa", DSA, "Differentiable Siamese Augmentation: one of colour, crop, cutout, flip, "
     "scale, rotation per class and step"),
    ("none", None, "no augmentation"),
])


def draw(kind: str, groups: int, gen: torch.Generator, flip: bool):
    """A transform of ``groups`` groups (None for ``none``), called on
    ``[..., groups, n, ch, h, w]``."""
    maker = AUGMENTS[kind]
    return None if maker is None else maker.draw(groups, gen, flip)


def augment_batch(x: Tensor, gen: torch.Generator, flip: bool, kind: str = "affine") -> Tensor:
    """An independent random transform of kind ``kind`` for every image of ``x [N, ch, h, w]``
    (for training networks on a synthetic set)."""
    transform = draw(kind, x.shape[0], gen, flip)
    return x if transform is None else transform(x[:, None])[:, 0]
