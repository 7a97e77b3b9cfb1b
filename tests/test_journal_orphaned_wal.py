"""A journal.db removed under a running journal leaves its WAL behind. The next open must
not build a new journal.db beside that WAL: SQLite would replay the old journal's frames
onto the new, empty one (a damaged or silently mixed journal, found by a daemon restarted
after `rm journal.db`). It is refused with one line, and nothing is touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.errors import JournalCorrupt
from actors.journal import Journal
from tests.journal_helpers import Sequencer, all_events, started, sys_event


def orphan_a_wal(data_dir: Path) -> bytes:
    """Run a journal, remove journal.db under it, close it: the WAL's bytes left behind."""
    with started(data_dir, retry_min_s=0.01, retry_max_s=0.02) as (journal, callbacks):
        seq = Sequencer(journal)
        seq.emit(*[sys_event("tick", n=i) for i in range(20)])
        assert journal.flush(5)
        os.unlink(data_dir / "journal.db")
        seq.emit(sys_event("tock"))
        callbacks.wait_for(lambda c: len(c.errors) == 1)
    wal = data_dir / "journal.db-wal"
    assert not (data_dir / "journal.db").exists()
    assert wal.stat().st_size > 0, "precondition: the removed journal's WAL is left"
    return wal.read_bytes()


def test_a_wal_left_by_a_removed_journal_is_refused_and_left_alone(tmp_path: Path) -> None:
    wal_bytes = orphan_a_wal(tmp_path)
    for _ in range(2):  # the refusal released data_dir: a second try says the same
        with pytest.raises(JournalCorrupt) as refused:
            Journal.open(tmp_path)
        message = str(refused.value)
        assert "journal.db-wal" in message and "\n" not in message
    assert not (tmp_path / "journal.db").exists(), "no new journal beside the old WAL"
    assert (tmp_path / "journal.db-wal").read_bytes() == wal_bytes


def test_with_the_old_wal_moved_away_a_new_journal_starts_from_seq_1(tmp_path: Path) -> None:
    orphan_a_wal(tmp_path)
    for name in ("journal.db-wal", "journal.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).rename(tmp_path / f"{name}.lost")
    with Journal.open(tmp_path) as journal:
        assert journal.recovery.last_seq == 0
        assert all_events(journal) == []


def test_an_empty_wal_beside_no_journal_does_not_block_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "journal.db-wal").write_bytes(b"")
    with Journal.open(tmp_path) as journal:
        assert journal.recovery.last_seq == 0
