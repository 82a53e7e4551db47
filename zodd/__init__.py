"""zodd: zero-order and robust dataset distillation."""

__version__ = "0.1.0"
