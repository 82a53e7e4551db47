"""The evidence benchmarks' bookkeeping (benchmarks/harness.py, paper.py, ablation.py) on fake runs:
paired differences, verdicts and tables must be right before hours of runs rest on them."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablation  # noqa: E402
import harness  # noqa: E402
import paper  # noqa: E402

BUDGET = harness.Budget("digits", ipcs=(1,), objectives=("dm",), seeds=3, eval_seeds=2,
                     iterations=5, batch_size=8)


def fake_run(out, name, seed, acc, cluster_min, file="metrics.json"):
    run = harness.run_dir(out, BUDGET, name, seed)
    run.mkdir(parents=True, exist_ok=True)
    values = dict(acc=acc, cluster_min=cluster_min, noise=acc - 1, blur=acc - 2, invert=10.0)
    (run / file).write_text(json.dumps({m: {"mean": v, "std": 0.0} for m, v in values.items()}))


def test_paired_differences_and_verdicts(tmp_path):
    for seed, (native, robust) in enumerate([(80, 83), (82, 84), (81, 85)]):
        fake_run(tmp_path, "ipc1-dm-native", seed, 90.0, native)
        fake_run(tmp_path, "ipc1-dm-native", seed, 70.0, 60.0, "metrics_random.json")
        fake_run(tmp_path, f"ipc1-dm-{paper.ROBUST}", seed, 90.5, robust)
    report = paper.tables(BUDGET, tmp_path, ablation=False)
    d = report["paired"]["IPC 1, dm: robust − native"]
    assert d["seeds"] == 3
    assert d["cluster_min"][0] == pytest.approx(3.0)  # (3 + 2 + 4) / 3
    assert d["cluster_min"][1] == pytest.approx((2 / 3) ** 0.5)  # population std of 3, 2, 4
    table = report["main"]["IPC 1, dm"]
    assert table["random real"]["acc"] == (70.0, 0.0)
    text = paper.markdown(report)
    assert "raised Cluster-min by 3.00 points, beyond the seed-to-seed spread" in text


def test_a_change_within_the_spread_is_called_so(tmp_path):
    for seed, (native, robust) in enumerate([(80, 83), (82, 80), (81, 81)]):
        fake_run(tmp_path, "ipc1-dm-native", seed, 90.0, native)
        fake_run(tmp_path, f"ipc1-dm-{paper.ROBUST}", seed, 90.0, robust)
    text = paper.markdown(paper.tables(BUDGET, tmp_path, ablation=False))
    assert "no Cluster-min change beyond the seed-to-seed spread (+0.33" in text


def test_pairs_stop_at_the_first_missing_seed(tmp_path):
    """Seed 1 missing: only seed 0 pairs, and seed 2 is not paired with another seed's run."""
    fake_run(tmp_path, "ipc1-dm-ce", 0, 90.0, 80.0)
    fake_run(tmp_path, "ipc1-dm-ce", 2, 90.0, 99.0)
    for seed in range(3):
        fake_run(tmp_path, "ipc1-dm-native", seed, 90.0, 70.0)
    results = ablation.collect(BUDGET, tmp_path, None, run=False)
    assert len(results["ipc1-dm-ce"]) == 1 and len(results["ipc1-dm-native"]) == 3
    d = harness.paired(results, "ipc1-dm-ce", "ipc1-dm-native")
    assert d["seeds"] == 1 and d["cluster_min"] == (10.0, 0.0)


def test_a_claimed_run_is_not_made_twice(tmp_path):
    run = tmp_path / "x-s0"
    with harness.claimed(run) as first, harness.claimed(run) as second:
        assert first and not second
    with harness.claimed(run) as again:
        assert again  # released


def test_ablation_settings_name_each_run_once():
    names = [n for n, _ in ablation.settings(harness.BUDGETS["cpu"])]
    assert len(names) == len(set(names))
    assert "ipc10-dm-robust-lower-a1.0" not in names  # alpha 1 is the mean for both tails
    shared = {n for n, _ in paper.settings(harness.BUDGETS["cpu"], ablation=True)} & set(names)
    assert {"ipc10-dm-native", "ipc10-dm-ce", f"ipc10-dm-{paper.ROBUST}"} <= shared


def test_shared_settings_have_the_same_flags_in_both_scripts():
    budget = harness.BUDGETS["cpu"]
    ours = dict(ablation.settings(budget))
    for name, flags in paper.settings(budget, ablation=True):
        if name in ours:
            assert [str(f) for f in flags] == [str(f) for f in ours[name]], name


def test_ablation_names_the_change_that_moved_cluster_min(tmp_path):
    for seed, (native, ce, upper) in enumerate([(70, 75, 75), (71, 77, 76), (72, 76, 77)]):
        fake_run(tmp_path, "ipc1-dm-native", seed, 90.0, native)
        fake_run(tmp_path, "ipc1-dm-ce", seed, 90.0, ce)
        fake_run(tmp_path, "ipc1-dm-robust-upper-a0.8", seed, 90.0, upper)
    results = ablation.collect(BUDGET, tmp_path, None, run=False)
    diffs = {f"{a} − {b}": d for a, b in ablation.comparisons(BUDGET)
             if (d := harness.paired(results, a, b)) is not None}
    (line,) = ablation.verdicts(BUDGET, diffs)
    assert "real-data CE over native (+5.00 ± 0.82, 3 seeds)" in line
    assert "CVaR (upper tail) over CE" not in line  # 0, +(-1), +1: within the spread


def test_table_4b_rows_come_from_the_ipc10_dm_runs(tmp_path):
    budget = harness.Budget("digits", ipcs=(10,), objectives=("dm",), seeds=1, eval_seeds=1,
                         iterations=5, batch_size=8)
    for (label, name), cm in zip(paper.TERMS.items(), (80, 81, 82, 83)):
        run = harness.run_dir(tmp_path, budget, f"ipc10-dm-{name}", 0)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(
            {m: {"mean": cm if m == "cluster_min" else 90.0, "std": 0.0} for m in harness.METRICS}))
    terms = paper.tables(budget, tmp_path, ablation=True)["terms"]
    assert [row["cluster_min"][0] for row in terms.values()] == [80, 81, 82, 83]
    assert "Table 4b" in paper.markdown(paper.tables(budget, tmp_path, ablation=True))


def test_a_random_baseline_is_reused_across_objectives(tmp_path):
    """The random-real set depends on data set, IPC and seed: gm's native run takes dm's."""
    fake_run(tmp_path, "ipc1-dm-native", 0, 70.0, 50.0, "metrics_random.json")
    harness.run_dir(tmp_path, BUDGET, "ipc1-gm-native", 0).mkdir(parents=True)
    got = harness.ensure_random(tmp_path, "ipc1-gm-native", 0, BUDGET)  # would fail if it ran zodd
    assert got["acc"] == 70.0
    assert (harness.run_dir(tmp_path, BUDGET, "ipc1-gm-native", 0) / "metrics_random.json").exists()


def test_every_budget_keeps_its_runs_apart():
    """Two budgets sharing a folder would mix runs of different iteration counts (a run found
    done is not run again)."""
    folders = [b.folder for b in harness.BUDGETS.values()]
    assert len(set(folders)) == len(folders)
