"""The contracts between the loop, the objectives and the estimators.

An :class:`Objective` is bound once per step to a network and a real batch; the result is a
:class:`BlackBox`, a function from K candidate synthetic sets to K losses. Estimators only ever see
black boxes, so they cannot tell a differentiable objective from a program's score, nor an
in-process call from one spread over workers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


class ZoddError(Exception):
    """A problem the user can fix (bad input, missing data, unreadable file).

    The CLI prints its message as one line and exits with status 2; library code raises it and
    never exits.
    """


class ClusterError(ZoddError):
    """Ray could not score a step: a worker that kept dying past its retries, a node lost with
    no other to take its workers, the local Ray node gone. Not the black box's fault, so not
    retried as one: the run ends with its last completed step saved."""


class Registry(dict):
    """A vocabulary: command-line name -> the class or factory it selects, each with a one-line
    description. Click choices, help text, name checks and parametrised tests all read the
    registry, so a name lives in one place."""

    def __init__(self, kind: str, entries: Iterable[tuple[str, Any, str]] = ()):
        super().__init__()
        self.kind, self.descriptions = kind, {}
        for name, value, description in entries:
            self.add(name, value, description)

    def add(self, name: str, value: Any, description: str) -> None:
        self[name] = value
        self.descriptions[name] = description

    def check(self, name: str, flag: str | None = None, extra: tuple[str, ...] = ()) -> str:
        """``name`` if it is in the registry (or ``extra``), else a ZoddError naming the choices."""
        if name in self or name in extra:
            return name
        flag = flag or self.kind
        raise ZoddError(f"invalid {flag}: {name!r} (choose one of "
                        f"{', '.join((*extra, *self))})")

    def help(self) -> str:
        """``name: description; ...`` for --help."""
        return "; ".join(f"{name}: {text}" for name, text in self.descriptions.items())


class Progress:
    """What a long call (``zodd.loop``, ``zodd.evaluation``) reports as it goes; this one says
    nothing. The command line's progress bar is a subclass; a notebook's can be another."""

    def note(self, text: str) -> None:
        """A line worth telling the user (a warm start, a prior trained once, a network's
        metrics)."""

    def update(self, task: str, done: int, total: int, detail: dict | None = None) -> None:
        """``done`` of ``total`` units of ``task`` ("reading images", "training the prior",
        "distilling", ...); ``detail``: that unit's values (a distillation step's log row)."""


@dataclass(frozen=True)
class StepContext:
    """Everything one step's candidates share (common random numbers).

    ``real`` holds the real subsample of this step, ``real[c]`` the images of class ``c``
    (shape ``[classes, n, ch, h, w]``). ``seed`` fixes any randomness inside the objective (the
    augmentation, a score's initialisation), so every candidate of the step sees the same
    transformation; a fresh one each step, drawn from the run's generator. ``fold`` names the
    part of a score's data the step scores on (fold 0 is kept for choosing the set).
    """

    net: nn.Module | None  # None for objectives that score S alone
    real: Tensor
    labels: Tensor  # synthetic labels, shape [N]
    num_classes: int
    seed: int
    augment: str = "affine"  # a zodd.augment.AUGMENTS name
    held_out: Tensor | None = None  # real images [classes, n, ...] never used to initialise S
    pixel_mean: tuple[float, ...] = (0.0,)  # to turn standardised images back into pixels
    pixel_std: tuple[float, ...] = (1.0,)
    # --one-pass: per class, the first rows of ``real`` whose embeddings the objective keeps
    # with their graph (``SharesRealPass.take_one_pass``) for the updater; 0: none
    one_pass: int = 0
    compile: bool = False  # --compile: the pass over the real batch through zodd.compiled
    # the part of a score's data to score on: 1..folds-1 on the search's steps (drawn with the
    # step's seed), 0 when the run chooses the set to keep (zodd.binding; a command's {fold})
    fold: int = 1
    folds: int = 5
    # dm: the weight of the synthetic images' cross-entropy under ``net`` added to each class's
    # loss (IDM's class-aware regulariser: --ce-weight times the network's accuracy); 0: none
    ce_weight: float = 0.0
    # an N-process run (zodd.distributed): ``real`` is this process's share of the batch, and
    # the objective combines its real-side statistic over the processes; None: one process
    shard: object = None

    def scoring_batch(self) -> tuple[Tensor, Tensor]:
        """Held-out real images (the step's real batch when none were drawn), flattened to
        ``[M, ch, h, w]``, and their labels ``[M]``."""
        batch = self.held_out if self.held_out is not None else self.real
        labels = torch.arange(batch.shape[0], device=batch.device)
        return batch.flatten(0, 1), labels.repeat_interleave(batch.shape[1])

    def pixels(self, images: Tensor) -> Tensor:
        """Standardised images ``[..., ch, h, w]`` -> [0, 1] pixels."""
        return to_pixels(images, self.pixel_mean, self.pixel_std)


def to_pixels(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Standardised images ``[..., ch, h, w]`` -> [0, 1] pixels, per-channel mean and std."""
    std_t = torch.tensor(std, device=images.device).view(-1, 1, 1)
    return images * std_t + torch.tensor(mean, device=images.device).view(-1, 1, 1)


@runtime_checkable
class BlackBox(Protocol):
    """f: candidates ``[K, N, ch, h, w]`` -> losses ``[K]``.

    ``blocks`` is optional: when present it returns ``[K, B]`` losses (one per class) that sum to
    the total. A box that also sets ``separable = True`` (and ``num_classes``) promises that class
    b's block depends only on class b's images, so an estimator may perturb every class at once
    and read B finite differences from one call.
    """

    differentiable: bool

    def __call__(self, candidates: Tensor) -> Tensor: ...


@runtime_checkable
class SharesRealPass(Protocol):
    """A bound box that embedded the real batch with the step's network (``--one-pass``): the
    box of an objective with ``shares_real_pass``, bound with ``StepContext.one_pass = k``."""

    def take_one_pass(self) -> Tensor:
        """The first k real rows' embeddings ``[classes, k, features]``, with their graph, for
        the network update's gradient; handed over once (the box keeps no reference, so they
        are neither kept with it nor sent to Ray workers)."""
        ...


@runtime_checkable
class Objective(Protocol):
    """A matching objective: bound to one step's context it becomes a :class:`BlackBox`."""

    name: str
    differentiable: bool
    needs_held_out: bool  # whether bind() reads ctx.held_out

    def bind(self, ctx: StepContext) -> BlackBox: ...


class WrappedBox:
    """A BlackBox evaluating through another one (``self.box``) on the zero-order path: it
    forwards what the inner box declares and routes totals and per-class blocks through one
    ``_evaluate(candidates, blocks)``."""

    box: BlackBox
    differentiable = False  # used on the zero-order path only

    @property
    def separable(self) -> bool:
        return bool(getattr(self.box, "separable", False))

    @property
    def num_classes(self):
        return getattr(self.box, "num_classes", None)

    def _evaluate(self, candidates: Tensor, blocks: bool) -> Tensor:
        raise NotImplementedError

    def __call__(self, candidates: Tensor) -> Tensor:
        return self._evaluate(candidates, blocks=False)

    def blocks(self, candidates: Tensor) -> Tensor:
        if not callable(getattr(self.box, "blocks", None)):
            raise AttributeError("blocks")
        return self._evaluate(candidates, blocks=True)


class EvaluationError(Exception):
    """A black box failed to give a value (crashed, timed out, printed garbage); the loop retries
    it, then counts it as a failure."""


@dataclass(frozen=True)
class Estimate:
    """What one estimator call returns: the loss at x, a gradient (estimate) and its cost."""

    loss: float | Tensor  # a 0-dim tensor where fetching it would stall a GPU
    grad: Tensor
    queries: int  # candidate sets evaluated by the black box
    extra: dict = field(default_factory=dict)


def as_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


DEVICE_NAMES = re.compile(r"(auto|cpu|cuda(:[0-9]+)?|mps)")


def check_device_name(name: str) -> None:
    """Refuse a device that is not one of auto, cpu, cuda, cuda:N, mps (whether it is present
    is asked only when a run starts: a config written on a GPU machine stays readable)."""
    if not isinstance(name, str) or not DEVICE_NAMES.fullmatch(name):
        raise ZoddError(f"invalid device: {name!r} (choose auto, cpu, cuda, cuda:N or mps)")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` is the first CUDA GPU when torch sees one, else
    the CPU. Asking for a device that is not present is a ZoddError.

    Random draws stay on the CPU (the run's generator) and are moved to the device, so a seed
    draws the same initialisations, batches and directions on every device; only the arithmetic
    differs by rounding. On CUDA, float32 convolutions and matrix products are kept in full
    precision (torch's default lets convolutions use TF32, whose 10-bit mantissa would swamp the
    finite differences of the zero-order estimators at sigma = 0.01).
    """
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise ZoddError(f"device {name!r} is not available here (torch sees {count} CUDA "
                            "device(s)); use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise ZoddError("device 'mps' is not available here; use --device cpu or auto")
    device = torch.device(name)
    if device.type == "cuda":
        _full_fp32()
    return device


def _full_fp32() -> None:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
