"""Run the ``zodd`` command line in-process, as a user would type it, for the tests."""
import sys

import pytest

from zodd.cli import main


def run_cli(monkeypatch, capsys, *args):
    """``zodd ARGS...`` -> (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["zodd", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err
