"""Named recipes (``--recipe``): the settings that reproduce a published method's structure,
as defaults the user's own flags override. The recipe's name is recorded in config.json
(``recipe``) beside the settings it produced.

* ``dm``: Distribution Matching (Zhao & Bilen, 2023): DM, DSA, a fresh network every iteration.
* ``dc``: Dataset Condensation (Zhao et al., 2021): gradient matching with DC's outer / inner
  schedule by IPC (zodd.plan), no augmentation.
* ``dsa``: DC with Differentiable Siamese Augmentation (Zhao & Bilen, 2021).
* ``idc``: IDC's structure (Kim et al., 2022): multi-formation with factor 2, gradient
  matching, DSA, and the network trained on real data between updates of S (``--updater ce``;
  ``--updater robust`` there is the paper's IDC + RDD setting), a fresh network every
  ``reinit_every`` iterations. Step sizes are zodd's (gm: SGD 0.1), not IDC's.
* ``idm``: Improved Distribution Matching (Zhao et al., CVPR 2023): multi-formation with factor
  2, DM with DSA, a queue of 100 networks trained on real data between uses (``--updater ce``;
  ``--updater robust`` there is the paper's IDM + RDD, its Table 5) and the class-aware
  cross-entropy term; S steps by SGD at IDM's 0.2. The queue's other defaults by IPC are in
  zodd.plan.
* ``frepo``: FRePo (Zhou et al., NeurIPS 2022): kernel regression on the features of FRePo's
  Conv drawn from a pool of 10 networks trained between uses (on S, FRePo's way, with
  ``--updater native``; on real data with ``ce`` or ``robust``, RDD on this base), learned
  labels, LAMB; each default's source in zodd.plan and zodd.networks. Its step size is not
  FRePo's 3e-4 (tuned for hundreds of thousands of GPU steps) but 0.01: a CPU affords some
  thousands, and on Fashion-MNIST IPC 1 after 148 steps LAMB at 3e-4, 3e-3 and 1e-2 made sets
  of 52.7, 61.1 and 69.9 % under FRePo's protocol (one network each; BENCHMARKS.md, "FRePo
  and learned labels").
"""
from __future__ import annotations

from zodd.types import Registry

RECIPES = Registry("recipe", [
    ("dm", {"objective": "dm", "updater": "native", "augment": "dsa"},
     "distribution matching, DSA, a fresh network every iteration"),
    ("dc", {"objective": "gm", "updater": "native", "augment": "none"},
     "gradient matching on Dataset Condensation's schedule, no augmentation"),
    ("dsa", {"objective": "gm", "updater": "native", "augment": "dsa"},
     "gradient matching on DC's schedule with DSA"),
    ("idc", {"representation": "multi", "factor": 2, "objective": "gm", "augment": "dsa",
             "updater": "ce", "reinit_every": 100},
     "multi-formation (factor 2), gradient matching, DSA, the network trained on real data "
     "between updates of S (use --updater robust for IDC + RDD)"),
    ("idm", {"representation": "multi", "factor": 2, "objective": "dm", "augment": "dsa",
             "updater": "ce", "queue_size": 100, "lr": 0.2},
     "multi-formation (factor 2), distribution matching with DSA under a queue of networks "
     "trained on real data, and IDM's class-aware CE term (use --updater robust for IDM + RDD)"),
    ("frepo", {"objective": "frepo", "labels": "learn", "network": "frepo", "pool_size": 10,
               "updater": "native", "augment": "none", "batch_size": 102, "lr": 0.01},
     "FRePo: feature regression under a pool of 10 networks trained on S between uses, "
     "learned labels, LAMB (use --updater ce or robust to train the pool on real data)"),
])


def with_recipe(values: dict, name: str | None) -> dict:
    """``values`` (settings given explicitly) on top of recipe ``name``'s settings."""
    if name is None:
        return dict(values)
    return {**RECIPES[RECIPES.check(name)], "recipe": name, **values}


def listing() -> str:
    """One line a recipe: its name, what it is, and its settings."""
    width = max(map(len, RECIPES))
    return "\n".join(f"{name:<{width}}  {RECIPES.descriptions[name]}\n{'':<{width}}  " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
        for name, settings in RECIPES.items())
