"""The robust model updater (the paper's Algorithm 1).

Each iteration the real subsample of every class is split into clusters around that class's
synthetic samples, and the network is trained on

    CE + mean_i CVaR_alpha(F(theta; c_i)) + max_i CVaR_alpha(F(theta; c_i))

where F are per-sample cross-entropy losses and mean and max run over all non-empty clusters of
all classes. The whole expression is one differentiable function of the per-sample losses, so
every term reaches theta (a CVaR assembled from detached copies would leave plain CE).

CVaR, read carefully (eq. 3-4). ``cvar(losses, alpha, tail)`` averages one tail of a cluster's
losses holding a fraction ``alpha`` of the samples; the sample on the boundary counts with its
fractional weight, so the value is continuous in alpha.

* ``tail="upper"`` (default): the mean of the *largest* alpha-fraction. alpha = 1 gives the mean,
  alpha <= 1/n the max; it decreases as alpha grows. This is the risk-averse CVaR that the paper's
  DRO motivation and theory describe.
* ``tail="lower"``: eq. 3 as printed (indicator F <= f_alpha with f_alpha the alpha-quantile), and
  what the authors' public code computes: the mean of the *smallest* alpha-fraction, a trimmed
  mean that drops the hardest 1 - alpha. alpha = 1 gives the mean, small alpha the min; it grows
  with alpha.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zodd import compiled
from zodd.nearest import assign_clusters
from zodd.types import Registry

CVAR_TAILS = Registry("cvar-tail", [
    ("upper", "upper", "the mean of the largest alpha-fraction (risk-averse CVaR)"),
    ("lower", "lower", "the mean of the smallest alpha-fraction (eq. 3 as printed)"),
])
CVAR_TERMS = Registry("cvar-terms", [
    ("mean+max", ("mean", "max"), "CE + mean CVaR + max CVaR (Algorithm 1)"),
    ("mean", ("mean",), "CE + mean CVaR (Table 4b)"),
    ("max", ("max",), "CE + max CVaR (Table 4b)"),
])
CLUSTER_SPACES = Registry("cluster-space", [
    ("pixel", "pixel", "Euclidean distance between images (the paper)"),
    ("feature", "feature", "distance in the network's penultimate embedding (the authors' code)"),
])


def grouped_cvar(values: Tensor, groups: Tensor, num_groups: int, alpha: float,
                 tail: str = "upper") -> tuple[Tensor, Tensor]:
    """CVaR of ``values`` within each group, in one vectorised pass.

    Returns ``(cvar[num_groups], counts[num_groups])``; the cvar of an empty group is 0 and
    should be ignored (``counts == 0``). Differentiable with respect to ``values``.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if tail not in ("upper", "lower"):
        raise ValueError(f"tail must be 'upper' or 'lower', got {tail!r}")
    counts = torch.bincount(groups, minlength=num_groups)
    width = int(counts.max()) if values.numel() else 1
    # Scatter the values into a padded [groups, width] matrix, padding so that sorting puts the
    # pads last: -inf for the upper tail (sorted descending), +inf for the lower tail.
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(groups), device=values.device) - starts[sorted_groups]
    pad = float("-inf") if tail == "upper" else float("inf")
    padded = values.new_full((num_groups, width), pad)
    padded = padded.index_put((sorted_groups, slot), values[order])
    tails, _ = torch.sort(padded, dim=1, descending=(tail == "upper"))
    tails = torch.where(torch.isinf(tails), torch.zeros_like(tails), tails)
    # Weight of the k-th element of the tail: clamp(alpha * n - k, 0, 1); the pads get weight 0.
    size = alpha * counts.to(values.dtype)
    k = torch.arange(width, device=values.device, dtype=values.dtype)
    weights = (size[:, None] - k[None, :]).clamp(0.0, 1.0)
    cvar = (weights * tails).sum(1) / size.clamp_min(1e-12)
    return cvar, counts


def cvar(losses: Tensor, alpha: float, tail: str = "upper") -> Tensor:
    """CVaR of one set of losses (see the module docstring for the two tails)."""
    groups = torch.zeros(losses.numel(), dtype=torch.long, device=losses.device)
    return grouped_cvar(losses.reshape(-1), groups, 1, alpha, tail)[0][0]


def choose_centres(ipc: int, clusters: int, gen: torch.Generator) -> Tensor:
    """Which synthetic samples of a class are cluster centres: all of them when IPC <= 10,
    otherwise ``clusters`` random ones (the paper's D.4)."""
    if ipc <= 10 or clusters >= ipc:
        return torch.arange(ipc)
    return torch.randperm(ipc, generator=gen)[:clusters].sort().values


def robust_loss(per_sample: Tensor, cluster_ids: Tensor, num_clusters: int, alpha: float,
                tail: str = "upper", terms: str = "mean+max") -> tuple[Tensor, dict[str, Tensor]]:
    """CE + mean CVaR + max CVaR over the non-empty clusters; returns the loss and its terms.

    ``terms`` keeps only some CVaR aggregates (the paper's Table 4b ablation): ``"mean"`` gives
    CE + mean CVaR, ``"max"`` CE + max CVaR; all three values are reported either way.
    """
    cvars, counts = grouped_cvar(per_sample, cluster_ids, num_clusters, alpha, tail)
    cvars = cvars[counts > 0]
    ce = per_sample.mean()
    parts = {"mean": cvars.mean(), "max": cvars.max()}
    if terms not in CVAR_TERMS:
        raise ValueError(f"terms must be one of {', '.join(CVAR_TERMS)}, got {terms!r}")
    kept = CVAR_TERMS[terms]
    report = {"ce": ce.detach(), "mean_cvar": parts["mean"].detach(),
              "max_cvar": parts["max"].detach()}  # 0-dim tensors: fetched with the log rows
    return ce + sum(parts[t] for t in kept), report


def network_optimizer(net: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The step's network's optimiser (the updater's steps on real data, DC's on S): SGD with
    momentum 0.5, as DC, DSA and DM train their networks."""
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=0.5)


@dataclass
class CEUpdater:
    """Updates the network on the real subsample with the mean cross-entropy (the "CE" row of
    the paper's Table 4b; IDM's own update): ``steps`` steps, each one forward and backward
    (``compile``: through zodd.compiled). The robust updater is this with another loss. Each
    field is the run's setting of the same name (zodd.build hands them over as they are)."""

    model_steps: int = 1
    compile: bool = False  # --compile: the forward and backward through zodd.compiled
    # an N-process run (zodd.distributed): ``real`` is this process's share; the loss is the
    # whole batch's, and the gradients are summed over the processes before the step
    shard: object = None

    def targets(self, net: nn.Module, real: Tensor, synthetic: Tensor,
                gen: torch.Generator) -> tuple[Tensor, Tensor | None, int]:
        """The labels of ``real [C, n, ...]`` flattened, the cluster ids (None here) and
        their number."""
        classes, n = real.shape[:2]
        return torch.arange(classes, device=real.device).repeat_interleave(n), None, 0

    def loss(self, logits: Tensor, y: Tensor, ids: Tensor | None,
             num: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The update's loss on ``logits`` of the real samples, and its terms for the log (with
        ``acc``, the share of those samples the network classified right before the step)."""
        per_sample, right = self._per_example(logits, y)
        loss = per_sample.mean()
        return loss, {"ce": loss.detach(), "acc": right.mean()}

    def _per_example(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each real sample's cross-entropy and whether the network classified it right; in an
        N-process run those of the whole batch, in the single process's order, with only this
        process's losses carrying their graph (zodd.distributed: ``Shard.splice``)."""
        per_sample = F.cross_entropy(logits, y, reduction="none")
        right = (logits.detach().argmax(1) == y).float()
        if self.shard is None:
            return per_sample, right
        classes = logits.shape[1]  # the batch holds every class, class-major
        return (self.shard.splice(per_sample.view(classes, -1)).flatten(),
                self.shard.gather(right.view(classes, -1)).flatten())

    def step(self, net: nn.Module, opt: torch.optim.Optimizer, real: Tensor, synthetic: Tensor,
             gen: torch.Generator) -> dict[str, float]:
        """``model_steps`` updates of ``net`` on the real subsample; returns the last loss
        terms."""
        x = real.flatten(0, 1)
        y, ids, num = self.targets(net, real, synthetic, gen)
        forward = compiled.maybe(net, self.compile)
        terms: dict[str, float] = {}
        for _ in range(self.model_steps):
            loss, terms = self.loss(forward(x), y, ids, num)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.shard is not None:
                self.shard.reduce_gradients(net)
            opt.step()
        return terms

    def gradient(self, net: nn.Module, opt: torch.optim.Optimizer, features: Tensor,
                 real: Tensor, synthetic: Tensor, gen: torch.Generator) -> dict[str, float]:
        """``--one-pass``: the update's gradient, left in ``net``'s ``.grad`` for the caller's
        ``opt.step()``, from ``features [C, n, D]``, the penultimate embeddings of the real
        samples ``real`` that the objective's own forward pass computed (with their graph).
        The caller steps once the objective is done with the network, so that the real and
        the synthetic side of the matching see the same parameters."""
        y, ids, num = self.targets(net, real, synthetic, gen)
        loss, terms = self.loss(net.classifier(features.flatten(0, 1)), y, ids, num)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return terms


@dataclass
class RobustUpdater(CEUpdater):
    """The paper's Algorithm 1: the real subsample of each class clustered around ``clusters``
    of its synthetic samples (in ``cluster_space``), and :func:`robust_loss` (CE and the
    ``cvar_terms`` aggregates of each cluster's CVaR at ``alpha``, ``cvar_tail``) in place of
    CE."""

    alpha: float = 0.8
    cvar_tail: str = "upper"
    cvar_terms: str = "mean+max"
    clusters: int = 10
    cluster_space: str = "pixel"

    def cluster(self, net: nn.Module, real: Tensor, synthetic: Tensor,
                gen: torch.Generator) -> tuple[Tensor, int]:
        """Global cluster ids for ``real [C, n, ...]`` around ``synthetic [C, ipc, ...]``."""
        classes, ipc = real.shape[0], synthetic.shape[1]
        chosen = torch.stack([choose_centres(ipc, self.clusters, gen) for _ in range(classes)])
        rows = torch.arange(classes, device=synthetic.device)[:, None]
        centres = synthetic[rows, chosen.to(synthetic.device)]  # [classes, k, ...]
        points = real
        if self.cluster_space == "feature":
            with torch.no_grad():
                points = net.embed(real.flatten(0, 1)).unflatten(0, real.shape[:2])
                centres = net.embed(centres.flatten(0, 1)).unflatten(0, centres.shape[:2])
        k = chosen.shape[1]
        ids = assign_clusters(points, centres, batch_dims=1) + k * rows.to(real.device)
        return ids.flatten(), classes * k

    def targets(self, net: nn.Module, real: Tensor, synthetic: Tensor,
                gen: torch.Generator) -> tuple[Tensor, Tensor | None, int]:
        """The labels, and the cluster ids of ``real`` around ``synthetic`` and their number."""
        y, _, _ = super().targets(net, real, synthetic, gen)
        ids, num = self.cluster(net, real, synthetic.detach(), gen)
        if self.shard is not None:  # the whole batch's ids (its loss is the whole batch's)
            ids = self.shard.gather(ids.view(real.shape[0], -1)).flatten()
        return y, ids, num

    def loss(self, logits: Tensor, y: Tensor, ids: Tensor | None,
             num: int) -> tuple[Tensor, dict[str, Tensor]]:
        per_sample, right = self._per_example(logits, y)
        loss, terms = robust_loss(per_sample, ids, num, self.alpha, self.cvar_tail,
                                   self.cvar_terms)
        return loss, {**terms, "acc": right.mean()}


# what trains the step's network on real data; "native" is no updater: the network follows
# the matching method's own schedule (zodd.plan), and nothing here runs
UPDATERS = Registry("updater", [
    ("robust", RobustUpdater, "CE + mean CVaR + max CVaR over clusters (Algorithm 1)"),
    ("ce", CEUpdater, "plain cross-entropy on the same real samples (Table 4b's CE row)"),
    ("native", None, "no update on real data: the matching method's own schedule"),
])


def updates_on_real(name: str) -> bool:
    """Whether the updater ``name`` trains the network on real data (not ``native``)."""
    return UPDATERS[name] is not None


def train_on_synthetic(net: nn.Module, opt: torch.optim.Optimizer, images: Tensor, labels: Tensor,
                       steps: int) -> None:
    """``steps`` CE updates of ``net`` on the synthetic set: Dataset Condensation's network
    schedule, between updates of S (``--updater native`` on GM)."""
    net.requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(net(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.requires_grad_(False)
