"""Matching objectives, each a black box once bound to one step's network and real batch.

``OBJECTIVES`` maps the CLI vocabulary (``--objective dm``) to the objective's class; every class
takes ``flip`` (whether horizontal flips are a valid augmentation for the data) and declares
``differentiable``.
"""
from objectives.distribution import DistributionMatching
from objectives.gradient import GradientMatching

OBJECTIVES = {
    "dm": DistributionMatching,
    "gm": GradientMatching,
}

__all__ = ["OBJECTIVES", "DistributionMatching", "GradientMatching"]
