"""Evaluation: train fresh networks on a synthetic set, test them on the real test set and on
shifted versions of it.

Every protocol trains with SGD, momentum 0.9, weight decay 5e-4 and divides the learning rate by
10 once, on one of two schedules (``SCHEDULES``): ``half`` (zodd's: ``epochs`` epochs, the rate
divided after ``epochs // 2``, the optimiser kept) or ``evaluate_synset`` (the DC / DSA / DM
family's ``evaluate_synset``: ``epochs + 1`` epochs, the rate divided after epoch
``epochs // 2 + 1`` (counted from 0) by a fresh optimiser, so the momentum starts again); a
named protocol (``PROTOCOLS``, ``zodd evaluate --protocol``) fixes the epochs, the
learning rate, the mini-batch and the augmentation drawn per image and batch (zodd.augment), each
overridable; the network is ``model`` (zodd.models.MODELS; ConvNet of the distillation's shape by
default). Label vectors (``[N, classes]``: soft labels, or labels a set learned) train with the
soft cross-entropy against their softmax where they are not probabilities already (FRePo's
``soft_cross_entropy_loss``; zodd.labels.soft_targets).

``frepo`` is FRePo's published evaluation (yongchao97/FRePo ``script/eval.py`` with its
defaults, and ``proto_evaluate``): its Conv without normalisation (``model frepo``), Adam at
3e-4 (optax's ``adam``: its ``weight_decay`` argument is not used by that optimiser), the rate
rising linearly from 0 over ``FREPO_WARMUP`` 500 steps then falling by a cosine to 1 % of it
(``alpha=0.01``) over the remaining steps, ``FREPO_STEPS`` steps by the set's size (its
``step_per_prototpyes``), batches of ``min(N, 500)`` taken in order from the repeated set
(``cache().repeat().batch()``, no shuffle), FRePo's augmentation (zodd.augment.FRePo) on each
batch, and the mean squared error ``sum_c 0.5 (f(x) - y)^2`` to the stored label vectors (hard
labels: the centred one-hot, ``1 - 1/C`` and ``-1/C``, as its ``y_transform``); the prediction
is the output's argmax. Its 5 networks (``num_eval``) are zodd's ``--seeds``.
Metrics, each the mean and std (ddof 0) over seeds:

* ``acc``: accuracy on the test set;
* ``cluster_min``: KMeans (k = 10, seed 0) on the test pixels; the worst cluster's accuracy;
* ``noise``: accuracy with Gaussian noise of std ``NOISE_STD`` added to [0, 1] pixels;
* ``blur``: accuracy after a Gaussian blur (kernel ``BLUR_KERNEL``, sigma ``BLUR_SIGMA``);
* ``invert``: accuracy on colour-inverted images (1 - pixel).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zodd.augment import augment_batch
from zodd.data import ImageData, default_data_dir
from zodd.labels import centred, soft_targets
from zodd.models import build_network, check_model
from zodd.rundir import atomic_write, metrics_name
from zodd.synthetic import SyntheticSet
from zodd.types import Registry, ZoddError, resolve_device

METRICS = ("acc", "cluster_min", "noise", "blur", "invert")
NOISE_STD = 0.1
BLUR_KERNEL = 3
BLUR_SIGMA = 1.0
KMEANS_K = 10
FREPO_WARMUP = 500  # script/eval.py: warmup_steps
FREPO_FLOOR = 0.01  # optax.cosine_decay_schedule(alpha=0.01)
FREPO_BATCH = 500  # ds_proto.batch(min(N, 500))
# step_per_prototpyes: set size -> training steps (a size between two rows takes the lower)
FREPO_STEPS = ((10, 1000), (100, 2000), (200, 20000), (400, 5000), (500, 5000), (1000, 10000),
               (2000, 40000), (5000, 40000))


@dataclass(frozen=True)
class Protocol:
    """A named evaluation protocol: what it sets, and what it sets differently on some data
    sets (``by_dataset``: data set name -> settings)."""

    settings: dict
    by_dataset: dict = None

    def for_dataset(self, name: str) -> dict:
        return {**self.settings, **(self.by_dataset or {}).get(name, {})}


SCHEDULES = Registry("schedule", [
    ("half", "half", "epochs epochs, lr / 10 after epochs // 2, the optimiser kept (zodd's)"),
    ("frepo", "frepo", "FRePo's: Adam, MSE to the labels, steps by set size, 500 warm-up steps "
     "then a cosine to 1 % (the epochs are not used)"),
    ("evaluate_synset", "evaluate_synset", "epochs + 1 epochs, lr / 10 after epoch "
     "epochs // 2 + 1 with a fresh optimiser (DC, DSA, DM, IDM)"),
])
PROTOCOLS = Registry("protocol", [
    ("zodd", Protocol({"epochs": 300, "lr": 0.01, "batch_size": 256, "augment": "affine",
                       "schedule": "half"}),
     "zodd's: 300 epochs, lr 0.01, batch 256, one random affine warp per image"),
    ("dc", Protocol({"epochs": 300, "lr": 0.01, "batch_size": 256, "augment": "none",
                     "schedule": "evaluate_synset"},
                    {"mnist": {"epochs": 1000, "augment": "affine"}}),
     "Dataset Condensation's evaluate_synset: 300 epochs without augmentation (MNIST: 1,000 "
     "with crop, scale and rotation, here the affine warp)"),
    ("dsa", Protocol({"epochs": 1000, "lr": 0.01, "batch_size": 256, "augment": "dsa",
                      "schedule": "evaluate_synset"}),
     "DSA's, DM's and IDM's evaluate_synset: 1,000 epochs with DSA, one operation a batch"),
    ("plain", Protocol({"epochs": 300, "lr": 0.01, "batch_size": 256, "augment": "none",
                        "schedule": "half"}),
     "no augmentation, 300 epochs (what a weak set cannot hide behind)"),
    ("frepo", Protocol({"epochs": 0, "lr": 3e-4, "batch_size": FREPO_BATCH, "augment": "frepo",
                        "schedule": "frepo", "model": "frepo"}),
     "FRePo's eval.py: its Conv without norm, Adam 3e-4, MSE to the stored label vectors, "
     "1,000-40,000 steps by set size, FRePo's augmentation"),
])


@dataclass(frozen=True)
class EvalConfig:
    seeds: int = 3
    epochs: int = 300
    lr: float = 0.01
    batch_size: int = 256
    augment: str = "affine"  # a zodd.augment.AUGMENTS name, one draw per image and batch
    width: int | None = None
    depth: int | None = None
    model: str = "convnet"  # a zodd.models.MODELS name or ConvNet variant
    schedule: str = "half"  # a SCHEDULES name: when the learning rate drops (module docstring)
    protocol: str = "zodd"  # DEFAULT_PROTOCOL: the PROTOCOLS preset the settings came from
    custom: tuple[str, ...] = ()  # the preset's settings changed (zodd evaluate --epochs ...)
    device: str = "auto"  # where the networks train and are tested (see zodd.types.resolve_device)
    # the seeds' networks trained at once (vmap); off: one at a time was faster on an H100
    # (3.64 s against 4.10 s for 3 networks x 300 epochs, BENCHMARKS.md), and is so on a CPU
    together: bool = False

    @property
    def label(self) -> str:
        """The protocol as a metrics file records it: its name, ``+custom`` when changed."""
        return self.protocol + ("+custom" if self.custom else "")


DEFAULT_PROTOCOL = EvalConfig.protocol  # zodd evaluate's, and the one whose files carry no tag


def protocol_config(name: str, dataset: str, **overrides) -> EvalConfig:
    """The EvalConfig of protocol ``name`` on ``dataset``; an override of a protocol setting
    (epochs, lr, batch_size, augment) that changes it is listed in ``custom``."""
    preset = PROTOCOLS[PROTOCOLS.check(name, "protocol")].for_dataset(dataset)
    changed = tuple(sorted(k for k, v in overrides.items() if v is not None and k in preset
                           and preset[k] != v))
    values = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
    if "model" in values:
        check_model(values["model"])
    return EvalConfig(**values, protocol=name, custom=changed)


def protocol_model(name: str) -> str:
    """The network protocol ``name`` trains when none is named (``convnet`` unless it says)."""
    return PROTOCOLS[PROTOCOLS.check(name, "protocol")].settings.get("model", "convnet")


def protocol_record(cfg: EvalConfig) -> dict:
    """What a metrics file records of how its numbers were made (compared by ``differences``)."""
    import torchvision

    from zodd import __version__

    return {"name": cfg.label, "model": cfg.model, "seeds": cfg.seeds, "epochs": cfg.epochs,
            "lr": cfg.lr, "batch_size": cfg.batch_size, "augment": cfg.augment,
            "width": cfg.width, "depth": cfg.depth, "optimizer": optimizer_description(cfg),
            "shifts": shift_description(),
            "versions": {"zodd": __version__, "torch": torch.__version__,
                         "torchvision": torchvision.__version__}}


@dataclass(frozen=True)
class TestSets:
    """The test set, its shifted versions (standardised) and its KMeans clusters."""

    variants: dict[str, Tensor]  # name -> images; "acc" is the clean set
    labels: Tensor
    clusters: np.ndarray

    @classmethod
    def build(cls, data: ImageData) -> "TestSets":
        from torchvision.transforms.functional import gaussian_blur

        pixels = data.denormalise(data.test_x)
        restandardise = data.standardise
        gen = torch.Generator().manual_seed(0)
        noisy = pixels + NOISE_STD * torch.randn(pixels.shape, generator=gen)
        blurred = gaussian_blur(pixels, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
        variants = {"acc": data.test_x, "noise": restandardise(noisy),
                    "blur": restandardise(blurred), "invert": restandardise(1 - pixels)}
        return cls(variants, data.test_y, test_clusters(pixels))

    def to(self, device: torch.device) -> "TestSets":
        return TestSets({k: v.to(device) for k, v in self.variants.items()},
                        self.labels.to(device), self.clusters)


def test_clusters(pixels: Tensor, cache: Path | None = None) -> np.ndarray:
    """KMeans (k = KMEANS_K, seed 0) of the test pixels, computed once per test set and kept in
    ``cache`` (default: the data dir's ``cache/``), keyed by a hash of the pixels; an unreadable
    or unwritable cache only costs the computation."""
    from sklearn.cluster import KMeans

    flat = pixels.flatten(1).numpy()
    key = hashlib.sha256(flat.tobytes()).hexdigest()[:20]
    path = (cache or default_data_dir() / "cache") / f"test-clusters-k{KMEANS_K}-{key}.npy"
    try:
        clusters = np.load(path, allow_pickle=False)
        if clusters.shape == (len(flat),):
            return clusters
    except (OSError, ValueError):
        pass
    k = min(KMEANS_K, len(flat))  # a test set smaller than k: one cluster an image
    clusters = KMeans(n_clusters=k, random_state=0, n_init=3).fit_predict(flat)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.save(f, clusters, allow_pickle=False))
    except OSError:
        pass
    return clusters


def metrics_file(augment: str = "affine", baseline: str | None = None,
                 protocol: str = DEFAULT_PROTOCOL) -> str:
    """The name of the file ``zodd evaluate`` writes (zodd.rundir.metrics_name), given the
    protocol's own augmentation; the default protocol's files carry no protocol tag."""
    own = PROTOCOLS[protocol].settings["augment"]
    return metrics_name(augment, own, baseline,
                        None if protocol == DEFAULT_PROTOCOL else protocol)


def optimizer_description(cfg: EvalConfig) -> str:
    if cfg.schedule == "frepo":
        return (f"Adam, MSE to the label vectors, {FREPO_WARMUP} warm-up steps then a cosine "
                f"to {FREPO_FLOOR:g} of lr, FRePo's steps by set size, batches in order")
    if cfg.schedule == "half":
        return "SGD momentum 0.9, weight decay 5e-4, lr / 10 at half the epochs"
    return ("SGD momentum 0.9, weight decay 5e-4, epochs + 1 epochs, lr / 10 after epoch "
            "epochs // 2 + 1 with a fresh optimiser (evaluate_synset)")


class Schedule:
    """The optimiser of one evaluation training and its learning-rate drop (``SCHEDULES``):
    ``epochs`` to run, ``opt`` to step (it may be replaced by ``end_epoch``)."""

    def __init__(self, cfg: EvalConfig, params):
        self.params, self.lr, self.cfg = list(params), cfg.lr, cfg
        self.opt = self._sgd()
        self.published = SCHEDULES[SCHEDULES.check(cfg.schedule, "schedule")] != "half"
        self.epochs = cfg.epochs + 1 if self.published else cfg.epochs
        self.decay = (None if self.published else
                      torch.optim.lr_scheduler.MultiStepLR(self.opt, [cfg.epochs // 2], 0.1))

    def _sgd(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.params, lr=self.lr, momentum=0.9, weight_decay=5e-4)

    def end_epoch(self, epoch: int) -> None:
        """After epoch ``epoch`` (from 0)."""
        if self.decay is not None:
            self.decay.step()
        elif epoch == self.cfg.epochs // 2 + 1:
            self.lr *= 0.1
            self.opt = self._sgd()


def shift_description() -> str:
    return (f"noise: Gaussian, std {NOISE_STD} on [0, 1] pixels; blur: Gaussian kernel "
            f"{BLUR_KERNEL}x{BLUR_KERNEL}, sigma {BLUR_SIGMA}; invert: 1 - pixel; "
            f"cluster-min: worst of {KMEANS_K} KMeans clusters of test pixels")


def frepo_steps(n: int) -> int:
    """FRePo's training steps for a set of ``n`` images (``FREPO_STEPS``)."""
    return [steps for size, steps in FREPO_STEPS if n >= size][-1] if n >= FREPO_STEPS[0][0] \
        else FREPO_STEPS[0][1]


def frepo_rate(step: int, steps: int) -> float:
    """FRePo's rate at ``step`` (from 0), as a fraction of the peak: linear warm-up over
    ``FREPO_WARMUP`` steps, then a cosine to ``FREPO_FLOOR`` over the rest."""
    if step < FREPO_WARMUP:
        return step / FREPO_WARMUP
    span = max(steps - FREPO_WARMUP, 1)
    t = min(step - FREPO_WARMUP, span) / span
    return (1 - FREPO_FLOOR) * 0.5 * (1 + np.cos(np.pi * t)) + FREPO_FLOOR


def train_frepo(images: Tensor, labels: Tensor, data: ImageData, cfg: EvalConfig, seed: int,
                flip: bool) -> torch.nn.Module:
    """One network as FRePo's evaluation trains it (module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    device = resolve_device(cfg.device)
    targets = labels.float() if labels.ndim == 2 else centred(labels, data.num_classes)
    images, targets = images.to(device), targets.to(device)
    net = build_network(cfg.model, data.channels, data.num_classes, data.image_size, cfg.width,
                        cfg.depth, seed=seed).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps, n = frepo_steps(len(images)), len(images)
    batch = min(n, cfg.batch_size)
    net.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * frepo_rate(step, steps)
        rows = torch.arange(step * batch, (step + 1) * batch, device=device) % n
        x = images[rows]
        if cfg.augment != "none":
            x = augment_batch(x, gen, flip, cfg.augment)
        loss = 0.5 * ((net(x) - targets[rows]) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def train_network(images: Tensor, labels: Tensor, data: ImageData, cfg: EvalConfig, seed: int,
                  flip: bool) -> torch.nn.Module:
    if cfg.schedule == "frepo":
        return train_frepo(images, labels, data, cfg, seed, flip)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    device = resolve_device(cfg.device)
    images, labels = images.to(device), labels.to(device)
    if labels.ndim == 2:
        labels = soft_targets(labels.float())
    net = build_network(cfg.model, data.channels, data.num_classes, data.image_size, cfg.width,
                        cfg.depth, seed=seed).to(device)
    schedule = Schedule(cfg, net.parameters())
    net.train()
    for epoch in range(schedule.epochs):
        opt = schedule.opt
        order = torch.randperm(len(images), generator=gen).to(device)
        for i in range(0, len(images), cfg.batch_size):
            batch = order[i:i + cfg.batch_size]
            x = images[batch]
            if cfg.augment != "none":
                x = augment_batch(x, gen, flip, cfg.augment)
            loss = F.cross_entropy(net(x), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        schedule.end_epoch(epoch)
    return net.eval()


def train_together(images: Tensor, labels: Tensor, data: ImageData, cfg: EvalConfig,
                   seeds: list[int], flip: bool) -> list[torch.nn.Module]:
    """The networks of ``seeds`` trained at once: their parameters stacked, one vmapped forward
    and backward for all (``EvalConfig.together``; measured slower than one at a time on an H100,
    where each seed's augmentation is still its own call). Each seed draws from its own generator
    exactly what ``train_network`` draws, and SGD acts on each parameter element alone, so the
    networks are ``train_network``'s up to float rounding."""
    import copy

    from torch.func import functional_call, stack_module_state

    device = resolve_device(cfg.device)
    images, labels = images.to(device), labels.to(device)
    nets = [build_network(cfg.model, data.channels, data.num_classes, data.image_size,
                          cfg.width, cfg.depth, seed=seed).to(device) for seed in seeds]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    forward = torch.vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))
    schedule = Schedule(cfg, params.values())
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    for epoch in range(schedule.epochs):
        opt = schedule.opt
        orders = [torch.randperm(len(images), generator=g).to(device) for g in gens]
        for i in range(0, len(images), cfg.batch_size):
            batches = [order[i:i + cfg.batch_size] for order in orders]
            x = [images[b] for b in batches]
            if cfg.augment != "none":
                x = [augment_batch(xi, g, flip, cfg.augment) for xi, g in zip(x, gens)]
            logits = forward(params, buffers, torch.stack(x))  # [seeds, batch, classes]
            y = torch.stack([labels[b] for b in batches])
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            opt.zero_grad(set_to_none=True)
            loss.view(len(seeds), -1).mean(1).sum().backward()
            opt.step()
        schedule.end_epoch(epoch)
    for k, net in enumerate(nets):
        net.load_state_dict({name: p[k].detach() for name, p in {**params, **buffers}.items()})
    return [net.eval() for net in nets]


@torch.no_grad()
def predict(net: torch.nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    return torch.cat([net(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def test_metrics(net: torch.nn.Module, tests: TestSets) -> dict[str, float]:
    """The METRICS of one network, and its accuracy on each class (``per_class``)."""
    out = {}
    for name, x in tests.variants.items():
        correct = (predict(net, x) == tests.labels).cpu().numpy()
        out[name] = float(correct.mean() * 100)
        if name == "acc":
            out["cluster_min"] = float(min(correct[tests.clusters == k].mean()
                                           for k in np.unique(tests.clusters)) * 100)
            labels = tests.labels.cpu().numpy()
            per_class = [float(correct[labels == c].mean() * 100) for c in np.unique(labels)]
    return {**{m: out[m] for m in METRICS}, "per_class": per_class}


def evaluate(syn: SyntheticSet, data: ImageData, cfg: EvalConfig = EvalConfig(),
             flip: bool | None = None, tests: TestSets | None = None,
             on_seed: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``cfg.seeds`` networks on ``syn`` (hard labels ``[N]`` or soft ``[N, classes]``);
    the metrics' mean and std over seeds, the mean accuracy per class (by class name) and the
    protocol. ``flip``: whether the training augmentation may mirror images (None: the data
    set's own fact)."""
    flip = data.flip if flip is None else flip
    if syn.images.shape[1:] != data.train_x.shape[1:]:
        raise ZoddError(f"the set's images are {tuple(syn.images.shape[1:])}, the data set's "
                        f"{tuple(data.train_x.shape[1:])}")
    device = resolve_device(cfg.device)
    tests = (tests or TestSets.build(data)).to(device)
    soft = syn.labels.ndim == 2
    together = cfg.together and not soft and cfg.model == "convnet"
    per_seed = []
    if together:
        nets = train_together(syn.images.detach(), syn.labels, data, cfg, list(range(cfg.seeds)),
                              flip)
    for seed in range(cfg.seeds):
        net = nets[seed] if together else train_network(syn.images.detach(), syn.labels, data,
                                                         cfg, seed, flip)
        per_seed.append(test_metrics(net, tests))
        if on_seed:
            on_seed(seed, {m: per_seed[-1][m] for m in METRICS})
    report = {m: {"mean": float(np.mean([r[m] for r in per_seed])),
                  "std": float(np.std([r[m] for r in per_seed]))} for m in METRICS}
    report["per_class"] = {data.class_name(c): float(np.mean([r["per_class"][c]
                                                              for r in per_seed]))
                           for c in range(len(per_seed[0]["per_class"]))}
    report["per_seed"] = [{m: r[m] for m in METRICS} for r in per_seed]
    report["labels"] = "soft" if soft else "hard"
    report["protocol"] = {**protocol_record(cfg), "device": str(device), "together": together}
    return report
