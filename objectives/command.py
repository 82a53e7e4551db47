"""Any external program as the objective.

For each batch of candidates zodd writes ``candidates.npz`` to a temporary directory:
``images`` float32 [K, N, ch, h, w] in [0, 1] pixels (values of S beyond them clipped, as an
image file would clip them) and ``labels`` int64 [N] (class-major); with ``--labels learn``, ``labels`` is float32 [K, N, classes] instead, each candidate's label
vectors (zodd.labels: they start as FRePo's centred one-hot, 1 - 1/C for the class and -1/C
elsewhere).
It runs the program without a shell, with ``{input}`` in its arguments replaced by the file's
path (or the path appended when no argument holds ``{input}``), ``{seed}`` by the step's seed (a
fresh one each step from the run's generator, for the program's own randomness: a model's
initialisation, a subsample), ``{fold}`` by the part of its data to score (1..folds-1 on the
search's steps, drawn with the seed; 0 when zodd chooses the set to keep, with seed 0) and
``{folds}`` by their number, and reads from its standard
output a JSON list of K numbers, lower is better (a bare number is accepted when K = 1, and
``{"scores": [...]}`` too). A program that exits non-zero, runs past the timeout or prints
anything else raises EvaluationError, which the loop retries and then counts as a failure.
"""
from __future__ import annotations

import json
import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from objectives.score import Score
from zodd.types import EvaluationError, StepContext, to_pixels


@dataclass(frozen=True)
class CommandScore(Score):
    argv: tuple[str, ...] = ()
    timeout: float = 60.0
    name: str = "command"
    needs_held_out: bool = False  # the program brings its own data
    reads_labels: bool = True  # --labels learn: the candidates' label vectors go in the file

    @classmethod
    def chooses_on_fold(cls, command: str | None = None) -> bool:
        """A program's data is its own: a run can choose its set on fold 0 when the program
        takes ``{fold}``."""
        return "{fold}" in (command or "")

    def bind(self, ctx: StepContext) -> "BoundCommand":
        return BoundCommand(self, ctx)


class BoundCommand:
    differentiable = False

    def __init__(self, spec: CommandScore, ctx: StepContext):
        self.spec = spec
        self.labels = ctx.labels.cpu().numpy().astype(np.int64)
        self.pixel_mean, self.pixel_std = ctx.pixel_mean, ctx.pixel_std
        self.fields = {"{seed}": str(ctx.seed), "{fold}": str(ctx.fold),
                       "{folds}": str(ctx.folds)}

    def _argv(self, path: Path) -> list[str]:
        fields = {**self.fields, "{input}": str(path)}
        argv = []
        for arg in self.spec.argv:
            for key, value in fields.items():
                arg = arg.replace(key, value)
            argv.append(arg)
        return argv if any("{input}" in a for a in self.spec.argv) else [*argv, str(path)]

    def __call__(self, candidates: Tensor, labels: Tensor | None = None) -> Tensor:
        k = candidates.shape[0]
        written = (self.labels if labels is None else
                   labels.detach().cpu().numpy().astype(np.float32))
        # the contract's [0, 1]: S's values beyond it are clipped, as an image file would be
        pixels = to_pixels(candidates.detach(), self.pixel_mean, self.pixel_std).clamp(0, 1)
        pixels = pixels.cpu().numpy().astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="zodd-") as tmp:
            path = Path(tmp) / "candidates.npz"
            np.savez(path, images=pixels, labels=written)
            argv = self._argv(path)
            try:
                done = subprocess.run(argv, capture_output=True, text=True,
                                      timeout=self.spec.timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise EvaluationError(f"{argv[0]} timed out after {self.spec.timeout:g} s") from None
            except OSError as exc:
                raise EvaluationError(f"could not run {argv[0]}: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [""])[-1][:200]
            raise EvaluationError(f"{argv[0]} exited with status {done.returncode}: {last}")
        return torch.tensor(parse_scores(done.stdout, k), dtype=candidates.dtype,
                            device=candidates.device)


def parse_scores(text: str, k: int) -> list[float]:
    """K scores from a program's output; EvaluationError on anything else. NaN and infinities
    are passed on (the loop treats them as failed candidates)."""
    try:
        value = json.loads(text)
    except ValueError:
        raise EvaluationError(f"printed {text.strip()[:80]!r}, not JSON") from None
    if isinstance(value, dict) and "scores" in value:
        value = value["scores"]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and k == 1:
        value = [value]
    if (not isinstance(value, list) or len(value) != k
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise EvaluationError(f"printed {text.strip()[:80]!r}, not a list of {k} numbers")
    return [float(v) if math.isfinite(v) else math.nan for v in value]
