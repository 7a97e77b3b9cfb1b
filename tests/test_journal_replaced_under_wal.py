"""A journal.db that reads as damaged, with a WAL a crash left beside it (a backup copied
over journal.db without moving the old WAL away is one way there: docs/operations.md,
Backups). The refusal must leave both files as they were: it used to close its writer
connection, which checkpoints the WAL into the file being refused and deletes the WAL,
overwriting the one and losing the other's last commits. The line also names the WAL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from actors.errors import JournalCorrupt
from actors.journal import Journal
from tests.journal_helpers import Child

PAGE = 4096  # SQLite's default page size, the journal's


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def crashed_with_a_wal(data_dir: Path) -> None:
    """A journal under load, killed: journal.db with a hot WAL beside it."""
    child = Child("load", str(data_dir))
    try:
        child.wait_for(lambda _: child.counts["C"] >= 40)
    finally:
        child.kill()
    assert (data_dir / "journal.db-wal").stat().st_size > 0


def test_a_damaged_journal_beside_a_hot_wal_is_refused_untouched(tmp_path: Path) -> None:
    crashed_with_a_wal(tmp_path)
    db = tmp_path / "journal.db"
    data = db.read_bytes()
    # Every page but the header's is garbage: the tables the WAL does not hold (those
    # never written since the last checkpoint: cursors, at least) read as damaged.
    db.write_bytes(data[:PAGE] + b"\xff" * (len(data) - PAGE))
    before = {name: digest(tmp_path / name) for name in ("journal.db", "journal.db-wal")}
    for _ in range(2):  # the refusal released data_dir: a second try says the same
        with pytest.raises(JournalCorrupt) as refused:
            Journal.open(tmp_path)
        message = str(refused.value)
        assert "journal.db-wal" in message and "\n" not in message
    assert {name: digest(tmp_path / name) for name in before} == before, "nothing overwritten"
