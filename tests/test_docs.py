"""The README's Python example and each docs page's first block run as written (small budgets),
so what a newcomer copies works."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))


def test_the_readme_python_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme.split("## Python", 1)[1], re.S).group(1)
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("torch.Size([10, 1, 8, 8])")  # IPC 1 on digits: 10 images
    assert "synthetic (convnet)" in done.stdout
    accuracy = float(lines[-1].split()[0])
    assert 0.0 <= accuracy <= 100.0
    assert not any(tmp_path.iterdir())  # no out=: nothing written


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert PAGES and all(f"docs/{page.name}" in readme for page in PAGES)


def _commands(page: Path) -> list[str]:
    block = re.search(r"```sh\n(.*?)```", page.read_text(), re.S)
    assert block, f"{page.name} has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def _argv(command: str) -> list[str]:
    """A docs command's words: examples/ from the repository, python as this interpreter."""
    argv = shlex.split(command.replace("examples/", f"{ROOT}/examples/"))
    if argv[0] == "python":
        argv[0] = sys.executable
    return [a.replace("python ", f"{sys.executable} ") for a in argv]


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.ray) if p.stem == "sweeps"
                                  else p for p in PAGES], ids=[p.stem for p in PAGES])
def test_the_first_block_of_each_docs_page_runs(page, tmp_path, monkeypatch, capsys):
    """In the test's directory (runs/ lands there); zodd in-process as the tests run it
    (tests/cli_run.py), except zodd tune, which starts Ray in a process of its own."""
    monkeypatch.chdir(tmp_path)
    for command in _commands(page):
        argv = _argv(command)
        if argv[0] == "zodd" and argv[1] != "tune":
            code, _, err = run_cli(monkeypatch, capsys, *argv[1:])
        else:
            argv = [sys.executable, "-m", "zodd.cli", *argv[1:]] if argv[0] == "zodd" else argv
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            code, err = done.returncode, done.stderr
        assert code == 0, f"{page.name}: {command}\n{err[-2000:]}"
    assert any((tmp_path / "runs").glob("*/config.json")) or page.stem == "sweeps", page.name
