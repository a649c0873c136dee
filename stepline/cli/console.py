"""What the CLI prints: results on stdout, one-line errors on stderr, and its exit statuses.

Exit statuses (docs/reference/cli.md): ``0`` done; ``FAILED`` (1) the server or the database
refused or could not be reached; ``BAD_INPUT`` (2) a bad option or setting, found before
anything was done; ``INTERRUPTED`` (130) stopped by Ctrl-C.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import NoReturn

import click

FAILED = 1
BAD_INPUT = 2
INTERRUPTED = 130
"""128 + SIGINT, what shells report for a command stopped by Ctrl-C."""


def fail(message: str, code: int = FAILED) -> NoReturn:
    """Print ``Error: <message>`` on one line (whatever a driver put in it) and exit with ``code``."""
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def note(message: str) -> None:
    """A line for the person at the terminal (stderr), not for a program reading stdout."""
    click.echo(message, err=True)


def echo(text: str) -> None:
    """Print ``text`` on stdout; a stdout that cannot be written (``> /dev/full``, a closed pipe)
    ends the command with one line instead of a traceback."""
    try:
        click.echo(text)
    except OSError as exc:
        _stdout_lost()
        if exc.errno == errno.EPIPE:
            sys.exit(FAILED)  # the reader stopped reading (``| head``): nothing to tell it
        fail(f"cannot write the output: {exc.strerror or exc}")


def _stdout_lost() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is still buffered
    does not fail again (and print a traceback) on the way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (a test runner's capture): nothing is flushed at exit
        pass
