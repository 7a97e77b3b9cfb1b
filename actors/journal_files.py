"""The files the journal's writer opened, checked after each commit, and what can be saved
of one that was removed or replaced under a running daemon.

SQLite keeps writing to a removed file's inode: what is committed there is lost at the
next start (or sooner: a connection made since reads a new, empty WAL). So after each
COMMIT journal.db and its WAL must still be the files opened (device and inode). When
one is not, writes fail for good (the engine goes to HALT) and what the writer's
connection still reads is saved: a removed WAL is checkpointed into journal.db; a removed
or replaced journal.db is copied whole to `journal.db.rescued` beside it (never over what
is at the path now).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from actors.errors import JournalWriteFailed
from actors.journal_records import log

__all__ = ["JournalFiles", "file_id"]

#: Pages copied per step of a rescue (4 MiB at SQLite's 4 KiB page size).
RESCUE_PAGES_PER_STEP = 1024


class JournalFiles:
    """journal.db and its WAL as the writer opened them (the writer's thread only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal_path = path.with_name(path.name + "-wal")
        self._db_id = file_id(path)
        #: The WAL's identity: there from the open (WAL mode), else from the first commit.
        self._wal_id = file_id(self.wal_path)
        #: journal.db was found removed or replaced.
        self.db_gone = False

    def check(self, conn: sqlite3.Connection) -> None:
        """After a COMMIT: JournalWriteFailed if a file is not the one opened (a removed
        WAL's content is first checkpointed into journal.db through `conn`)."""
        if file_id(self.path) != self._db_id:
            self.db_gone = True
            raise JournalWriteFailed(f"{self.path} was removed or replaced while open")
        wal_id = file_id(self.wal_path)
        if self._wal_id is None:
            self._wal_id = wal_id
        elif wal_id != self._wal_id:
            saved = self._save_removed_wal(conn)
            raise JournalWriteFailed(
                f"{self.wal_path} was removed or replaced while open; what was committed "
                f"{'is copied into' if saved else 'could not be copied into'} "
                f"{self.path.name}: restart the daemon to write again")

    def rescue_db(self, conn: sqlite3.Connection) -> None:
        """journal.db was removed or replaced while open: `conn` still reads the file it
        opened, with its WAL. Copy it whole beside it, or the journal (history, intents,
        the HALT) goes with the last close."""
        target = self.path.with_name(f"{self.path.name}.rescued")
        if target.exists():
            target = target.with_name(f"{target.name}-{int(time.time())}")
        # Into a file of another name, renamed once whole: a copy cut short (a full disk,
        # the process exiting at its stop's deadline) is never taken for the journal.
        partial = target.with_name(f"{target.name}.partial")
        started = time.monotonic()
        try:
            copy = sqlite3.connect(partial)
            try:
                conn.backup(copy, pages=RESCUE_PAGES_PER_STEP)
            finally:
                copy.close()
            os.replace(partial, target)
        except (sqlite3.Error, OSError) as exc:
            log.error("journal_rescue_failed", error=str(exc), path=str(partial))
            return
        log.error("journal_rescued", copy=str(target),
                  took_s=round(time.monotonic() - started, 3), to_use_it=(
            f"stop the daemon, move {self.wal_path.name} and {self.path.name}-shm away, "
            f"put {target.name} in place of {self.path.name}, start it again (it comes "
            "back in HALT)"))

    def _save_removed_wal(self, conn: sqlite3.Connection) -> bool:
        """Copy what the removed WAL holds into journal.db (a checkpoint through `conn`,
        which still has the removed file open), so that commits already reported survive
        the restart; True if it did."""
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        except sqlite3.Error as exc:
            log.error("journal_wal_copy_failed", error=str(exc), path=str(self.wal_path))
            return False
        return not busy


def file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of `path`, or None if there is nothing there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
