"""Opening a journal: a data_dir made ready for `Journal` (actors/journal.py), or an error.

    open_data_dir(data_dir, *, sync, keep_events, keep_days, clock, retry_min_s,
                  retry_max_s) -> OpenedDataDir       # path, lock, writer, recovery

In order: the arguments are checked (ValueError, before anything is touched); data_dir is
created if missing and locked (an flock on data_dir itself and on data_dir/journal.lock,
which holds our pid: a second opener, in this process or another, gets JournalLocked
naming that pid, even if journal.lock was deleted meanwhile); journal.db is
opened, created or migrated for the writer (actors/journal_schema.py); the recovery is
read (actors/journal_reads.py) before anything runs; the writer is built on that
connection, continuing after the last seq. Whatever fails after the lock is taken
releases it (and closes the connection): a refused open leaves data_dir free. A damaged
database is JournalCorrupt; any other SQLite or OS failure is JournalError naming the
file. `sync="normal"` survives a process crash (kill -9), `"full"` also a power loss.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from actors.clock import Clock
from actors.errors import JournalCorrupt, JournalError
from actors.journal_caps import DEFAULT_MAX_EVENT_BYTES
from actors.journal_failure_mark import read_mark
from actors.journal_reads import Recovery, load_recovery
from actors.journal_schema import (
    DB_NAME,
    DataDirLock,
    check_identity,
    connect_reader,
    connect_writer,
)
from actors.journal_writer import JournalWriter

__all__ = ["SYNC_MODES", "OpenedDataDir", "open_data_dir"]

SYNC_MODES = ("normal", "full")


@dataclass(frozen=True)
class OpenedDataDir:
    """A locked data_dir with its journal.db open: what a `Journal` is made of. The lock
    and the writer's connection are the caller's to release and close."""

    path: Path
    lock: DataDirLock
    writer: JournalWriter
    recovery: Recovery


def open_data_dir(data_dir: str | os.PathLike[str], *, sync: str,
                  keep_events: int | None, keep_days: float | None, clock: Clock,
                  retry_min_s: float, retry_max_s: float,
                  max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> OpenedDataDir:
    """Check the arguments, lock data_dir, open journal.db and read its recovery."""
    if sync not in SYNC_MODES:
        raise ValueError(f"sync must be one of {SYNC_MODES}, not {sync!r}")
    if keep_events is not None and (isinstance(keep_events, bool) or keep_events < 1):
        raise ValueError(f"keep_events must be an int >= 1 or None, not {keep_events!r}")
    if keep_days is not None and not keep_days > 0:
        raise ValueError(f"keep_days must be > 0 or None, not {keep_days!r}")
    # Absolute once, here: every later use (the writer's file check, the readers' lazy
    # connections, the write-failed mark) must name the directory opened, even after
    # user code calls os.chdir() (a relative data_dir, the default `.tradeloom`).
    directory = Path(os.path.abspath(data_dir))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(directory)
    except OSError as exc:
        # mkdir's "File exists" for a file, "No such file" for /proc/self: say what it is.
        what = ("it is not a directory" if directory.exists() and not directory.is_dir()
                else exc.strerror or str(exc))
        raise JournalError(f"cannot use data_dir {directory}: {what}") from None
    path = directory / DB_NAME
    try:
        check_hot_wal(path)
        conn = connect_writer(path, sync=sync)
        try:
            recovery = replace(load_recovery(conn), write_failed_mark=read_mark(directory))
            open_intents = {i["idempotency_key"] for i in recovery.unresolved_intents}
            writer = JournalWriter(
                conn, path, clock=clock, last_seq=recovery.last_seq,
                keep_events=keep_events, keep_days=keep_days, open_intents=open_intents,
                cursors=recovery.cursors, retry_min_s=retry_min_s, retry_max_s=retry_max_s,
                max_event_bytes=max_event_bytes)
        except BaseException:
            conn.close()
            raise
    except sqlite3.DatabaseError as exc:
        lock.release()
        if "malformed" in str(exc) or "not a database" in str(exc):
            raise JournalCorrupt(f"{path} is damaged ({exc}); restore it "
                                 "from a backup or move it away" + _wal_hint(path)) from exc
        raise JournalError(f"cannot open {path}: {exc}") from exc
    except OSError as exc:
        lock.release()
        raise JournalError(f"cannot open {path}: {exc.strerror or exc}") from exc
    except BaseException:
        lock.release()
        raise
    return OpenedDataDir(path=path, lock=lock, writer=writer, recovery=recovery)


def check_hot_wal(path: Path) -> None:
    """With a WAL left by a crash, read the recovery through a read-only connection first.

    A writer connection that finds the journal damaged is closed, and closing checkpoints
    the WAL into journal.db and deletes it: a refusal would overwrite the file it refuses
    (a backup copied over journal.db beside the old journal's WAL, say) and lose that WAL.
    A read-only connection never checkpoints, so a damaged journal is refused untouched.
    What it cannot tell (an OperationalError: no -shm to read the WAL through, an older or
    newer schema) is left to the writer's own checks."""
    if not path.exists() or _wal_size(path) == 0:
        return
    check_identity(path)
    reader = connect_reader(path)
    try:
        load_recovery(reader)
    except sqlite3.OperationalError:
        return
    finally:
        reader.close()


def _wal_size(path: Path) -> int:
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except OSError:
        return 0


def _wal_hint(path: Path) -> str:
    if _wal_size(path) == 0:
        return ""
    return (f" (if {path.name} was replaced, by a backup say, the {path.name}-wal beside it "
            f"is the old journal's: move it and {path.name}-shm away first)")
