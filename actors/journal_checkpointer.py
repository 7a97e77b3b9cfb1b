"""The journal's WAL checkpoints, in a thread of their own, so that no commit waits for one.

Why: SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000
pages: that commit copies the pages into journal.db and syncs both files (a few ms here),
and every event, intent and halt queued behind it waits. At 10,000 events/s that was the
whole of the stream's p99 (6.5 ms against 2.2 ms with no checkpoints; docs/benchmarks.md).

How: this thread has its own read-write connection and runs `PRAGMA wal_checkpoint(PASSIVE)`
when a commit has happened since its last one (the writer nudges it): at most every
`interval_s`, or sooner once `HURRY_COMMITS` commits have gone by (a heavy writer can fill
thousands of pages in a quarter second), and back to back while the WAL is over
`REWIND_PAGES`. PASSIVE never blocks the writer: it copies what was committed when it began,
while new commits keep appending to the WAL. It uses the journal's `synchronous` setting,
so a checkpoint syncs exactly as SQLite's own would: `normal` survives a process crash,
`full` power loss, and the database cannot be corrupted by either.

Rewinding: SQLite starts the WAL over from its beginning only when a write begins with
every frame already copied, which under steady load this thread never quite achieves (the
writer commits while it copies). So once a checkpoint finds the WAL at `REWIND_PAGES` or
more, the writer, after its next commit, checkpoints the few frames committed since
(`rewind_if_due`: a small copy, not the whole WAL) and its next write rewinds the WAL: the
file stays about as small as SQLite's default keeps it. SQLite's own automatic checkpoint
stays on in the writer as a backstop at `BACKSTOP_PAGES`, for when this thread cannot keep
up or has stopped. After a WAL larger than `WAL_SIZE_LIMIT` rewinds, SQLite truncates its
file back to that size. A failed checkpoint (a full disk) is logged, counted and tried
again at the next nudge; it loses nothing: the pages are still in the WAL.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.journal_records import log

#: The writer's own automatic checkpoint, in pages (4 KiB): only if this thread falls behind.
BACKSTOP_PAGES = 10_000
#: WAL size, in pages, from which the writer copies the last frames itself so the WAL rewinds
#: (SQLite's default automatic checkpoint size).
REWIND_PAGES = 1000
#: The WAL file's size, in bytes, kept on disk once SQLite rewinds it (`journal_size_limit`).
#: SQLite never shrinks the file by itself: one rewind delayed under a burst would leave the
#: journal megabytes larger for good. Twice the usual rewind size, so a WAL that rewinds on
#: time is not truncated and regrown at every rewind.
WAL_SIZE_LIMIT = 2 * REWIND_PAGES * 4096
#: Commits after which the next checkpoint does not wait for `INTERVAL_S`.
HURRY_COMMITS = 32
#: Seconds between two checkpoints at most (each syncs the WAL and the database once).
INTERVAL_S = 0.25
#: Failures logged one by one before going quiet (then a count every `_FAILURE_LOG_EVERY`).
_FAILURE_LOG_EVERY = 100


def connect_checkpointer(path: Path, *, sync: str) -> sqlite3.Connection:
    """A read-write connection that only checkpoints, syncing as the writer does."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA wal_autocheckpoint=0")
    except BaseException:
        conn.close()
        raise
    return conn


def damaged(exc: sqlite3.Error) -> bool:
    """Whether SQLite found the database file corrupt or not a database at all."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class Checkpointer:
    """Runs PASSIVE checkpoints of `path` after commits, at most every `interval_s`."""

    def __init__(self, path: Path, *, sync: str, interval_s: float = INTERVAL_S) -> None:
        self._path = path
        self._sync = sync
        self._interval_s = interval_s
        self._due = threading.Event()
        self._hurry = threading.Event()
        self._commits = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        #: Pages in the WAL at the last checkpoint (copied by it or before).
        self.wal_pages = 0
        self.failures = 0
        self.rewinds = 0
        self._rewind_due = False
        self.last_ms = 0.0
        self.max_ms = 0.0
        #: Called (in this thread) when a checkpoint finds journal.db damaged: the file was
        #: changed under the daemon (truncated, overwritten in place). Commits to the WAL
        #: would go on succeeding, but nothing in it could be read back or kept.
        self.on_damage: Callable[[str], object] = lambda why: None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tradeloom-checkpoint",
                                        daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Something was committed (called by the writer after a commit: returns at once)."""
        self._commits += 1  # only the writer's thread counts
        if not self._due.is_set():
            self._due.set()
        if self._commits >= HURRY_COMMITS and not self._hurry.is_set():
            self._hurry.set()

    def rewind_if_due(self, writer: sqlite3.Connection) -> None:
        """In the writer's thread, between two transactions: if a checkpoint found the WAL
        big, copy what was committed since, so the writer's next write rewinds it."""
        if not self._rewind_due:
            return
        self._rewind_due = False
        try:
            row = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            row = None
        if row is None or row[0]:  # busy: this thread is checkpointing; try after the next
            self._rewind_due = True
        else:
            self.rewinds += 1

    def stop(self, timeout: float) -> bool:
        """Stop the thread; True if it ended (one stuck in I/O is left behind)."""
        self._stopping.set()
        self._due.set()
        self._hurry.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        return {"checkpoints": self.checkpoints, "checkpoint_wal_pages": self.wal_pages,
                "checkpoint_failures": self.failures, "wal_rewinds": self.rewinds,
                "checkpoint_ms_last": round(self.last_ms, 3),
                "checkpoint_ms_max": round(self.max_ms, 3)}

    def _run(self) -> None:
        try:
            conn = connect_checkpointer(self._path, sync=self._sync)
        except sqlite3.Error as exc:
            log.error("journal_checkpointer_unavailable", error=str(exc),
                      path=str(self._path), backstop_pages=BACKSTOP_PAGES)
            return
        try:
            while True:
                self._due.wait()
                if self._stopping.is_set():
                    return
                self._due.clear()
                self._hurry.clear()
                self._commits = 0  # (a lost increment only delays a hurry a little)
                self._checkpoint(conn)
                # A big WAL is caught up with at once; a small one can wait and grow a little.
                if self.wal_pages < REWIND_PAGES:
                    self._hurry.wait(self._interval_s)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        started = time.perf_counter()
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self.failures += 1
            if self.failures <= 3 or self.failures % _FAILURE_LOG_EVERY == 0:
                log.warning("journal_checkpoint_failed", error=str(exc),
                            failures=self.failures)
            if damaged(exc):
                self.on_damage(str(exc))
            return
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        if row is None or row[0]:
            return  # busy: the writer is rewinding the WAL; nothing to do now
        self.checkpoints += 1
        self.wal_pages = int(row[1])
        if self.wal_pages >= REWIND_PAGES:
            self._rewind_due = True
        self.last_ms = elapsed_ms
        self.max_ms = max(self.max_ms, elapsed_ms)
