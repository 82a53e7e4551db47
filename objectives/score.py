"""What the scores with no gradient (prototype, trained, command) declare alike."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    flip: bool = False
    differentiable: bool = False
    needs_held_out: bool = True  # scored on real images never used to initialise S
    uses_network: bool = False  # scores S alone: the loop trains no network for it
    reads_labels: bool = False  # takes one label vector a candidate image (--labels learn)
    shares_real_pass: bool = False  # no network pass over real images for --one-pass to share
    # a piecewise-constant score needs a radius that crosses decision boundaries
    # (benchmarks/blackbox.py: 0.01 barely moves it, 1.0 diverges)
    default_sigma: float = 0.3
    # each query is a full evaluation of a candidate set; the benchmarks ran with 32
    default_directions: int = 32
    default_lr: float | None = None  # None: the paper's decaying step (eq. 18)
    native: str = ""  # no network, so no native schedule

    @classmethod
    def chooses_on_fold(cls, command: str | None = None) -> bool:
        """Whether the set a run keeps can be chosen on data its search never scores (fold 0
        of the held-out images, zodd.binding): the scores on zodd's held-out images can."""
        return cls.needs_held_out
