"""A mark in data_dir that the journal's writes were failing, so a restart comes back halted.

A failed write halts the engine at once, in memory; the HALT's event is committed only once
a write succeeds. A process that ends before then (kill -9, a crash, a stop with the disk
still failing) left no HALT in the journal, and a restart on the last committed state came
back NORMAL, trading again with nobody having resumed it. So the writer makes this mark when
its writes start failing, and removes it once everything queued by then (the HALT
included) is committed. A start that finds it comes back in HALT (`source: "journal"`) and
removes it once that HALT is committed (actors/engine_journal.py).

The mark is a file made with O_CREAT first, its reason written after: an empty file needs
an inode and no data block, so a full disk usually still takes it. Making or removing it
is best effort: a failure is logged (`journal_failure_mark_failed`), never raised.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from actors.logs import get_logger

log = get_logger("tradeloom.journal")

#: The mark's file name, beside journal.db.
MARK_NAME = "journal-write-failed"
#: The reason kept in the mark is cut to this many bytes.
MARK_REASON_BYTES = 1000


def set_mark(directory: Path, reason: str) -> bool:
    """Make the mark (True once it exists), with `reason` in it if the disk takes it."""
    path = directory / MARK_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        log.error("journal_failure_mark_failed", path=str(path), error=str(exc),
                  note="a restart before a write succeeds will not come back halted")
        return False
    try:
        with contextlib.suppress(OSError):  # a full disk: the empty mark says enough
            os.write(fd, reason.encode("utf-8", "replace")[:MARK_REASON_BYTES])
            os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # its directory entry, through a power loss too
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return True


def read_mark(directory: Path) -> str | None:
    """The mark's reason ("" if it has none), or None without a mark."""
    path = directory / MARK_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # there, but unreadable: still a mark
        return f"(unreadable: {exc})"
    return data[:MARK_REASON_BYTES].decode("utf-8", "replace").strip()


def clear_mark(directory: Path) -> None:
    path = directory / MARK_NAME
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("journal_failure_mark_failed", path=str(path), error=str(exc),
                  note="the next start will come back halted")
