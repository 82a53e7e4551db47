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
    """``zodd.SweepOptions``, imported when asked for: tuning/ imports zodd, so zodd imports
    tuning only where it is used."""
    if name == "SweepOptions":
        from tuning.sweep import SweepOptions

        return SweepOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
