"""zodd: zero-order and robust dataset distillation.

``zodd.distill``, ``zodd.evaluate``, ``zodd.load``, ``zodd.export``, ``zodd.tune`` and
``zodd.compare`` are the
Python API (zodd.api); the command line is a thin client of them.
"""

__version__ = "0.1.0"

from zodd.api import (Evaluation, Report, Run, SweepOptions, compare, distill,  # noqa: E402
                      evaluate, export, load, settings, tune)

__all__ = ["Evaluation", "Report", "Run", "SweepOptions", "compare", "distill", "evaluate",
           "export", "load", "settings", "tune", "__version__"]
