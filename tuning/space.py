"""The search space of a sweep: which ``zodd distill`` settings vary, and over what.

A parameter is written ``NAME=SPEC`` with NAME a DistillConfig field (``-`` or ``_``) and SPEC
one of

* ``a,b,c``      listed values (a grid axis, or a uniform choice for random and nevergrad);
* ``lo:hi``      a range, uniform (integers: every integer from lo to hi inclusive);
* ``lo:hi:log``  a range, log-uniform.

Ranges need a search that samples (random or nevergrad); grid search needs listed values. Every
listed value and both ends of every range are checked against DistillConfig before Ray starts, so
a bad value is one clear line, not a failed trial. Ray is imported only to build the Ray form of
the space (``to_ray``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from zodd.config import DistillConfig
from zodd.plan import settings
from zodd.types import ZoddError

# the paper's hand-tuned settings: Fig. 2 (alpha), Table 9 (clusters), Table 10 (batch size)
DEFAULT_SPECS = {"alpha": "0.2:1.0", "clusters": "5,10,20,30", "batch_size": "64,128,256,512"}
DEFAULT_GRID = {"alpha": "0.2,0.4,0.6,0.8,1.0"}
FIXED = {"dataset", "data_dir", "workers", "ray_address", "checkpoint_every", "iterations",
         "max_seconds", "max_queries"}  # set for the whole sweep, never searched


@dataclass(frozen=True)
class Param:
    name: str
    values: tuple | None = None  # listed values
    low: float | None = None  # or a range
    high: float | None = None
    log: bool = False
    integer: bool = False

    def describe(self) -> str:
        if self.values is not None:
            return ",".join(str(v) for v in self.values)
        return f"{self.low}:{self.high}" + (":log" if self.log else "")


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in fields(DistillConfig)}


def _convert(name: str, text: str, kind: str, flag: str = "--param") -> Any:
    text = text.strip()
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return None if text.lower() == "none" else text
    except ValueError:
        raise ZoddError(f"{flag} {name}: {text!r} is not a valid {kind}") from None


def _kind(field: dataclasses.Field) -> str:
    t = str(field.type)
    for kind in ("bool", "int", "float"):
        if t.startswith(kind):
            return kind
    return "str"


def parse(text: str) -> Param:
    """``NAME=SPEC`` -> Param, checked against DistillConfig."""
    if "=" not in text:
        raise ZoddError(f"--param {text!r}: expected NAME=VALUES, e.g. alpha=0.2,0.5,0.8 or "
                        "alpha=0.2:1.0")
    name, spec = (s.strip() for s in text.split("=", 1))
    name = name.replace("-", "_")
    known = _field_types()
    if name not in known:
        raise ZoddError(f"--param {name}: not a zodd distill setting")
    if name in FIXED:
        raise ZoddError(f"--param {name}: set for the whole sweep, not searched")
    kind = _kind(known[name])
    if not spec:
        raise ZoddError(f"--param {name}: no values")
    if ":" in spec:
        parts = spec.split(":")
        if kind not in ("int", "float") or len(parts) not in (2, 3) or (
                len(parts) == 3 and parts[2] != "log"):
            raise ZoddError(f"--param {name}: a range is lo:hi or lo:hi:log over numbers")
        low, high = (_convert(name, p, kind) for p in parts[:2])
        if not low < high:
            raise ZoddError(f"--param {name}: range {low}:{high} is empty")
        log = len(parts) == 3
        if log and low <= 0:
            raise ZoddError(f"--param {name}: a log range needs lo > 0")
        param = Param(name, low=low, high=high, log=log, integer=kind == "int")
        probes = (low, high)
    else:
        values = tuple(dict.fromkeys(_convert(name, v, kind) for v in spec.split(",")))
        param, probes = Param(name, values=values, integer=kind == "int"), values
    for value in probes:
        try:
            settings(**{name: value})
        except ZoddError as exc:
            raise ZoddError(f"--param {name}={value}: {exc}") from None
    return param


def fixed(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` for ``--set``: one value of any zodd distill setting."""
    if "=" not in text:
        raise ZoddError(f"--set {text!r}: expected NAME=VALUE, e.g. iterations=100")
    name, value = (s.strip() for s in text.split("=", 1))
    name = name.replace("-", "_")
    known = _field_types()
    if name not in known:
        raise ZoddError(f"--set {name}: not a zodd distill setting")
    return name, _convert(name, value, _kind(known[name]), "--set")


def build(specs: list[str], search: str, ipc: int, defaults: bool = True) -> list[Param]:
    """The sweep's parameters: the paper's three (unless ``defaults`` is off) updated by
    ``specs``. ``clusters`` only matters above 10 images per class, so it is left out of the
    default space below that."""
    chosen: dict[str, Param] = {}
    if defaults:
        base = {**DEFAULT_SPECS, **(DEFAULT_GRID if search == "grid" else {})}
        if ipc <= 10:
            base.pop("clusters")
        chosen = {name: parse(f"{name}={spec}") for name, spec in base.items()}
    for text in specs:
        p = parse(text)
        chosen[p.name] = p
    if not chosen:
        raise ZoddError("nothing to search: give --param NAME=VALUES")
    if search == "grid":
        ranged = [p.name for p in chosen.values() if p.values is None]
        if ranged:
            raise ZoddError(f"grid search needs listed values, not ranges: {', '.join(ranged)} "
                            "(e.g. alpha=0.2,0.4,0.6,0.8,1.0)")
    return list(chosen.values())


def grid_size(params: list[Param]) -> int:
    n = 1
    for p in params:
        n *= len(p.values)
    return n


def to_ray(params: list[Param], search: str) -> dict:
    """Ray Tune's form of the space."""
    from ray import tune

    space = {}
    for p in params:
        if p.values is not None:
            space[p.name] = (tune.grid_search(list(p.values)) if search == "grid"
                             else tune.choice(list(p.values)))
        elif p.integer:
            space[p.name] = (tune.lograndint(int(p.low), int(p.high) + 1) if p.log
                             else tune.randint(int(p.low), int(p.high) + 1))
        else:
            space[p.name] = (tune.loguniform(p.low, p.high) if p.log
                             else tune.uniform(p.low, p.high))
    return space


def check_known(params: list[Param]) -> None:
    """Every name a field (a guard for spaces read back from a sweep's settings file)."""
    known = _field_types()
    for p in params:
        if p.name not in known:
            raise ZoddError(f"unknown setting {p.name!r} in the sweep's space")


def to_dict(params: list[Param]) -> list[dict]:
    return [dataclasses.asdict(p) for p in params]


def from_dict(rows: list[dict]) -> list[Param]:
    params = [Param(**{**r, "values": tuple(r["values"]) if r.get("values") is not None
                       else None}) for r in rows]
    check_known(params)
    return params
