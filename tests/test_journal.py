"""The journal's files: what journal.db is (application_id, schema version, WAL), what is
refused and left untouched (garbage, another app's database, a newer schema), migrations,
the data_dir lock (in this process and across processes), and the `[journal]` config."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from actors import Config, ConfigError
from actors import journal_schema as schema
from actors.errors import (
    JournalClosed,
    JournalCorrupt,
    JournalError,
    JournalLocked,
    JournalTooNew,
    NotAJournal,
    TradeloomError,
)
from actors.journal import Journal
from tests.journal_helpers import Callbacks, Child, Sequencer, all_events, started, sys_event


def pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


def test_a_new_journal_is_marked_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    data_dir = tmp_path / "deep" / "data"
    with Journal.open(data_dir) as journal:
        assert journal.recovery.last_seq == 0
        assert journal.recovery.open_executions == []
        assert journal.first_seq() == 1
        assert journal.last_committed_seq() == 0
        assert journal._writer.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db = data_dir / "journal.db"
    assert pragma(db, "application_id") == schema.APPLICATION_ID
    assert pragma(db, "user_version") == schema.schema_version()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"event_batches", "executions", "intents", "workflows", "state",
            "emergency_history", "cursors"} <= tables
    assert not (data_dir / "journal.db.new").exists()


def test_sync_full_sets_synchronous_full(tmp_path: Path) -> None:
    with Journal.open(tmp_path, sync="full") as journal:
        assert journal._writer.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(ValueError, match="sync"):
        Journal.open(tmp_path, sync="fast")


def another_apps_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, side TEXT)")
    conn.execute("INSERT INTO orders (side) VALUES ('buy')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("content", [
    pytest.param(b"\x00\x01garbage" * 500, id="garbage"),
    pytest.param(b"", id="empty"),
    pytest.param(b"SQLite format 3\x00" + b"\xff" * 50, id="truncated-header"),
    pytest.param(None, id="other-app-sqlite"),
])
def test_a_file_that_is_not_a_journal_is_refused_and_left_untouched(
        tmp_path: Path, content: bytes | None) -> None:
    db = tmp_path / "journal.db"
    if content is None:
        another_apps_database(db)
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    with pytest.raises(NotAJournal) as info:
        Journal.open(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(db) in message and "not a tradeloom journal" in message
    assert isinstance(info.value, TradeloomError)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.db", "journal.lock"]
    # The refused open released data_dir: once the file is moved away it opens.
    db.rename(tmp_path / "moved.db")
    Journal.open(tmp_path).close()


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    Journal.open(tmp_path).close()
    db = tmp_path / "journal.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={schema.schema_version() + 1}")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(JournalTooNew, match="newer than this tradeloom"):
        Journal.open(tmp_path)
    assert db.read_bytes() == before


def test_a_damaged_journal_is_refused_with_one_line_and_left_as_is(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        for i in range(50):
            seq.emit(sys_event("tick", pad="x" * 3000, n=i))
        assert journal.flush(5)
    db = tmp_path / "journal.db"
    data = bytearray(db.read_bytes())
    data[4096:len(data)] = b"\xa5" * (len(data) - 4096)  # every page after the header's
    db.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as info:
        Journal.open(tmp_path)
    assert "\n" not in str(info.value) and "damaged" in str(info.value)
    assert db.read_bytes() == bytes(data)
    with pytest.raises(JournalCorrupt):  # not JournalLocked: the refusal released the lock
        Journal.open(tmp_path)


def test_an_unusable_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(JournalError, match="cannot use data_dir"):
        Journal.open(tmp_path / "file" / "data")


def test_an_older_schema_is_migrated_keeping_its_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with started(tmp_path) as (journal, _):
        Sequencer(journal).emit(sys_event("daemon_started"), sys_event("heartbeat_like"))
        assert journal.flush(5)
    v2 = schema.schema_version() + 1
    monkeypatch.setattr(schema, "MIGRATIONS", [
        *schema.MIGRATIONS, (v2, ("CREATE TABLE extra (x INTEGER)",
                                  "ALTER TABLE executions ADD COLUMN tag TEXT"))])
    with Journal.open(tmp_path) as journal:
        assert journal.recovery.last_seq == 2
        assert [e["type"] for e in all_events(journal)] == ["daemon_started", "heartbeat_like"]
    db = tmp_path / "journal.db"
    assert pragma(db, "user_version") == v2
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM extra").fetchone()[0] == 0
    conn.close()


def test_a_failed_migration_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Journal.open(tmp_path).close()
    v1 = schema.schema_version()
    monkeypatch.setattr(schema, "MIGRATIONS", [
        *schema.MIGRATIONS, (v1 + 1, ("CREATE TABLE extra (x INTEGER)", "NOT SQL AT ALL"))])
    with pytest.raises(JournalError, match="cannot open"):
        Journal.open(tmp_path)
    db = tmp_path / "journal.db"
    assert pragma(db, "user_version") == v1
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name='extra'").fetchone()[0] == 0
    conn.close()


def test_a_second_open_in_this_process_is_refused_naming_our_pid(tmp_path: Path) -> None:
    with Journal.open(tmp_path):
        with pytest.raises(JournalLocked) as info:
            Journal.open(tmp_path)
        assert info.value.pid == os.getpid()
        assert f"pid {os.getpid()}" in str(info.value) and str(tmp_path) in str(info.value)
        assert "another engine in this process" in str(info.value)
    Journal.open(tmp_path).close()  # released by close


def test_a_child_process_is_refused_while_we_hold_the_data_dir(tmp_path: Path) -> None:
    with Journal.open(tmp_path):
        child = Child("try", str(tmp_path))
        try:
            child.wait_for(lambda lines: len(lines) >= 1)
        finally:
            child.kill()
    assert child.lines[0].startswith("JournalLocked ")
    assert f"(pid {os.getpid()})" in child.lines[0]


def test_we_are_refused_while_a_child_holds_it_and_a_killed_holder_frees_it(
        tmp_path: Path) -> None:
    child = Child("hold", str(tmp_path))
    try:
        child.wait_for(lambda lines: any(line.startswith("R ") for line in lines))
        with pytest.raises(JournalLocked, match=f"pid {child.proc.pid}"):
            Journal.open(tmp_path)
    finally:
        child.kill()  # SIGKILL: the kernel drops the flock with the process
    Journal.open(tmp_path).close()


def test_a_killed_holder_frees_the_data_dir_though_a_child_it_forked_lives_on(
        tmp_path: Path) -> None:
    """A process forked without exec (a node's os.fork()) shared the lock's open file
    description, so the flock outlived the killed daemon and a restart was refused, naming
    a dead pid. The forked child now closes its copies at once."""
    child = Child("fork", str(tmp_path))
    forked = 0
    try:
        child.wait_for(lambda lines: {line.split()[0] for line in lines} >= {"R", "FORKED"})
        forked = int(child.tagged("FORKED")[0])
        with pytest.raises(JournalLocked):
            Journal.open(tmp_path)
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait(10)
        os.kill(forked, 0)  # still alive: it keeps our stdin pipe open
        Journal.open(tmp_path).close()
    finally:
        if forked:  # first: it holds the pipes the child's reader waits on
            with contextlib.suppress(ProcessLookupError):
                os.kill(forked, signal.SIGKILL)
        child.kill()


BACKUP = """
import sqlite3, sys
source = sqlite3.connect(sys.argv[1])
target = sqlite3.connect(sys.argv[2])
source.backup(target)
target.close()
source.close()  # the last connection of this process: SQLite's own close-time checks
"""


def test_a_journal_reopened_in_this_process_keeps_its_wal_through_an_outside_backup(
        tmp_path: Path) -> None:
    """A reading thread's connection outlived its journal's close (only the cyclic GC
    freed it); opening the journal again then dropped SQLite's lock on the file (a plain
    open and close of journal.db, POSIX lock semantics), so the backup's close took itself
    for the last user, checkpointed and deleted the WAL under the open journal."""
    gc.disable()  # (the bug hid whenever a collection ran in between)
    try:
        first = Journal.open(tmp_path)
        Callbacks().start(first)
        Sequencer(first).emit(sys_event("tick"))
        assert first.flush(5)
        reading = threading.Thread(target=first.read_events, args=(1, 10))
        reading.start()
        reading.join(10)
        first.close()
        with started(tmp_path) as (journal, callbacks):
            sequencer = Sequencer(journal)
            sequencer.emit(sys_event("tock"))
            assert journal.flush(5)
            subprocess.run([sys.executable, "-c", BACKUP, str(tmp_path / "journal.db"),
                            str(tmp_path / "backup.db")], check=True, timeout=30)
            assert (tmp_path / "journal.db-wal").exists()
            sequencer.emit(sys_event("tack"))
            assert journal.flush(5) and callbacks.errors == []
    finally:
        gc.enable()


def test_close_is_idempotent_and_reads_after_it_fail_clearly(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.close()
    journal.close()
    with pytest.raises(JournalClosed):
        journal.executions()
    with pytest.raises(JournalClosed):
        journal.resolve_intent("k", "filled")
    ticket = journal.save_emergency({"state": "HALT"})
    assert not ticket.wait(0) and isinstance(ticket.error, JournalClosed)
    assert journal.flush(5) is False


def test_journal_config_defaults_and_validation() -> None:
    journal = Config.from_dict({}).journal
    assert (journal.sync, journal.keep_events, journal.keep_days,
            journal.halt_on_unresolved_intents) == ("normal", 10_000_000, None, False)
    config = Config.from_dict({"journal": {"sync": "full", "keep_events": None,
                                           "keep_days": 7, "halt_on_unresolved_intents": True}})
    assert config.journal.keep_days == 7.0 and config.journal.keep_events is None
    for bad, key in [({"sync": "fast"}, "journal.sync"), ({"keep_events": 0}, "keep_events"),
                     ({"keep_events": "1"}, "journal.keep_events"),
                     ({"keep_days": -1}, "keep_days"), ({"keep_days": float("inf")}, "keep_days"),
                     ({"halt_on_unresolved_intents": "yes"}, "halt_on_unresolved_intents"),
                     ({"retention": 1}, "journal.retention")]:
        with pytest.raises(ConfigError, match=key):
            Config.from_dict({"journal": bad})


def test_from_config_applies_the_section(tmp_path: Path) -> None:
    config = Config.from_dict({"journal": {"sync": "full", "keep_events": 5}}).journal
    with Journal.from_config(tmp_path, config) as journal:
        assert journal._writer.retention.keep_events == 5
        assert journal._writer.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_readers_in_many_threads_read_while_the_writer_commits(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, callbacks):
        seq = Sequencer(journal)
        failures: list[BaseException] = []

        def read() -> None:
            try:
                for _ in range(20):
                    events = all_events(journal)
                    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        readers = [threading.Thread(target=read) for _ in range(8)]
        for t in readers:
            t.start()
        for i in range(300):
            seq.emit(sys_event("tick", n=i), sys_event("tock", n=i))
        for t in readers:
            t.join(30)
        callbacks.wait_for(lambda c: c.commits[-1:] == [600])
        assert failures == []
        # A reading thread's connection goes with the thread.
        assert len(journal._reader._holders) <= 1


class AppendAfterClose:
    """The writer's queue as `Journal._submit` sees it: an append held until close() is
    over (or 0.5 s), as a thread preempted between the closed check and the append is."""

    def __init__(self, queue: Any, closed: threading.Event) -> None:
        self._queue, self._closed = queue, closed
        self.entered = threading.Event()

    def append(self, item: Any) -> None:
        self.entered.set()
        self._closed.wait(0.5)
        self._queue.append(item)


def test_a_record_queued_as_the_journal_closes_still_gets_an_answer(tmp_path: Path) -> None:
    """Its ticket is either committed or failed (JournalClosed), never left pending: an
    action or a submit reply waiting on it would wait out its whole timeout."""
    journal = Journal.open(tmp_path / "data")
    Callbacks().start(journal)
    closed = threading.Event()
    held = AppendAfterClose(journal._queue, closed)
    journal._queue = held  # type: ignore[assignment]
    tickets: list[Any] = []
    submitter = threading.Thread(target=lambda: tickets.append(journal.record_intent(
        "exec_w_00000001", "a", "exec_w_00000001:a", 1, None)))
    submitter.start()
    assert held.entered.wait(10)  # past the closed check

    def close() -> None:
        journal.close()
        closed.set()

    closer = threading.Thread(target=close)
    closer.start()
    submitter.join(10)
    closer.join(10)
    (ticket,) = tickets
    assert ticket.done or isinstance(ticket.error, JournalClosed), ticket


def test_a_read_the_close_cuts_short_raises_journal_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A control worker's replay while the daemon stops: the connection closed under it
    is the stop's JournalClosed (answered as a stop), not sqlite3's ProgrammingError
    (logged as a bug, with a traceback)."""
    with Journal.open(tmp_path) as journal:
        reader = journal._reader
        conn = reader._conn()

        def closed_under_it() -> sqlite3.Connection:
            reader.close()  # another thread's close, between taking the connection and using it
            return conn

        monkeypatch.setattr(reader, "_conn", closed_under_it)
        with pytest.raises(JournalClosed, match="closed during the read"):
            journal.replay(1)
