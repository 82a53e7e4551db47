"""zodd: zero-order and robust dataset distillation.

``zodd.distill``, ``zodd.evaluate``, ``zodd.load``, ``zodd.export``, ``zodd.tune`` and
``zodd.compare`` are the
Python API (zodd.api); the command line is a thin client of them.
"""

__version__ = "0.1.0"

from zodd.api import (Evaluation, Report, Run, compare, distill, evaluate,  # noqa: E402
                      export, load, settings, tune)

__all__ = ["Evaluation", "Report", "Run", "SweepOptions", "compare", "distill", "evaluate",
           "export", "load", "settings", "tune", "__version__"]


def __getattr__(name: str):
    """``zodd.SweepOptions`` (zodd.api's, imported when asked for)."""
    if name == "SweepOptions":
        from zodd import api

        return api.SweepOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
