"""The terminal: the progress bar and lines (a :class:`zodd.types.Progress`), the signals that
stop a run after its current step, and how an error leaves the program. With zodd.cli the only
module that imports click, prints or exits.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import click

from zodd import distributed
from zodd.types import Progress, ZoddError


class StopOnSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step (it then saves a checkpoint);
    a second SIGINT interrupts at once. Installed at the first step, after Ray's start (which
    sets handlers of its own). Under ``torchrun`` a Ctrl-C arrives twice at once (from the
    terminal and forwarded by torchrun): a second SIGINT counts only a second after the
    first."""

    GRACE = 1.0  # seconds, under torchrun

    def __init__(self):
        self.stop, self.old, self.at = False, {}, 0.0

    def _handle(self, signum, frame):
        grace = self.GRACE if distributed.launched() else 0.0
        if self.stop and signum == signal.SIGINT and time.monotonic() - self.at >= grace:
            raise KeyboardInterrupt
        if not self.stop:
            self.stop, self.at = True, time.monotonic()

    def install(self) -> None:
        if not self.old:
            self.old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)


class Bar(Progress):
    """Progress on stderr: notes as lines, distillation as click's bar (opened at the first
    step, so set-up errors print alone), any other task as one line rewritten at most once a
    second, after the first second."""

    def __init__(self, quiet: bool, first_step=lambda: None):
        self.quiet, self.first_step, self.bar, self.open = quiet, first_step, None, False
        self.at = time.monotonic()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.close()
            click.echo(text, err=True)

    def update(self, task: str, done: int, total: int, detail: dict | None = None) -> None:
        if task == "distilling":
            self.first_step()
            if not self.quiet and self.bar is None:
                self.bar = click.progressbar(length=total, label=task, file=sys.stderr,
                                             show_eta=True, width=24, item_show_func=_row_text)
                self.bar.__enter__()
            if self.bar is not None:
                self.bar.update(1, detail)
        elif task != "evaluating" and not self.quiet:
            now, last = time.monotonic(), done == total
            if now - self.at >= 1.0 or (self.open and last):
                loss = f", loss {detail['loss']:.4f}" if detail and "loss" in detail else ""
                click.echo(f"\r{task} {done}/{total}{loss}", err=True, nl=last)
                self.at, self.open = now, not last

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        if self.open:
            click.echo("", err=True)
            self.open = False


def _row_text(row: dict | None) -> str:
    if not row:
        return ""
    text = f"loss {number(row['loss'])}  queries {row['queries']}"
    return text + (f"  failures {row['failures']}" if row.get("failures") else "")


def number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def main(cli: click.Group) -> None:
    """Run the command group ``cli``: every ZoddError and usage error one line on stderr and
    exit status 2, an interruption 130, a bug one line (its traceback with ZODD_DEBUG=1) and 1.
    A process ``torchrun`` started leaves without the interpreter's teardown once its work is
    done and its process group left: there gloo's threads have aborted finished processes
    (SIGABRT, "terminate called without an active exception"), seen intermittently."""
    try:
        _main(cli)
    except SystemExit as exc:
        if not distributed.launched():
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else int(exc.code is not None))


def _main(cli: click.Group) -> None:
    import warnings

    warnings.formatwarning = lambda message, *args, **kwargs: f"zodd: warning: {message}\n"
    if len(sys.argv) == 1:
        sys.argv.append("--help")  # plain `zodd`: the overview, not an error
    try:
        cli.main(standalone_mode=False)
    except ZoddError as exc:
        _fail(f"zodd: error: {exc}" if distributed.writes_here() else "", 2)
    except click.exceptions.Abort:
        _fail("zodd: aborted", 130)
    except click.ClickException as exc:
        _fail(f"zodd: error: {exc.format_message()}", 2)
    except KeyboardInterrupt:
        _fail("zodd: interrupted", 130)
    except Exception as exc:  # a bug, not bad input: one line, or the traceback with ZODD_DEBUG=1
        # out of host memory, or torch's OutOfMemoryError (a RuntimeError) for a GPU's
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            _fail(f"zodd: error: {str(exc).split('.')[0] or 'out of memory'}: lower "
                  "--batch-size, --directions or --ipc, run fewer jobs at once, or use "
                  "--device cpu", 2)
        if os.environ.get("ZODD_DEBUG"):
            raise
        _fail(f"zodd: internal error: {type(exc).__name__}: {exc}", 1)
    sys.exit(0)


def _fail(line: str, code: int) -> None:
    if line:  # (the other processes of an N-process run leave it to rank 0)
        click.echo(line, err=True)
    sys.exit(code)
