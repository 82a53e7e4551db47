"""IDM's queue of networks (enriched model sampling; Zhao et al., "Improved Distribution
Matching for Dataset Condensation", CVPR 2023, and its public code's ``IDM_cifar10.py``).

Plain DM matches S under a fresh random network every iteration. IDM keeps a queue of networks
at different stages of training instead:

* the queue starts with ``START`` networks; every ``every`` iterations (iteration 0 included) a
  fresh one joins, and when the queue already holds ``size`` the oldest leaves;
* each iteration one network is drawn uniformly from the queue, and S is matched under it;
* after S's step, ``train`` distinct networks drawn uniformly are each trained for ``steps``
  steps on real data, every step on a fresh real batch. **That training is the model update**:
  ``CEUpdater`` is IDM's own update (cross-entropy), ``RobustUpdater`` the
  paper's IDM + RDD (its Table 5). Each network keeps its own optimiser, SGD with momentum 0.9
  and weight decay 5e-4 (IDM's ``--net_decay``);
* each network counts its training accuracy on its real batches (IDM's ``acc_meters``), and the
  counts restart every ``METER_EVERY`` iterations, where IDM's evaluation resets them; its
  class-aware regulariser (``zodd.plan``, ``ce_weight``) weighs the synthetic images'
  cross-entropy by the drawn network's accuracy in percent, as IDM's meter reads.

Where zodd differs from that code: each training step draws ``n`` real images of every class
(IDM: 256 from the whole set, so about 26 of each of 10 classes), so the robust updater has
each class's clusters to work on; every draw comes from the run's generator (IDM: Python's
``random`` and numpy's global state).

The defaults ``zodd.plan`` fills in are IDM's, from its published commands (uitrbn/IDM
``command.txt``, CIFAR-10 rows, as no Fashion-MNIST row is published): a new network every
``queue_every`` iterations, 5 at IPC 1 and 30 above (``--net_generate_interval``; the code's
default 30); ``model_steps`` 10 updater steps for each of the ``queue_train`` 2 networks trained
an iteration (``--model_train_steps``, ``--fetch_net_num``, the code's defaults); each step on
``n_update`` real images of every class, ``QUEUE_BATCH`` (IDM's ``--trained_bs`` 256) shared out
over the classes; ``ce_weight`` 0.5 at IPC up to 10 and 0.1 above (``--ce_weight``); the queue's
networks train at ``model_lr`` (0.01, IDM's ``--lr_net``). ``--recipe idm`` also sets the step
size on S to IDM's ``--lr_img`` 0.2 (SGD, momentum 0.5, as IDM). IDM's IPC-1 command matches
5,000 real images a class (``--batch_real``); zodd keeps ``--batch-size`` 256 (20 times cheaper
on a CPU), which a user may raise. IDM steps S once per class, zodd once per iteration: the same
per-class gradients, and momentum 0.5 gives each the same total step (2 x lr) either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor, nn

from zodd.robust import CEUpdater, network_optimizer, train_on_synthetic

START = 3  # networks in the queue before the first iteration (IDM's code)
POOL_LR = 3e-4  # FRePo's pool networks: Adam at config.online.learning_rate
POOL_BATCH = 500  # FRePo's get_sample_proto: at most 500 images of S a pool step
METER_EVERY = 100  # iterations between resets of the accuracy counts (IDM's eval_interval)
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # the queue networks' SGD (IDM's --net_decay)


@dataclass
class Member:
    """One network of the queue, its optimiser and its training accuracy counts."""

    net: nn.Module
    opt: torch.optim.Optimizer
    correct: Tensor = field(default_factory=lambda: torch.zeros(()))
    seen: int = 0

    def accuracy(self) -> float:
        """Percent of its real training samples classified right since the last reset (0 before
        any)."""
        return float(self.correct) / self.seen * 100 if self.seen else 0.0


class NetworkQueue:
    """The queue (module docstring). ``build(seed)`` makes a fresh network; ``lr`` is the
    networks' SGD step size."""

    def __init__(self, build: Callable[[int], nn.Module], size: int, every: int, train: int,
                 steps: int, lr: float, gen: torch.Generator):
        self.build, self.size, self.every, self.train_count = build, size, every, train
        self.steps, self.lr = steps, lr
        self.members: list[Member] = []
        for _ in range(min(START, size)):
            self.push(gen)

    def _member(self, seed: int) -> Member:
        net = self.build(seed).requires_grad_(False)
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=MOMENTUM,
                              weight_decay=WEIGHT_DECAY)
        return Member(net, opt)

    def push(self, gen: torch.Generator) -> None:
        """A fresh network at the back; the oldest leaves when the queue is full."""
        if len(self.members) == self.size:
            self.members.pop(0)
        self.members.append(self._member(int(torch.randint(2**31 - 1, (1,), generator=gen))))

    def refresh(self, step: int, gen: torch.Generator) -> None:
        """Before iteration ``step``'s draw: the counts' reset and a new network when due."""
        if step and step % METER_EVERY == 0:
            for m in self.members:
                m.correct, m.seen = torch.zeros(()), 0
        if step % self.every == 0:
            self.push(gen)

    def draw(self, gen: torch.Generator) -> Member:
        """The network S is matched under this iteration."""
        return self.members[int(torch.randint(len(self.members), (1,), generator=gen))]

    def train(self, updater: CEUpdater, batch: Callable[[], Tensor], synthetic: Tensor,
              gen: torch.Generator) -> dict:
        """``train`` distinct networks, ``steps`` updater steps each, every step on a fresh real
        batch ``batch() -> [classes, n, ch, h, w]`` (clustered around ``synthetic [classes,
        k, ...]`` for ``robust``); the last step's loss terms."""
        one = replace(updater, model_steps=1)
        picks = torch.randperm(len(self.members), generator=gen)[:self.train_count]
        terms: dict = {}
        for i in picks.tolist():
            m = self.members[i]
            m.net.requires_grad_(True)
            for _ in range(self.steps):
                real = batch()
                terms = one.step(m.net, m.opt, real, synthetic, gen)
                m.correct = m.correct + terms["acc"] * real.shape[0] * real.shape[1]
                m.seen += real.shape[0] * real.shape[1]
            m.net.requires_grad_(False)
        return terms

    def state_dict(self) -> dict:
        return {"members": [{"net": m.net.state_dict(), "opt": m.opt.state_dict(),
                             "correct": m.correct.clone(), "seen": m.seen}
                            for m in self.members]}

    def load_state_dict(self, state: dict) -> None:
        self.members = []
        for saved in state["members"]:
            m = self._member(0)  # the architecture; its weights are replaced just below
            m.net.load_state_dict(saved["net"])
            m.opt.load_state_dict(saved["opt"])
            m.correct, m.seen = saved["correct"].clone(), int(saved["seen"])
            self.members.append(m)


class ModelPool:
    """FRePo's model pool (Zhou et al., NeurIPS 2022; yongchao97/FRePo,
    ``proto_train_and_evaluate``): ``size`` networks (``num_nn_state``, 10), the i-th starting
    with its step count at ``(max_steps // size) * i`` so that their resets are staggered; each
    iteration one is drawn uniformly and S is regressed under its features; after S's step
    that network is reset (a fresh one, count 0) if its count passed ``max_steps``
    (``max_online_updates``, 100), else trained one step, which adds one to its count. Each
    network keeps its own Adam at ``lr`` (``--pool-lr``; default ``POOL_LR``, FRePo's
    ``config.online``: adam, 3e-4).

    **That one step is the model update.** FRePo's own (``--updater native``): mean squared
    error ``sum_c 0.5 (f(x) - y)^2`` of the network's outputs against S's labels on at most
    ``POOL_BATCH`` (500) images of S (FRePo's ``get_sample_proto``; all of them when S is
    smaller), no augmentation. ``--updater ce`` / ``robust``: one updater step on the
    step's real batch (cross-entropy, or the paper's robust loss with clusters around S) with
    the same Adam, as IDM's queue is trained on real data. Where zodd differs: every draw comes
    from the run's generator (FRePo: numpy's global state and jax keys)."""

    def __init__(self, build: Callable[[int], nn.Module], size: int, max_steps: int,
                 gen: torch.Generator, lr: float = POOL_LR):
        self.build, self.max_steps, self.lr = build, max_steps, lr
        self.members = [self._member(gen, (max_steps // size) * i) for i in range(size)]
        self.drawn: Member | None = None

    def _member(self, gen: torch.Generator, count: int = 0) -> Member:
        net = self.build(int(torch.randint(2**31 - 1, (1,), generator=gen))).requires_grad_(False)
        return Member(net, torch.optim.Adam(net.parameters(), lr=self.lr), seen=count)

    def draw(self, gen: torch.Generator) -> Member:
        self.drawn = self.members[int(torch.randint(len(self.members), (1,), generator=gen))]
        return self.drawn

    def train(self, updater: CEUpdater | None, real: Callable[[], Tensor], synthetic: Tensor,
              targets: Tensor, gen: torch.Generator) -> dict:
        """After S's step: the drawn network reset or trained one step (class docstring);
        ``synthetic`` the decoded images ``[classes, k, ...]``, ``targets`` their label vectors
        ``[N, classes]``; the step's loss terms."""
        m = self.drawn
        if m.seen > self.max_steps:
            self.members[self.members.index(m)] = self._member(gen)
            return {}
        m.net.requires_grad_(True)
        if updater is None:  # FRePo's own step, on S
            images = synthetic.flatten(0, 1)
            if len(images) > POOL_BATCH:
                pick = torch.randperm(len(images), generator=gen)[:POOL_BATCH].to(images.device)
                images, targets = images[pick], targets[pick]
            loss = 0.5 * ((m.net(images) - targets) ** 2).sum(1).mean()
            m.opt.zero_grad(set_to_none=True)
            loss.backward()
            m.opt.step()
            terms = {"pool_mse": loss.detach()}
        else:
            terms = replace(updater, model_steps=1).step(m.net, m.opt, real(), synthetic, gen)
        m.net.requires_grad_(False)
        m.seen += 1
        return terms

    def state_dict(self) -> dict:
        return {"members": [{"net": m.net.state_dict(), "opt": m.opt.state_dict(),
                             "count": m.seen} for m in self.members],
                "drawn": None if self.drawn is None else self.members.index(self.drawn)}

    def load_state_dict(self, state: dict) -> None:
        for m, saved in zip(self.members, state["members"]):
            m.net.load_state_dict(saved["net"])
            m.opt.load_state_dict(saved["opt"])
            m.seen = int(saved["count"])
        self.drawn = None if state["drawn"] is None else self.members[state["drawn"]]


class StepNetwork:
    """The network a step's objective is bound to, and its training, whichever schedule the
    plan chose: none (objectives that score S alone); a fresh network every ``reinit_every``
    iterations trained by the updater on the step's real batch before S's step (the paper's
    Algorithm 1; with ``--one-pass`` on the objective's own pass, applied after S's step), and
    ``on_synthetic`` steps on S after it (Dataset Condensation's native schedule); or IDM's
    ``queue`` (one network drawn a step, some trained after S's step). ``build(seed)`` makes a
    fresh network; every draw comes from the generator the loop passes in."""

    def __init__(self, build: Callable[[int], nn.Module], updater: CEUpdater | None, *,
                 lr: float, uses_network: bool, reinit_every: int, n_update: int,
                 on_synthetic: int, ce_weight: float, queue: NetworkQueue | None,
                 pool: ModelPool | None = None):
        self.build, self.updater, self.queue, self.pool = build, updater, queue, pool
        self.lr = lr  # the step's network's SGD (robust.network_optimizer)
        self.uses_network, self.reinit_every, self.n_update = uses_network, reinit_every, n_update
        self.on_synthetic, self.ce_weight = on_synthetic, ce_weight
        self.net: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.drawn: Member | None = None  # the queue member S is matched under this step

    def _new(self, gen: torch.Generator) -> None:
        self.net = self.build(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        self.opt = network_optimizer(self.net, self.lr)

    def refresh(self, step: int, gen: torch.Generator) -> None:
        """Before iteration ``step``'s real batch: a fresh network when due, or the step's draw
        from the queue."""
        if self.queue:
            self.queue.refresh(step, gen)
            self.drawn = self.queue.draw(gen)
            self.net, self.opt = self.drawn.net, self.drawn.opt
        elif self.pool:
            member = self.pool.draw(gen)
            self.net, self.opt = member.net, member.opt
        elif self.uses_network and (self.net is None or step % self.reinit_every == 0):
            self._new(gen)

    def class_weight(self) -> float:
        """The step's class-aware CE weight (IDM: times the drawn network's accuracy, %)."""
        return self.ce_weight * self.drawn.accuracy() if self.drawn and self.ce_weight else 0.0

    def update(self, real: Tensor, synthetic: Callable[[], Tensor], gen: torch.Generator,
               one_pass: Tensor | None = None) -> dict:
        """The updater's steps on the step's real batch, before S's step (none for native).
        ``one_pass``: the embeddings ``[classes, n_update, features]`` of the real batch's first
        rows that the objective's own pass computed (``--one-pass``, zodd.binding): the
        update's gradient is taken from them now and applied by ``after_step``."""
        if self.net is None or self.updater is None or self.queue or self.pool:
            return {}
        self.net.requires_grad_(True)
        if one_pass is not None:
            terms = self.updater.gradient(self.net, self.opt, one_pass,
                                          real[:, :self.n_update], synthetic(), gen)
        else:
            terms = self.updater.step(self.net, self.opt, real[:, :self.n_update], synthetic(),
                                      gen)
        self.net.requires_grad_(False)
        return terms

    def after_step(self, one_pass: bool, batch: Callable[[], Tensor],
                   synthetic: Callable[[], Tensor], labels: Tensor,
                   gen: torch.Generator, targets: Callable[[], Tensor] | None = None) -> dict:
        """After S's step: the one-pass update lands, the queue trains (its last loss terms are
        returned), the pool's drawn network trains (on S towards ``targets()``, its label
        vectors, or on ``batch()``), DC's network trains on S."""
        if one_pass:
            self.opt.step()
        terms = self.queue.train(self.updater, batch, synthetic(), gen) if self.queue else {}
        if self.pool:
            terms = self.pool.train(self.updater, batch, synthetic(), targets(), gen)
        if self.on_synthetic:
            train_on_synthetic(self.net, self.opt, synthetic().flatten(0, 1), labels,
                               self.on_synthetic)
        return terms

    def state_dict(self) -> dict:
        own = self.net is not None and not self.queue and not self.pool
        return {"net": self.net.state_dict() if own else None,
                "net_optimizer": self.opt.state_dict() if own else None,
                "queue": None if self.queue is None else self.queue.state_dict(),
                "pool": None if self.pool is None else self.pool.state_dict()}

    def load_state_dict(self, state: dict, gen: torch.Generator) -> None:
        if state.get("queue") is not None:  # the step's network is drawn from it each iteration
            self.queue.load_state_dict(state["queue"])
        if state.get("pool") is not None:
            self.pool.load_state_dict(state["pool"])
        if state["net"] is not None:
            saved = gen.get_state()
            self._new(gen)  # the architecture; its weights are replaced just below
            gen.set_state(saved)
            self.net.load_state_dict(state["net"])
            self.opt.load_state_dict(state["net_optimizer"])
