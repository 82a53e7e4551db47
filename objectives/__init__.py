"""Matching objectives, each a black box once bound to one step's network and real batch.

``OBJECTIVES`` maps the CLI vocabulary (``--objective dm``) to the objective's class; every class
takes ``flip`` (whether horizontal flips are a valid augmentation for the data) and declares
``differentiable`` and ``needs_held_out`` (whether it scores on real images kept apart from S's
initialisation). dm and gm are differentiable matching losses; prototype, trained and command
are scores with no gradient.
"""
from objectives.command import CommandScore
from objectives.distribution import DistributionMatching
from objectives.gradient import GradientMatching
from objectives.prototype import PrototypeScore
from objectives.trained import TrainedScore

OBJECTIVES = {
    "dm": DistributionMatching,
    "gm": GradientMatching,
    "prototype": PrototypeScore,
    "trained": TrainedScore,
    "command": CommandScore,  # built from --command and --command-timeout
}

__all__ = ["OBJECTIVES", "CommandScore", "DistributionMatching", "GradientMatching",
           "PrototypeScore", "TrainedScore"]
