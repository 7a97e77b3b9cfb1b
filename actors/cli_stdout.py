"""The command line's standard output when it is not there to write to.

Closed (`tradeloom status >&-`, fd 1 closed): Python starts with `sys.stdout` None, and
`print()` then drops every line without a word (`status` exited 0 having shown nothing,
`submit` started an execution whose id nobody saw, `tail` failed with an AttributeError).
Worse, the next file the process opens takes descriptor 1, so whatever is later written
to "stdout" (a workflow's subprocess, say) lands in that file. So `reserve_stdout` points
fd 1 at the null device at once, and every command but `daemon` (which writes nothing
there: its logs go to stderr) then stops with one line on stderr and exit 2, before it
does anything.

Standard error closed (`2>&-`): `sys.stderr` is None and `print(..., file=sys.stderr)`
writes to stdout (an error line in `--json` output), and the next file opened takes
descriptor 2 (the daemon's journal, where a library's message to fd 2 would land). So
`reserve_stderr` points fd 2 at the null device before anything else runs: the errors are
lost, the exit code still tells.

A pipe whose reader has left (`tradeloom tail | head -1`) is not an error: the writer stops
quietly and exits 0 (`stdout_to_devnull` keeps the interpreter's last flush from failing).
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO

CLOSED_STDOUT_ERROR = ("standard output is closed (fd 1): nowhere to write the output "
                       "(use >/dev/null to discard it)")


def stdout_closed() -> bool:
    """Whether the process has no standard output to write to: fd 1 closed at start (no
    `sys.stdout`), or `sys.stdout` a closed file or one on a closed descriptor."""
    return _closed(sys.stdout)


def _closed(stream: TextIO | None) -> bool:
    if stream is None:
        return True
    try:
        fd = stream.fileno()
    except io.UnsupportedOperation:  # not an OS file (a test's capture): it takes writes
        return False
    except ValueError:  # the file object is closed
        return True
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def reserve_stdout() -> None:
    """Put the null device on fd 1 if it is closed, so that no file the process opens later
    gets descriptor 1, and `sys.stdout` on the null device: what is written there goes
    nowhere, and `sys.stdout.flush()` works."""
    _reserve_fd(1)
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the process's stdout


def reserve_stderr() -> None:
    """`reserve_stdout` for standard error, when it is closed (see the module docstring)."""
    if _closed(sys.stderr):
        _reserve_fd(2)
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the process's


def _reserve_fd(fd: int) -> None:
    try:
        os.fstat(fd)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:  # a lower descriptor was closed too: it took that one
            os.dup2(devnull, fd)
            os.close(devnull)


def stdout_to_devnull() -> None:
    """Point stdout at devnull once its reader has gone, so that later prints and the
    interpreter's final flush do not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
