"""The floor under zodd's iteration: the same arithmetic in plain torch, with no zodd code.

One iteration of a distillation is, whatever the code around it: (a network built, when the
schedule asks for a fresh one), a real batch drawn per class, the network's update on it where
the row has an updater (forward, backward, SGD step; the CVaR terms' arithmetic is negligible
and left out), one Siamese affine warp per class applied to the real batch and to S, the
matching objective's pass over the real batch (DM: embeddings; GM: per-class gradients), then S's
forward and backward (autograd) or M + 1 candidate sets' forward (Gaussian, forward
differences), and an SGD step on S. ``BareLoop.iteration()`` does exactly that, nothing else:
what zodd adds on top of it is overhead (``benchmarks/speed.py --grid`` puts the two side by
side).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def convnet(channels: int, classes: int, size: int, width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = channels
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width),
                   nn.ReLU(inplace=True), nn.AvgPool2d(2)]
        c = width
    features = nn.Sequential(*layers, nn.Flatten())
    return nn.Sequential(features, nn.Linear(width * (size >> depth) ** 2, classes))


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``x [..., classes, n, ch, h, w]`` warped by ``theta[c]`` per class."""
    classes, n = x.shape[-5], x.shape[-4]
    flat = x.reshape(-1, *x.shape[-3:])
    t = theta.repeat_interleave(n, 0).repeat(flat.shape[0] // (classes * n), 1, 1)
    grid = F.affine_grid(t, list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, align_corners=False).reshape(x.shape)


class BareLoop:
    """One row of the speed grid in plain torch: ``objective`` dm or gm, ``updater`` native, ce
    or robust, ``estimator`` autograd or gaussian (``directions`` M)."""

    def __init__(self, train_x, train_y, classes, ipc, objective, updater, estimator,
                 batch, directions=128, sigma=0.01, lr=1.0, width=128, depth=3,
                 reinit_every=10, device="cpu"):
        self.x, self.classes, self.ipc = train_x.to(device), classes, ipc
        self.pools = [torch.nonzero(train_y == c).flatten() for c in range(classes)]
        self.objective, self.updater, self.estimator = objective, updater, estimator
        self.batch, self.m, self.sigma, self.lr = batch, directions, sigma, lr
        self.shape = (train_x.shape[1], classes, train_x.shape[-1], width, depth)
        self.reinit = 1 if (updater, objective) == ("native", "dm") else reinit_every
        self.device, self.step, self.net = device, 0, None
        self.s = self.x[torch.cat([p[:ipc] for p in self.pools]).to(device)].clone()
        self.labels = torch.arange(classes, device=device).repeat_interleave(ipc)

    def _network(self):
        self.net = convnet(*self.shape).to(self.device)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.5)

    def iteration(self) -> None:
        if self.net is None or self.step % self.reinit == 0:
            self._network()
        self.step += 1
        picks = torch.stack([p[torch.randperm(len(p))[:self.batch]] for p in self.pools])
        real = self.x[picks.to(self.device)]  # [classes, n, ch, h, w]
        if self.updater != "native":
            self.net.requires_grad_(True)
            y = torch.arange(self.classes, device=self.device).repeat_interleave(real.shape[1])
            loss = F.cross_entropy(self.net(real.flatten(0, 1)), y, reduction="none").mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.net.requires_grad_(False)
        a = (torch.rand(self.classes) - 0.5) * 0.5
        theta = torch.stack([torch.stack([a.cos(), -a.sin(), a * 0.1], 1),
                             torch.stack([a.sin(), a.cos(), a * 0.1], 1)], 1).to(self.device)
        f = self._dm(real, theta) if self.objective == "dm" else self._gm(real, theta)
        if self.estimator == "autograd":
            s = self.s.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(f(s[None]).sum(), s)
        else:
            v = torch.randn(self.m, *self.s.shape, device=self.device)
            with torch.no_grad():
                losses = f(torch.cat([self.s[None], self.s[None] + self.sigma * v]))
            g = torch.einsum("m,m...->...", (losses[1:] - losses[0]) / self.sigma, v) / self.m
        with torch.no_grad():
            self.s -= self.lr * g
        if (self.updater, self.objective) == ("native", "gm"):
            self.net.requires_grad_(True)
            loss = F.cross_entropy(self.net(self.s), self.labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def _dm(self, real, theta):
        features = self.net[0]
        with torch.no_grad():
            w = warp(real, theta)
            mean = features(w.flatten(0, 1)).unflatten(0, w.shape[:2]).mean(1)

        def f(candidates):  # [K, N, ...] -> [K]
            syn = warp(candidates.unflatten(1, (self.classes, self.ipc)), theta)
            emb = features(syn.flatten(0, 2)).unflatten(0, syn.shape[:3]).mean(2)
            return ((emb - mean) ** 2).sum((-1, -2))
        return f

    def _gm(self, real, theta):
        params = {k: v.detach() for k, v in self.net.named_parameters() if v.ndim > 1}
        rest = {k: v.detach() for k, v in self.net.named_parameters() if v.ndim <= 1}
        labels = torch.arange(self.classes, device=self.device)

        def loss(p, x, label):
            return F.cross_entropy(functional_call(self.net, {**p, **rest}, (x,)),
                                   label.expand(x.shape[0]))

        per_class = vmap(grad(loss), in_dims=(None, 0, 0))
        with torch.no_grad():
            w = warp(real, theta)
        target = per_class(params, w, labels)

        def distance(x):  # one candidate [classes, ipc, ...] -> []
            mine = per_class(params, x, labels)
            total = 0.0
            for name, g in mine.items():
                a, b = target[name].flatten(2), g.flatten(2)
                total = total + (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)
                                                        + 1e-6)).sum()
            return total

        def f(candidates):
            syn = warp(candidates.unflatten(1, (self.classes, self.ipc)), theta)
            chunk = max(1, 2048 // candidates.shape[1])
            return torch.cat([vmap(distance)(syn[i:i + chunk])
                              for i in range(0, len(syn), chunk)])
        return f


def seconds(fn, repeats: int, sync) -> list[float]:
    """``repeats`` wall-clock timings of ``fn()``, ``sync()`` (e.g. CUDA's) before each read."""
    out = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - started)
    return out
