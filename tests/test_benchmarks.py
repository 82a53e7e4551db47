"""The black-box benchmark's own arithmetic and its guard against leakage (benchmarks/
evaluators.py and blackbox.py carry the README's black-box figures): the half a run scores
against and the half it is judged on are disjoint and fixed; the seeds table's means, spreads
and paired differences are the numbers worked out here by hand."""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import blackbox  # noqa: E402
import evaluators  # noqa: E402


def test_the_scored_half_and_the_judged_half_are_disjoint_fixed_and_the_whole_test_set(digits):
    score, score_y = evaluators.held_out("digits", "score")
    test, test_y = evaluators.held_out("digits", "test")
    again, _ = evaluators.held_out("digits", "score")
    assert np.array_equal(score, again)  # fixed: no draw
    whole = digits.denormalise(digits.test_x).flatten(1).numpy()
    assert len(score) + len(test) == len(whole) and abs(len(score) - len(test)) <= 1
    assert np.array_equal(np.concatenate([score, test]), whole)
    assert np.array_equal(np.concatenate([score_y, test_y]), digits.test_y.numpy())
    # no image of one half is an image of the other (by position and by content)
    common = {row.tobytes() for row in score} & {row.tobytes() for row in test}
    duplicates_in_data = len({r.tobytes() for r in whole}) < len(whole)
    assert not common or duplicates_in_data


def test_the_seeds_table_is_the_mean_spread_and_paired_gap_worked_by_hand(tmp_path, capsys):
    """Two seeds; knn errors: random 50 / 40, DM 30 / 20, es 26 / 22 (a black-box row).
    es: mean 24, std (ddof 0) 2; minus DM: -4 and +2, mean -1, std 3; below DM in 1 of 2.
    random: mean 45, std 5; DM: mean 25, std 5."""
    import json

    rows = {0: {"random real (init)": 50, "DM autograd (a tenth)": 30, "es, pixels": 26},
            1: {"random real (init)": 40, "DM autograd (a tenth)": 20, "es, pixels": 22}}
    tables = []
    for seed, errors in rows.items():
        table = {"knn": {label: {"error": e, "queries": 0} for label, e in errors.items()}}
        table["knn"]["es, pixels"]["score_split"] = [(0, 0.5)]
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps(table))
        tables.append((seed, path))
    blackbox.seeds(argparse.Namespace(tables=tables, out=None))
    lines = {line.split("|")[2].strip(): line for line in capsys.readouterr().out.splitlines()
             if line.startswith("| knn")}
    assert "| 24.00 ± 2.00 | -1.00 ± 3.00 | 1 of 2 |" in lines["es, pixels"]
    assert "| 45.00 ± 5.00 |" in lines["random real (init)"]
    assert "| 25.00 ± 5.00 |" in lines["DM autograd (a tenth)"]
