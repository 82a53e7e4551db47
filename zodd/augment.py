"""Siamese augmentation: one random affine transform per class and step, applied alike to the
real and the synthetic images of that class (and to every candidate of the step), so matching
compares like with like and finite differences see no augmentation noise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


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


def augment_batch(x: Tensor, gen: torch.Generator, flip: bool) -> Tensor:
    """An independent random affine transform for every image of ``x [N, ch, h, w]`` (for
    training networks on a synthetic set)."""
    theta = random_affine(x.shape[0], gen, flip)
    return apply_per_class(x[:, None], theta)[:, 0]
