"""Matching objectives, each a black box once bound to one step's network and real batch.

``OBJECTIVES`` maps the CLI vocabulary (``--objective dm``) to the objective's class; every class
takes ``flip`` (whether horizontal flips are a valid augmentation for the data) and declares
``differentiable``, ``needs_held_out`` (whether it scores on real images kept apart from S's
initialisation), ``uses_network`` and its defaults (``default_sigma``, ``default_directions``,
``default_lr``, ``native``: see objectives/matching.py and objectives/score.py). dm and gm are
differentiable matching losses, krr a differentiable kernel regression loss; prototype, trained
and command are scores with no gradient.
"""
from objectives.command import CommandScore
from objectives.distribution import DistributionMatching
from objectives.gradient import GradientMatching
from objectives.kernel import FeatureRegression, KernelRidge
from objectives.prototype import PrototypeScore
from objectives.trained import TrainedScore
from zodd.types import Registry

OBJECTIVES = Registry("objective", [
    ("dm", DistributionMatching, "distribution matching: mean embeddings per class"),
    ("gm", GradientMatching, "gradient matching: Dataset Condensation's layer-wise distance"),
    ("krr", KernelRidge, "kernel ridge regression from S to the real batch under the "
     "network's features (KIP / RFAD family; couples the classes)"),
    ("frepo", FeatureRegression, "FRePo's neural feature regression: krr with FRePo's ridge, "
     "loss, label margin term and scaled targets"),
    ("prototype", PrototypeScore,
     "error of a nearest-synthetic-prototype classifier (no gradient)"),
    ("trained", TrainedScore, "error of a small network trained on the set (no gradient)"),
    ("command", CommandScore, "a program's score of the set, through --command (no gradient)"),
])

__all__ = ["OBJECTIVES", "CommandScore", "DistributionMatching", "FeatureRegression",
           "GradientMatching", "KernelRidge",
           "PrototypeScore", "TrainedScore"]
