"""Gradient estimators over black boxes: ``estimate(f, x, gen) -> Estimate``.

An estimator is a small frozen dataclass whose fields are its hyper-parameters; it samples what it
needs from ``gen``, calls the black box once with a batch of candidates, and combines the losses.
``ESTIMATORS`` maps the ``--estimator`` vocabulary to a factory taking keyword values
(``directions``, ``sigma``, ``lowres``, ``blockwise``, ``guided``: zodd.build.estimator).

The zero-order ones share two ways to cut the effective dimension d of S:

* **blockwise** (``--blockwise``): when the black box is ``separable`` (its ``blocks`` give one
  loss per class, and class b's loss depends only on class b's images, as for DM and GM), every
  class is perturbed in the same call and each class's images get the finite difference of their
  own block. One call then serves ``classes`` estimates of dimension d / classes each.
* **low-frequency directions** (``--lowres F``): directions are drawn at 1/F of the resolution and
  upsampled (nearest), so they span the F x F block-constant images only. A difference along
  such a direction reads the sum of the gradient over each block, F^2 times its mean, so every
  zero-order estimator here divides its estimate by F^2: then E[g] = P grad f, with P the
  projection onto block-constant images (each block gets the gradient's mean over it). Biased
  towards smooth changes of S, with an F^2 smaller dimension to search, and at the gradient's
  scale, so a step size that suits full-resolution directions suits these too.

And ``gaussian`` takes a guide (``--surrogate``): the gradient of a differentiable surrogate
objective at S, e.g. DM while the target is a score with no gradient. Its unit direction u (per
class when blockwise) gets its own finite difference, and the random directions are drawn in the
complement of u:

    g = D_u f u + 1/M sum_l D_{v_l} f v_l,   v_l = (I - u u^T) z_l,  z_l ~ N(0, I)

(the difference along u is taken at the distance a random direction reaches, sigma sqrt(d),
and divided by it). E[g] = u u^T grad f + (I - u u^T) grad f = grad f: unbiased whatever the guide, with the part of
the gradient along u measured without sampling noise; the better the surrogate agrees with the
target, the smaller the variance left (M + 2 queries). This keeps the step size of the unguided
estimator, unlike Guided ES's reweighted sampling, whose scale depends on the subspace's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from zodd.types import BlackBox, Estimate, EvaluationError, Registry, ZoddError


@dataclass(frozen=True)
class Autograd:
    """The exact gradient, for differentiable objectives (one query per step)."""

    name: str = "autograd"

    def estimate(self, f: BlackBox, x: Tensor, gen: torch.Generator) -> Estimate:
        if not getattr(f, "differentiable", False):
            raise ZoddError("the autograd estimator needs a differentiable objective; "
                            "choose a zero-order estimator such as --estimator gaussian")
        x = x.detach().requires_grad_(True)
        loss = f(x[None])[0]
        (g,) = torch.autograd.grad(loss, x)
        return Estimate(loss.detach(), g, queries=1)  # a tensor: no host sync per step


def lowres_directions(m: int, shape: torch.Size, factor: int, gen: torch.Generator,
                      dtype: torch.dtype) -> Tensor:
    """``m`` Gaussian directions of ``shape`` ([N, ch, h, w] or flat), drawn at 1/factor of the
    resolution and upsampled (nearest)."""
    if factor == 1 or len(shape) < 3:
        return torch.randn((m, *shape), generator=gen, dtype=dtype)
    *lead, h, w = shape
    z = torch.randn((m * math.prod(lead[:-1]), lead[-1], h // factor, w // factor), generator=gen,
                    dtype=dtype)
    return F.interpolate(z, scale_factor=factor, mode="nearest").reshape(m, *shape)


def _separable(f: BlackBox) -> bool:
    return (bool(getattr(f, "separable", False)) and callable(getattr(f, "blocks", None))
            and getattr(f, "num_classes", None) is not None)


def _evaluate(f: BlackBox, candidates: Tensor, blockwise: bool) -> Tensor:
    """Losses [K] or, blockwise, [K, classes]."""
    with torch.no_grad():
        return f.blocks(candidates) if blockwise else f(candidates)


def _per_image(values: Tensor, n: int) -> Tensor:
    """[M] or [M, classes] -> [M, n]: each image gets its class's value (S is class-major)."""
    if values.ndim == 1:
        return values[:, None].expand(-1, n)
    return values.repeat_interleave(n // values.shape[1], dim=1)


def _combine(slopes: Tensor, ok: Tensor, v: Tensor, factor: int = 1) -> Tensor:
    """sum_l slope_l v_l / (number of usable directions); slopes [M] or [M, n] per image.
    ``factor``: the directions' --lowres factor F, whose F^2 is divided out (module docstring)."""
    slopes = torch.where(ok.view(-1, *([1] * (slopes.ndim - 1))), slopes, torch.zeros_like(slopes))
    if slopes.ndim == 1:
        g = torch.tensordot(slopes, v, dims=1)
    else:
        g = torch.einsum("mn,mn...->n...", slopes, v)
    return g / ok.sum() / factor ** 2


def _usable(f0: Tensor, fv: Tensor) -> Tensor:
    """Directions whose values are all finite; none usable (or f(x) failed) skips the step."""
    ok = torch.isfinite(fv) if fv.ndim == 1 else torch.isfinite(fv).all(1)
    if not torch.isfinite(f0).all() or not ok.any():
        raise EvaluationError("no usable value: f(S) or every perturbed set failed")
    return ok


@dataclass(frozen=True)
class _ZeroOrder:
    directions: int = 32
    sigma: float = 0.01
    lowres: int = 1
    blockwise: bool = False
    guided: bool = False  # a surrogate's gradient comes with each call (Gaussian only)

    def _directions(self, m: int, x: Tensor, gen: torch.Generator) -> Tensor:
        return lowres_directions(m, x.shape, self.lowres, gen, x.dtype).to(x.device)

    def _factor(self, x: Tensor) -> int:
        """The resolution factor the directions of ``x`` are drawn at (see lowres_directions)."""
        return self.lowres if x.ndim >= 3 else 1

    def _blockwise(self, f: BlackBox, x: Tensor) -> bool:
        return self.blockwise and x.ndim == 4 and _separable(f)

    def queries(self) -> int:
        return self.directions + 1 + self.guided


def _unit_rows(g: Tensor, rows: int) -> Tensor:
    """``g`` split into ``rows`` equal row blocks, each scaled to unit norm (a zero block stays
    zero); returned in ``g``'s shape."""
    flat = g.reshape(rows, -1)
    norms = flat.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, flat / norms.clamp_min(1e-30), torch.zeros_like(flat)).view_as(g)


def _project_out(v: Tensor, u: Tensor, rows: int) -> Tensor:
    """Each direction of ``v [M, *u.shape]`` minus its component along ``u``, block by block."""
    m = v.shape[0]
    vf, uf = v.reshape(m, rows, -1), u.reshape(rows, -1)
    return (vf - (vf * uf).sum(-1, keepdim=True) * uf).view_as(v)


@dataclass(frozen=True)
class Gaussian(_ZeroOrder):
    """Gaussian smoothing, forward differences (the paper's Algorithm 2, eq. 17).

    g = 1/M sum_l (f(x + sigma v_l) - f(x)) / sigma * v_l,  v_l ~ N(0, I);
    f(x) and the M perturbed sets go to the black box in one call (M + 1 queries), and f(x) is
    reused as the reported loss. Failed directions (NaN after retries) are left out.
    """

    name: str = "gaussian"

    def estimate(self, f: BlackBox, x: Tensor, gen: torch.Generator,
                 guide: Tensor | None = None) -> Estimate:
        """``guide``: a surrogate's gradient at ``x`` (see the module docstring); required when
        the estimator was built ``guided``, refused otherwise."""
        if (guide is not None) != self.guided:
            raise ValueError("a guided estimator needs a guide, an unguided one takes none")
        x = x.detach()
        v = self._directions(self.directions, x, gen)
        blockwise = self._blockwise(f, x)
        extra: list[Tensor] = []
        if guide is not None:
            rows = getattr(f, "num_classes", 1) if blockwise else 1
            u = _unit_rows(guide.detach().to(x.dtype), rows)
            v = _project_out(v, u, rows)
            # perturb along u as far as a random direction reaches (|z| ~ sqrt(block size)), so
            # that a piecewise-constant score sees the guided step as often as a random one
            reach = math.sqrt(x.numel() / rows)
            extra = [x[None] + self.sigma * reach * u[None]]
        losses = _evaluate(f, torch.cat([x[None], *extra, x[None] + self.sigma * v]), blockwise)
        f0, fv = losses[0], losses[1 + len(extra):]
        ok = _usable(f0, fv)
        slopes = (fv - f0) / self.sigma
        g = _combine(_per_image(slopes, len(x)) if blockwise else slopes, ok, v, self._factor(x))
        if guide is not None:
            along = (losses[1] - f0) / (self.sigma * reach)  # [] or, blockwise, [classes]
            if not torch.isfinite(along).all():
                raise EvaluationError("the guided direction's value failed")
            g = g + (_per_image(along[None], len(x))[0].view(-1, *[1] * (x.ndim - 1)) * u
                     if blockwise else along * u)
        return Estimate(float(f0.sum()), g, queries=self.queries(),
                        extra={"failed_directions": int((~ok).sum())})


@dataclass(frozen=True)
class Antithetic(_ZeroOrder):
    """Central differences over Gaussian directions: g = 1/M sum_l (f(x + sigma v_l) -
    f(x - sigma v_l)) / (2 sigma) v_l. Exact on quadratics for any sigma; 2M + 1 queries (f(x) is
    evaluated for the reported loss)."""

    name: str = "antithetic"

    def estimate(self, f: BlackBox, x: Tensor, gen: torch.Generator) -> Estimate:
        x = x.detach()
        m = self.directions
        v = self._directions(m, x, gen)
        blockwise = self._blockwise(f, x)
        losses = _evaluate(f, torch.cat([x[None], x[None] + self.sigma * v,
                                         x[None] - self.sigma * v]), blockwise)
        f0, plus, minus = losses[0], losses[1:m + 1], losses[m + 1:]
        ok = _usable(f0, plus + minus)
        slopes = self._slopes(plus, minus, ok)
        g = _combine(_per_image(slopes, len(x)) if blockwise else slopes, ok, v, self._factor(x))
        return Estimate(float(f0.sum()), g, queries=self.queries(),
                        extra={"failed_directions": int((~ok).sum())})

    def _slopes(self, plus: Tensor, minus: Tensor, ok: Tensor) -> Tensor:
        """Per direction (and class block), what multiplies v_l; ``ok``: usable pairs."""
        return (plus - minus) / (2 * self.sigma)

    def queries(self) -> int:
        return 2 * self.directions + 1


def centred_ranks(values: Tensor) -> Tensor:
    """Each column's values replaced by their ranks scaled to [-0.5, 0.5] (the lowest value
    -0.5); ties get distinct ranks in order of position. Invariant to any strictly increasing
    transform of the values."""
    n = values.shape[0]
    ranks = torch.empty_like(values)
    order = values.argsort(dim=0, stable=True)
    ranks.scatter_(0, order, torch.arange(n, dtype=values.dtype, device=values.device)
                   .view(-1, *[1] * (values.ndim - 1)).expand_as(values).contiguous())
    return ranks / max(n - 1, 1) - 0.5


@dataclass(frozen=True)
class ES(Antithetic):
    """OpenES with rank-based fitness shaping (Salimans et al. 2017; the estimator of the one
    published zero-order distillation, HaDES): antithetic pairs x +- sigma v_l, the 2M losses
    replaced by their centred ranks r (zodd.estimators.centred_ranks, per class block when
    blockwise), and

        g = 1/(M sigma) sum_l (r(x + sigma v_l) - r(x - sigma v_l)) / 2 * v_l.

    g points where the losses rise, in rank units, not the loss's: it ignores the scale of the
    scores and their outliers, and is unchanged by any strictly increasing transform of them (a
    score in percent or in log-odds gives the same step). Pair it with a scale-free step rule
    (``--optimizer adam``, the default for this estimator). 2M + 1 queries (f(x) is the reported
    loss); a pair with a failed value is left out.
    """

    name: str = "es"

    def _slopes(self, plus: Tensor, minus: Tensor, ok: Tensor) -> Tensor:
        pairs, both = torch.cat([plus, minus]), torch.cat([ok, ok])
        ranks = torch.zeros_like(pairs)
        ranks[both] = centred_ranks(pairs[both])
        m = len(plus)
        return (ranks[:m] - ranks[m:]) / (2 * self.sigma)


def _groups(f: BlackBox, blockwise: bool) -> int:
    """Independent blocks of S: its classes when blockwise, else one."""
    return int(f.num_classes) if blockwise else 1


@dataclass(frozen=True)
class Sphere(_ZeroOrder):
    """Directions uniform on the unit sphere (of each class block when blockwise), forward
    differences: g = D/M sum_l (f(x + sigma u_l) - f(x)) / sigma u_l, D the block's size.
    Fixed-length perturbations (no Gaussian tails); M + 1 queries."""

    name: str = "sphere"

    def estimate(self, f: BlackBox, x: Tensor, gen: torch.Generator) -> Estimate:
        x = x.detach()
        blockwise = self._blockwise(f, x)
        v = self._directions(self.directions, x, gen)
        flat = v.reshape(self.directions, _groups(f, blockwise), -1)
        u = (flat / flat.norm(dim=-1, keepdim=True)).reshape(v.shape)
        losses = _evaluate(f, torch.cat([x[None], x[None] + self.sigma * u]), blockwise)
        f0, fv = losses[0], losses[1:]
        ok = _usable(f0, fv)
        slopes = flat.shape[-1] * (fv - f0) / self.sigma
        g = _combine(_per_image(slopes, len(x)) if blockwise else slopes, ok, u, self._factor(x))
        return Estimate(float(f0.sum()), g, queries=self.queries(),
                        extra={"failed_directions": int((~ok).sum())})


@dataclass(frozen=True)
class Coordinate(_ZeroOrder):
    """Central finite differences along M random coordinates (without replacement, per class
    block when blockwise), scaled by the number of coordinates over M so that E[g] is the
    gradient (exactly, on quadratics); 2M + 1 queries. With --lowres a coordinate is an F x F
    pixel block."""

    name: str = "coordinate"

    def estimate(self, f: BlackBox, x: Tensor, gen: torch.Generator) -> Estimate:
        x = x.detach()
        m = self.directions
        blockwise = self._blockwise(f, x)
        groups = _groups(f, blockwise)
        factor = self.lowres if x.ndim == 4 else 1
        per_group = x.numel() // groups // factor ** 2
        if m > per_group:
            raise ZoddError(f"invalid directions: {m} coordinates asked, only {per_group} "
                            "to choose from")
        picks = torch.stack([torch.randperm(per_group, generator=gen)[:m]
                             for _ in range(groups)], 1)  # [M, groups]
        e = torch.zeros(m, groups, per_group, dtype=x.dtype)
        e = e.scatter_(2, picks[..., None], 1.0).to(x.device)
        if factor == 1:
            v = e.reshape(m, *x.shape)
        else:
            n, ch, h, w = x.shape
            low = e.reshape(m * n, ch, h // factor, w // factor)
            v = F.interpolate(low, scale_factor=factor, mode="nearest").reshape(m, *x.shape)
        losses = _evaluate(f, torch.cat([x[None], x[None] + self.sigma * v,
                                         x[None] - self.sigma * v]), blockwise)
        f0, plus, minus = losses[0], losses[1:m + 1], losses[m + 1:]
        ok = _usable(f0, plus + minus)
        slopes = per_group * (plus - minus) / (2 * self.sigma)
        g = _combine(_per_image(slopes, len(x)) if blockwise else slopes, ok, v, factor)
        return Estimate(float(f0.sum()), g, queries=self.queries(),
                        extra={"failed_directions": int((~ok).sum())})

    def queries(self) -> int:
        return 2 * self.directions + 1


ESTIMATORS = Registry("estimator", [
    ("autograd", lambda **_: Autograd(), "the exact gradient (differentiable objectives)"),
    ("gaussian", lambda directions, sigma, lowres, blockwise, guided=False, **_: Gaussian(
        directions, sigma, lowres, blockwise, guided=guided),
     "Gaussian smoothing, forward differences (Algorithm 2; M + 1 queries)"),
    ("antithetic", lambda directions, sigma, lowres, blockwise, **_: Antithetic(
        directions, sigma, lowres, blockwise),
     "central differences over Gaussian directions (2M + 1 queries)"),
    ("es", lambda directions, sigma, lowres, blockwise, **_: ES(directions, sigma, lowres,
                                                               blockwise),
     "OpenES: antithetic pairs, rank-shaped losses (invariant to rescaling the score; 2M + 1 "
     "queries; Adam by default)"),
    ("sphere", lambda directions, sigma, lowres, blockwise, **_: Sphere(directions, sigma, lowres,
                                                                       blockwise),
     "directions uniform on the sphere, forward differences (M + 1 queries)"),
    ("coordinate", lambda directions, sigma, lowres, blockwise, **_: Coordinate(
        directions, sigma, lowres, blockwise),
     "central differences along M random coordinates (2M + 1 queries)"),
])
