import pytest

from zodd.config import DistillConfig
from zodd.plan import check
from zodd.types import ZoddError


def test_json_round_trip():
    cfg = DistillConfig(dataset="fashion-mnist", ipc=1, alpha=0.5, max_seconds=3.0)
    assert DistillConfig.from_dict({**cfg.to_dict(), "version": "x", "git_sha": None}) == cfg


@pytest.mark.parametrize("field, value", [
    ("ipc", 0), ("alpha", 0.0), ("alpha", 1.5), ("clusters", 0), ("batch_size", 0),
    ("dataset", "imagenet"), ("objective", "nope"), ("estimator", "nope"), ("sigma", -1.0),
    ("lr", float("nan")), ("max_seconds", float("inf")), ("cvar_tail", "middle"), ("cvar_terms", "min"),
])
def test_bad_values_name_their_field(field, value):
    with pytest.raises(ZoddError, match=field.replace("_", "-")):
        check(DistillConfig(**{field: value}))


@pytest.mark.parametrize("raw, match", [
    ({"ipc": "ten"}, "ipc"), ({"alpha": True}, "alpha"), ({"colour": 1}, "colour"),
    ({"ipc": None}, "ipc"), ([], "object"),
])
def test_from_dict_rejects_bad_fields(raw, match):
    with pytest.raises(ZoddError, match=match):
        DistillConfig.from_dict(raw)
