"""A sweep's results as other tools read them: results.csv, the summary table, the best
trial, the score-against-alpha plot. Each takes the trials' rows (tuning.sweep.result_rows)
and the sweep for its searched parameters' names."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from zodd.rundir import atomic_write
from zodd.types import ZoddError

COLUMNS = ("trial", "status", "score", "acc", "cluster_min", "noise", "blur", "invert",
           "iterations", "attempts", "seconds")


def fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_csv(rows: list[dict], sweep, path: Path) -> None:
    names = [p.name for p in sweep.params]
    header = [COLUMNS[0], *names, *COLUMNS[1:], "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, header, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in header})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def _cell(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def best_row(rows: list[dict]) -> dict:
    """The highest score among trials that ran to the end (early-stopped ones scored on fewer
    iterations); among all scored trials when none did."""
    done = [r for r in rows if r["status"] == "done" and r.get("score") is not None]
    scored = done or [r for r in rows if r.get("score") is not None]
    if not scored:
        raise ZoddError("no trial produced a score; see results.csv and the trials' error.txt")
    return max(scored, key=lambda r: r["score"])


def summary(rows: list[dict], sweep, limit: int = 20) -> str:
    names = [p.name for p in sweep.params]
    head = ["trial", *names, "status", "score", "acc", "cluster_min", "iters"]
    table = [head]
    for r in rows[:limit]:
        table.append([str(r["trial"]), *(fmt(r.get(n)) for n in names), r["status"],
                      *(f"{r[k]:.2f}" if r.get(k) is not None else "-"
                        for k in ("score", "acc", "cluster_min")),
                      str(r.get("iterations") or "-")])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "-" * len(lines[0]))
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more in results.csv")
    return "\n".join(lines)


def plot_alpha(rows: list[dict], path: Path, metric: str) -> bool:
    """Score, accuracy and Cluster-min against alpha, one point per trial (hollow: stopped
    early). False when alpha did not vary."""
    points = [r for r in rows if r.get("alpha") is not None and r.get("score") is not None]
    if len({r["alpha"] for r in points}) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, colour, label in (("acc", "tab:blue", "accuracy"),
                               ("cluster_min", "tab:red", "Cluster-min"),
                               ("score", "black", f"score ({metric})")):
        if key == "score" and metric in ("acc", "cluster_min"):
            continue  # the same points again
        for finished in (True, False):
            sel = [r for r in points if (r["status"] == "done") == finished]
            if sel:
                ax.scatter([r["alpha"] for r in sel], [r[key] for r in sel], c=colour if finished
                           else "none", edgecolors=colour, label=label if finished else None)
    ax.set_xlabel("CVaR alpha")
    ax.set_ylabel("validation score (%)")
    ax.set_title("trials (hollow: stopped early)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()

    def write(f):
        fig.savefig(f, format="png", dpi=120)

    atomic_write(path, write)
    plt.close(fig)
    return True
