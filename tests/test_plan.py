"""The resolved plan, the registries as the vocabulary, and the module map's import rules."""
import ast
import re
import json
from pathlib import Path

import click
import pytest

from objectives import OBJECTIVES
from zodd.cli import distill as distill_command
from zodd.options import GROUPS, OPTIONS
from zodd.config import DistillConfig
from zodd.driver import distill
from zodd.plan import REGISTRIES, check, resolve
from zodd.types import ZoddError

ROOT = Path(__file__).resolve().parents[1]

# The module map (ARCHITECTURE.md): a module may import only modules of a lower layer. Lazy
# imports inside functions count too.
LAYERS = [
    {"zodd", "zodd.types", "zodd.files"},
    {"zodd.folder", "zodd.config", "zodd.augment", "zodd.nearest", "zodd.models", "zodd.guard",
     "zodd.compiled",
     "zodd.representation", "zodd.recipes", "zodd.options", "zodd.labels"},
    {"zodd.data", "zodd.robust", "zodd.estimators", "zodd.steppers", "zodd.rundir",
     "zodd.parallel", "zodd.distributed", "objectives.matching", "objectives.score"},
    {"zodd.prior", "zodd.networks", "zodd.binding", "zodd.zca", "objectives.distribution", "objectives.gradient", "objectives.kernel", "objectives.prototype",
     "objectives.trained", "objectives.command"},
    {"objectives", "zodd.synthetic"},
    {"zodd.plan", "zodd.evaluation", "zodd.sets", "zodd.baselines"},
    {"zodd.build", "zodd.export"},
    {"zodd.loop"},
    {"zodd.scores"},
    {"zodd.driver", "zodd.report"},
    {"tuning.space", "tuning.trial", "tuning.results"},
    {"tuning", "tuning.sweep"},
    {"zodd.api", "zodd.console"},
    {"zodd.cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
OBJECTIVE_HELPERS = {"zodd.types", "zodd.augment", "zodd.nearest", "zodd.compiled", "zodd.labels",
                     "objectives.matching",
                     "objectives.score", "objectives.distribution", "objectives.gradient",
                     "objectives.kernel",
                     "objectives.prototype", "objectives.trained", "objectives.command"}


def _module_files():
    for package in ("zodd", "objectives", "tuning"):
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            yield name, path


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & set(RANK)
            found |= submodules or {node.module}  # `from pkg import module` imports the module
    return {n for n in found if n in RANK}


def test_every_module_is_on_the_map():
    assert {name for name, _ in _module_files()} == set(RANK)


@pytest.mark.parametrize("name, path", list(_module_files()), ids=[n for n, _ in _module_files()])
def test_no_module_imports_one_above_it(name, path):
    upward = {m for m in _imports(path) if RANK[m] >= RANK[name] and m != name
              and not (name == "zodd" or m == "zodd")}
    assert not upward, f"{name} imports {sorted(upward)} (same layer or above)"
    if name.startswith("objectives."):
        assert _imports(path) - {"zodd"} <= OBJECTIVE_HELPERS, name


def test_config_imports_nothing_above_types():
    assert _imports(ROOT / "zodd" / "config.py") <= {"zodd.types"}


def test_every_registry_name_is_a_click_choice_and_described():
    options = {p.name: p for p in distill_command.params}
    for field, registry in REGISTRIES.items():
        assert registry and all(registry.descriptions[n] for n in registry)
        option = options[field]
        if isinstance(option.type, click.Choice):
            assert set(registry) <= set(option.type.choices)
        for name in registry:
            assert f"{name}:" in option.help, (field, name)
    fields = set(DistillConfig.__dataclass_fields__)
    assert set(OPTIONS) == fields  # every setting has its text and heading, and nothing else
    assert {p.name for p in distill_command.params} >= fields
    assert {o.group for o in OPTIONS.values()} <= set(GROUPS)


def test_no_hand_written_choices_in_the_cli():
    from tuning.sweep import SCHEDULERS, SEARCHES
    from tuning.trial import METRIC_NAMES
    from zodd.baselines import BASELINES

    source = (ROOT / "zodd" / "cli.py").read_text()
    assert not re.search(r"Choice\(\s*[\[(]\s*['\"]", source)  # no Choice of literal names
    for registry in (*REGISTRIES.values(), SCHEDULERS, SEARCHES, METRIC_NAMES, BASELINES):
        if len(registry) < 2:
            continue  # one name: nothing listed to find
        listed = "|".join(registry)
        assert listed not in source
        assert ", ".join(f'"{n}"' for n in registry) not in source


def test_resolve_fills_every_auto_setting(digits):
    plan = resolve(DistillConfig(), digits)
    assert (plan.estimator, plan.optimizer, plan.lr) == ("autograd", "sgd", 1.0)
    assert (plan.sigma, plan.directions, plan.lowres, plan.device) == (0.01, 128, 1, "cpu")
    assert (plan.width, plan.depth, plan.flip, plan.reinit_every) == (64, 2, False, 10)
    assert plan.batch_size == min(256, min(len(i) for i in digits.class_indices()))
    score = resolve(DistillConfig(objective="prototype"), digits)
    assert (score.estimator, score.optimizer, score.lr, score.sigma, score.directions) == (
        "es", "adam", 0.01, 0.3, 32)
    # a score holding images out chooses its set on fold 0, and its warm start stops by it
    assert (score.init, score.select_every, score.warm_iterations) == ("dm", 5, 200)
    last = resolve(DistillConfig(objective="prototype", select_every=0), digits)
    assert (last.select_every, last.warm_iterations) == (0, 20)
    assert plan.select_every == 0  # a matching objective has no fold 0
    for command, chooses in (("prog {input}", False), ("prog {input} {fold}", True)):
        cmd = resolve(DistillConfig(objective="command", command=command), digits)
        assert bool(cmd.select_every) == chooses
    paper = resolve(DistillConfig(objective="prototype", estimator="gaussian"), digits)
    assert (paper.optimizer, paper.lr) == ("paper", 0.1)
    guided = resolve(DistillConfig(objective="prototype", surrogate="dm"), digits)
    assert guided.estimator == "gaussian"  # a surrogate guides the gaussian estimator
    assert not score.uses_network
    gm = resolve(DistillConfig(objective="gm", updater="native", model_steps=3), digits)
    assert (gm.lr, gm.train_on_synthetic, gm.reinit_every) == (0.1, 3, 10)
    dm = resolve(DistillConfig(updater="native"), digits)
    assert (dm.train_on_synthetic, dm.reinit_every) == (0, 1)
    assert resolve(DistillConfig(lr=0.3, optimizer="adam"), digits).lr == 0.3


def test_check_refuses_names_and_contradictions():
    for field, value in (("dataset", "imagenet"), ("objective", "nope"), ("updater", "best"),
                         ("optimizer", "lbfgs"), ("init", "zeros")):
        with pytest.raises(ZoddError, match=field):
            check(DistillConfig(**{field: value}))
    with pytest.raises(ZoddError, match="differentiable"):
        check(DistillConfig(objective="prototype", estimator="autograd"))
    with pytest.raises(ZoddError, match="workers"):
        check(DistillConfig(workers=2))  # dm resolves to autograd
    assert check(DistillConfig(objective="prototype", workers=2)).workers == 2


def test_a_run_checks_its_config_once_and_a_changed_copy_again(digits, monkeypatch):
    """zodd.distill: the settings checked where user input becomes a config, not again in the
    API or in resolve; a copy changed with dataclasses.replace carries no mark and is checked
    when it is resolved (a hand-made bad config is refused there too)."""
    import dataclasses

    import zodd
    from zodd import plan as plans

    calls = []
    real = plans.check
    monkeypatch.setattr(plans, "check", lambda cfg: calls.append(cfg) or real(cfg))
    zodd.distill(dataset="digits", ipc=1, iterations=1, batch_size=8)
    assert len(calls) == 1
    checked = plans.settings(ipc=1)
    assert plans.is_checked(checked) and plans.settings(checked) is checked
    changed = dataclasses.replace(checked, objective="nope")
    assert not plans.is_checked(changed)
    with pytest.raises(ZoddError, match="objective"):
        resolve(changed, digits)


def test_config_json_keeps_what_was_asked_and_the_plan(digits, tmp_path):
    cfg = DistillConfig(ipc=1, iterations=1, batch_size=8)
    distill(cfg, digits, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["estimator"] == "auto" and saved["resolved"]["estimator"] == "autograd"
    assert saved["resolved"] == resolve(cfg, digits).to_dict()
    assert DistillConfig.from_dict(saved) == cfg  # --config reads it back


def test_objectives_declare_every_fact_the_plan_reads():
    for name, cls in OBJECTIVES.items():
        objective = cls() if name != "command" else cls(argv=("true",))
        for fact in ("differentiable", "needs_held_out", "uses_network", "default_sigma",
                     "default_directions", "default_lr", "native"):
            assert hasattr(objective, fact), (name, fact)


@pytest.mark.parametrize("first", ["tuning.trial", "tuning.sweep", "zodd", "zodd.cli"])
def test_each_package_imports_first_in_a_fresh_interpreter(first):
    """A Ray trial's process imports tuning.trial before anything of zodd; tuning imports zodd,
    so zodd must not import tuning back while it loads (zodd.SweepOptions is fetched lazily)."""
    import subprocess
    import sys

    code = (f"import {first}; import zodd, tuning.sweep; "
            "assert zodd.SweepOptions is tuning.sweep.SweepOptions")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
