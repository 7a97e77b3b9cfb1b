"""WAL checkpoints off the commit path (actors/journal_checkpointer.py): they happen in
their own thread after commits, syncing as the journal's `sync` says; a stuck or failing
checkpoint holds no commit back and loses nothing; the writer's own automatic checkpoint
is only a backstop."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from actors import journal_checkpointer
from actors.journal_checkpointer import (
    BACKSTOP_PAGES,
    REWIND_PAGES,
    WAL_SIZE_LIMIT,
    connect_checkpointer,
)
from tests.engine_journal_helpers import captured_logs, eventually
from tests.journal_helpers import Sequencer, all_events, assert_gapless, started, sys_event

DEADLINE_S = 10.0


class CheckpointGate:
    """What the patched checkpointer connection does: block on `gate`, or raise `error`."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.error: sqlite3.Error | None = None


class GatedConnection:
    def __init__(self, real: sqlite3.Connection, control: CheckpointGate) -> None:
        self.real = real
        self.control = control

    def execute(self, sql: str) -> Any:
        if "wal_checkpoint" in sql:
            self.control.entered.set()
            if self.control.error is not None:
                raise self.control.error
            assert self.control.gate.wait(DEADLINE_S), "the test never opened the gate"
        return self.real.execute(sql)

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> CheckpointGate:
    control = CheckpointGate()

    def connect(path: Path, *, sync: str) -> GatedConnection:
        return GatedConnection(connect_checkpointer(path, sync=sync), control)

    monkeypatch.setattr(journal_checkpointer, "connect_checkpointer", connect)
    return control


def test_checkpoints_run_in_their_own_thread_after_commits(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        writer_conn = journal._writer.conn
        assert writer_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
        seq = Sequencer(journal)
        for i in range(300):
            seq.emit(*(sys_event("tick", n=i, pad="x" * 200) for _ in range(10)))
        assert journal.wait_committed(3000, DEADLINE_S)
        eventually(lambda: journal.stats()["checkpoints"] >= 1)
        assert journal.stats()["checkpoint_wal_pages"] > 0
        assert journal.stats()["checkpoint_failures"] == 0


@pytest.mark.parametrize(("sync", "level"), [("normal", 1), ("full", 2)])
def test_the_checkpointer_syncs_as_the_journal_does(tmp_path: Path, sync: str,
                                                    level: int) -> None:
    with started(tmp_path, sync=sync):
        conn = connect_checkpointer(tmp_path / "journal.db", sync=sync)
        try:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        finally:
            conn.close()


def test_a_stuck_checkpoint_holds_no_commit_back(tmp_path: Path,
                                                 gated: CheckpointGate) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        seq.emit(sys_event("first"))
        assert gated.entered.wait(DEADLINE_S)  # a checkpoint is under way and stuck
        for i in range(2000):
            seq.emit(sys_event("tick", n=i))
        assert journal.wait_committed(2001, DEADLINE_S)
        gated.gate.set()
        eventually(lambda: journal.stats()["checkpoints"] >= 1)
        assert_gapless(all_events(journal), 1, 2001)


def test_a_wal_grown_past_its_limit_shrinks_back_once_it_rewinds(
        tmp_path: Path, gated: CheckpointGate) -> None:
    wal = tmp_path / "journal.db-wal"
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        seq.emit(sys_event("first"))
        assert gated.entered.wait(DEADLINE_S)  # no checkpoint gets through: the WAL grows
        while wal.stat().st_size <= 2 * WAL_SIZE_LIMIT:
            seq.emit(*(sys_event("tick", pad="y" * 4000) for _ in range(100)))
            assert journal.flush(DEADLINE_S)
        assert wal.stat().st_size < BACKSTOP_PAGES * 4096  # (grown by this test, not SQLite)
        gated.gate.set()

        def shrunk() -> bool:
            seq.emit(sys_event("tick"))  # the next write after a full checkpoint rewinds it
            assert journal.flush(DEADLINE_S)
            return wal.stat().st_size <= WAL_SIZE_LIMIT

        eventually(shrunk, what="the WAL file back within its limit")
        assert_gapless(all_events(journal), 1, seq.seq)


def test_a_failing_checkpoint_is_counted_logged_and_loses_nothing(
        tmp_path: Path, gated: CheckpointGate) -> None:
    gated.error = sqlite3.OperationalError("database or disk is full")
    with captured_logs() as logs, started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        seq.emit(sys_event("first"))
        eventually(lambda: journal.stats()["checkpoint_failures"] >= 1)
        for i in range(500):
            seq.emit(sys_event("tick", n=i))
        assert journal.wait_committed(501, DEADLINE_S)
        assert_gapless(all_events(journal), 1, 501)
    failed = [e for e in logs if e["event"] == "journal_checkpoint_failed"]
    assert failed and "disk is full" in failed[0]["error"]
    with started(tmp_path) as (journal, _):
        assert_gapless(all_events(journal), 1, 501)  # all there after a reopen


def test_under_commits_without_a_pause_the_wal_still_rewinds(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        for i in range(1500):
            seq.emit(*(sys_event("tick", n=i, pad="y" * 300) for _ in range(5)))
            journal.record_submitted(f"exec_wf_{i:08x}", "wf", {"pad": "z" * 500}, None,
                                     None, 0, None)
            if i % 10 == 0:
                assert journal.flush(DEADLINE_S)
        assert journal.flush(DEADLINE_S)
        stats = journal.stats()
        wal_bytes = (tmp_path / "journal.db-wal").stat().st_size
        assert wal_bytes < 4 * REWIND_PAGES * 4096, (wal_bytes, stats)
        assert_gapless(all_events(journal), 1, 7500)


def test_the_writers_rewind_comes_after_the_commits_waiters_are_released(
        tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        tickets: list[Any] = []
        released: list[bool] = []
        journal._writer.after_commit = lambda: released.append(all(t.done for t in tickets))
        for n in range(20):
            tickets.append(journal.save_emergency({"n": n}))
            assert tickets[-1].wait(DEADLINE_S)
        eventually(lambda: len(released) >= 20)
        assert all(released)
