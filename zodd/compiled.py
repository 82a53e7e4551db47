"""``--compile``: the ConvNet's passes over the real batch through ``torch.compile``.

The loop draws a fresh network every few iterations; compiling the module itself would compile
again for each one. Here the compiled function takes the parameters as inputs
(``torch.func.functional_call`` on one template network per architecture), so every network of
the same shape reuses the code compiled for the first. Shapes are static: a run's real batch
keeps its size, so each pass (no-grad embedding, training forward) compiles once.

What it changes: inductor fuses instance norm, ReLU and pooling and orders the sums
differently, so values differ from eager ones by float rounding (on Fashion-MNIST batches:
embeddings by about 1e-6 relative, gradients about 1e-4 of the largest; BENCHMARKS.md, "One
pass over the real batch").
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn
from torch.func import functional_call

from zodd.types import ZoddError

_COMPILED: dict[str, tuple] = {}  # repr of an architecture -> (features, logits) compiled
# inductor's C++ build logs a warning about CUDA_HOME on a machine without CUDA; not ours to show
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


class CompiledNet:
    """``net``'s ``embed`` and forward run by the code compiled for its architecture, with its
    own (live) parameters; ``classifier`` is ``net``'s."""

    def __init__(self, net: nn.Module):
        self.net = net
        key = repr(net)
        if key not in _COMPILED:
            template = copy.deepcopy(net)

            def features(params: dict[str, Tensor], x: Tensor) -> Tensor:
                return functional_call(template.features, params, (x,))

            def logits(params: dict[str, Tensor], x: Tensor) -> Tensor:
                return functional_call(template, params, (x,))

            _COMPILED[key] = (torch.compile(features, dynamic=False),
                              torch.compile(logits, dynamic=False))
        self._features, self._logits = _COMPILED[key]

    @property
    def classifier(self) -> nn.Module:
        return self.net.classifier

    def embed(self, x: Tensor) -> Tensor:
        return _run(self._features, dict(self.net.features.named_parameters()), x)

    def __call__(self, x: Tensor) -> Tensor:
        return _run(self._logits, dict(self.net.named_parameters()), x)


def _run(fn, params: dict[str, Tensor], x: Tensor) -> Tensor:
    try:
        return fn(params, x)
    except Exception as exc:  # inductor needs a C++ compiler (CPU) or Triton (CUDA)
        if isinstance(exc, torch._dynamo.exc.BackendCompilerFailed):
            raise ZoddError(f"--compile: torch.compile failed here ({str(exc).splitlines()[0]}"
                            "); drop --compile") from None
        raise


def maybe(net: nn.Module, compile: bool):
    """``net`` as the objective's real-batch pass and the updater should call it."""
    return CompiledNet(net) if compile else net
