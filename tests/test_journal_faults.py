"""Faults: a failed write reports nothing uncommitted, calls on_error once per episode,
keeps its data and retries; the first success calls on_recovered_write and the seqs go
on with no gap. A full disk (RLIMIT_FSIZE in a child), a removed journal.db, a writer
that dies, and closing while writes fail."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import journal_failure_mark, journal_writer
from actors.errors import JournalClosed, JournalError, JournalWriteFailed
from actors.journal import Journal
from actors.journal_failure_mark import MARK_NAME
from tests.engine_journal_helpers import eventually
from tests.journal_helpers import (
    Callbacks,
    Child,
    Sequencer,
    all_events,
    assert_gapless,
    run_events,
    started,
    sys_event,
)


def test_a_transient_failure_halts_reporting_then_resumes_without_a_gap(tmp_path: Path) -> None:
    with started(tmp_path, retry_min_s=0.01, retry_max_s=0.02) as (journal, callbacks):
        seq = Sequencer(journal)
        seq.emit(*[sys_event("tick") for _ in range(5)])
        assert journal.flush(5)
        journal._testing_fail_commits(3)
        ticket = journal.record_submitted("exec_wf_00000001", "wf", {}, None, None, 0, None)
        seq.emit(*run_events("exec_wf_00000001"))
        callbacks.wait_for(lambda c: len(c.errors) == 1)
        error = callbacks.errors[0]
        assert isinstance(error, JournalWriteFailed) and "disk I/O error" in str(error)
        assert isinstance(error.__cause__, Exception)
        callbacks.wait_for(lambda c: c.recovered == 1)
        assert callbacks.commits == [5, 11], "nothing reported until the write succeeded"
        assert len(callbacks.errors) == 1, "one on_error per failure episode"
        assert ticket.done
        stats = journal.stats()
        assert stats["failures"] == 3 and not stats["failing"] and "injected" in stats["last_error"]
        assert_gapless(all_events(journal), 1, 11)
        row = journal.execution("exec_wf_00000001")
        assert row is not None and row["status"] == "completed"


def test_while_failing_nothing_uncommitted_is_readable_or_reported(tmp_path: Path) -> None:
    with started(tmp_path, retry_min_s=0.01, retry_max_s=0.02) as (journal, callbacks):
        seq = Sequencer(journal)
        seq.emit(sys_event("tick"))
        assert journal.flush(5)
        journal._testing_fail_commits(10**6)  # fails until told otherwise
        ticket = journal.save_emergency({"state": "HALT"})
        seq.emit(sys_event("emergency_state_changed", state="HALT", previous_state="NORMAL",
                           reason="journal", source="journal"))
        callbacks.wait_for(lambda c: len(c.errors) == 1)
        assert journal.flush(0.05) is False and not ticket.wait(0.05) and ticket.error is None
        assert journal.last_committed_seq() == 1 and callbacks.commits == [1]
        assert [e["seq"] for e in all_events(journal)] == [1]
        assert journal.stats()["failing"] and journal.stats()["lag"] == 1
        seq.emit(sys_event("tock"))  # still accepted (memory) while failing
        journal._testing_fail_commits(0)
        callbacks.wait_for(lambda c: c.recovered == 1 and c.commits[-1] == 3)
        assert ticket.wait(5)
        assert_gapless(all_events(journal), 1, 3)


def test_readers_never_go_past_the_seq_reported_committed(tmp_path: Path) -> None:
    """A row may hold events past the reported seq for an instant (commit, then
    on_commit): readers stop at the reported seq, as the ordered log does."""
    with started(tmp_path) as (journal, callbacks):
        Sequencer(journal).emit(*[sys_event("tick", n=i) for i in range(10)])
        callbacks.wait_for(lambda c: c.commits == [10])
        journal._reader._committed = lambda: 4
        page = journal.replay(1)
        assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4]
        assert (page["next_seq"], page["last_seq"]) == (5, 4)


def test_a_full_disk_in_a_child_reports_only_what_is_on_disk(tmp_path: Path) -> None:
    child = Child("fsize", str(tmp_path))
    try:
        child.wait_for(lambda lines: "DONE" in lines, timeout=60)
    finally:
        child.kill()
    errors = child.tagged("E")
    assert len(errors) == 1 and "journal write failed" in errors[0], child.lines[-5:]
    assert child.tagged("F") == ["False"]  # still failing: flush could not complete
    reported = [int(s) for s in child.tagged("C")]
    assert reported == sorted(reported) and reported
    with Journal.open(tmp_path) as journal:
        last = journal.recovery.last_seq
        assert last == reported[-1], "on disk: exactly what was reported committed"
        assert_gapless(all_events(journal), 1, last)
        for execution_id in child.tagged("S"):
            assert journal.has_execution(execution_id)


def test_a_removed_journal_file_is_a_write_failure(tmp_path: Path) -> None:
    with started(tmp_path, retry_min_s=0.01, retry_max_s=0.02) as (journal, callbacks):
        seq = Sequencer(journal)
        seq.emit(sys_event("tick"))
        assert journal.flush(5)
        os.unlink(tmp_path / "journal.db")
        seq.emit(sys_event("tock"))
        callbacks.wait_for(lambda c: len(c.errors) == 1)
        assert "removed or replaced" in str(callbacks.errors[0])
        assert callbacks.commits == [1] and journal.last_committed_seq() == 1
        # What the open file held is copied beside it: the journal is not lost at close.
        rescued = tmp_path / "journal.db.rescued"
        eventually(rescued.exists, 10.0, "the rescued copy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.replace(rescued, elsewhere / "journal.db")
    with Journal.open(elsewhere) as kept:
        assert [e["type"] for e in all_events(kept)][:1] == ["tick"]


def test_a_journal_file_damaged_in_place_is_a_write_failure_at_the_next_checkpoint(
        tmp_path: Path) -> None:
    """journal.db truncated under the daemon (same inode: the file check passes): commits
    to the WAL went on succeeding, acknowledged, never to be read back. The checkpoint that
    finds the file corrupt fails the writes from then on (HALT), with no event needed."""
    with started(tmp_path, retry_min_s=0.01, retry_max_s=0.02) as (journal, callbacks):
        seq = Sequencer(journal)
        for _ in range(50):
            seq.emit(*run_events("exec_wf_00000001"))
        assert journal.flush(5)
        eventually(lambda: journal.stats()["checkpoints"] >= 1, 10.0, "a first checkpoint")
        os.truncate(tmp_path / "journal.db", 4096)
        committed = journal.last_committed_seq()
        seq.emit(sys_event("tick"))  # a commit, and the checkpoint after it
        callbacks.wait_for(lambda c: len(c.errors) == 1, timeout=10.0)
        assert "is damaged" in str(callbacks.errors[0])
        assert journal.stats()["failing"]
        seq.emit(sys_event("tock"))  # nothing more goes into the damaged file
        failures = journal.stats()["failures"]
        eventually(lambda: journal.stats()["failures"] > failures, 10.0, "a retry with tock")
        assert journal.last_committed_seq() <= committed + 1


def test_a_removed_wal_is_a_write_failure_and_what_it_held_is_kept(tmp_path: Path) -> None:
    """Removing journal.db-wal while the journal ran went unnoticed: commits went on into
    the removed file, were reported and published, and a restart lost them (seqs reused).
    Now the first commit after it fails (a HALT in the engine), and what the removed WAL
    holds is first copied into journal.db, so a kill -9 right after loses nothing
    reported."""
    child = Child("walrm", str(tmp_path))
    try:
        child.wait_for(lambda lines: any(line.startswith("E ") for line in lines))
        assert child.tagged("C") == ["5"], "nothing reported past the removal"
        assert "journal.db-wal was removed or replaced" in child.tagged("E")[0]
        assert "is copied into journal.db" in child.tagged("E")[0]
    finally:
        child.kill()  # SIGKILL: no close, no checkpoint of SQLite's own
    with Journal.open(tmp_path) as journal:
        assert journal.recovery.last_seq >= 5
        assert_gapless(all_events(journal), 1, journal.recovery.last_seq)


def test_closing_while_failing_fails_the_pending_tickets(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, retry_min_s=0.01, retry_max_s=0.02)
    callbacks = Callbacks().start(journal)
    journal._testing_fail_commits(10**6)
    ticket = journal.record_intent("exec_wf_00000001", "trade", "exec_wf_00000001:trade", 1, "t")
    callbacks.wait_for(lambda c: len(c.errors) == 1)
    journal.close(timeout=5)
    assert not ticket.done and isinstance(ticket.error, JournalClosed)
    assert not ticket.wait(1)
    with Journal.open(tmp_path) as reopened:  # the lock was released
        assert reopened.recovery.unresolved_intents == []


def test_a_writer_that_dies_says_so(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, callbacks):
        journal.append([{"seq": 1, "timestamp": "t"}])  # no "type": a caller's bug
        callbacks.wait_for(lambda c: len(c.errors) == 1)
        assert isinstance(callbacks.errors[0], JournalError)
        assert "writer stopped" in str(callbacks.errors[0]) and journal.stats()["failing"]


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.binary(max_size=20) | st.integers(min_value=-(2**70), max_value=2**70)
    | st.just(Opaque()),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.frozensets(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=values)
def test_any_event_payload_is_journaled_and_read_back(tmp_path: Path, payload: object) -> None:
    data_dir = tmp_path / os.urandom(6).hex()
    with started(data_dir) as (journal, callbacks):
        seq = Sequencer(journal)
        seq.emit(sys_event("odd", payload=payload), sys_event("plain", n=1))
        callbacks.wait_for(lambda c: c.commits[-1:] == [2])
        events = all_events(journal)
        assert [(e["seq"], e["type"]) for e in events] == [(1, "odd"), (2, "plain")]
        assert events[1]["n"] == 1 and callbacks.errors == []
        # What came back is what msgpack makes of it (after the fallbacks), not a crash.
        msgpack.packb(events[0]["payload"], use_bin_type=True)


def test_the_write_failed_mark_lasts_until_what_the_failure_queued_is_committed(
        tmp_path: Path) -> None:
    """While writes fail, data_dir holds the mark, made before `on_error` runs (the engine
    halts there); it goes once the event `on_error` queued (the engine's HALT) is
    committed, so a restart in between would find it."""
    mark = tmp_path / MARK_NAME
    journal = Journal.open(tmp_path, retry_min_s=0.01, retry_max_s=0.02)
    seq = Sequencer(journal)
    marked_when_told: list[bool] = []
    halt_seq: list[int] = []
    callbacks = Callbacks()

    def on_error(exc: BaseException) -> None:
        marked_when_told.append(mark.exists())
        halt_seq.append(seq.emit(sys_event("emergency_state_changed", state="HALT")))
        callbacks.on_error(exc)

    journal.start(on_commit=callbacks.on_commit, on_error=on_error,
                  on_recovered_write=callbacks.on_recovered_write)
    try:
        seq.emit(sys_event("tick"))
        assert journal.flush(5) and not mark.exists()
        journal._testing_fail_commits(3)
        seq.emit(sys_event("tock"))
        callbacks.wait_for(lambda c: c.recovered == 1)
        assert marked_when_told == [True]
        callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] >= halt_seq[0])
        eventually(lambda: not mark.exists(), what="the mark gone with the HALT committed")
    finally:
        journal.close(timeout=5)
    with Journal.open(tmp_path) as reopened:
        assert reopened.recovery.write_failed_mark is None


def test_a_journal_closed_while_writes_fail_leaves_the_mark_for_the_next_start(
        tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, retry_min_s=0.01, retry_max_s=0.02)
    callbacks = Callbacks().start(journal)
    journal._testing_fail_commits(10**6)
    Sequencer(journal).emit(sys_event("tick"))
    callbacks.wait_for(lambda c: len(c.errors) == 1)
    journal.close(timeout=5)
    with started(tmp_path) as (reopened, _):
        found = reopened.recovery.write_failed_mark
        assert found is not None and "disk I/O error" in found
        Sequencer(reopened).emit(sys_event("tock"))
        assert reopened.flush(5)
        assert (tmp_path / MARK_NAME).exists(), "a commit alone does not remove it"
        reopened.clear_write_failed_mark()  # what a start does once its HALT is queued
        eventually(lambda: not (tmp_path / MARK_NAME).exists(), what="the mark gone")


def test_a_mark_the_disk_refused_is_tried_again_at_the_next_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = journal_failure_mark.set_mark
    attempts: list[bool] = []

    def refused_once(directory: Path, reason: str) -> bool:
        attempts.append(bool(attempts))
        return made(directory, reason) if len(attempts) > 1 else False

    monkeypatch.setattr(journal_writer, "set_mark", refused_once)
    journal = Journal.open(tmp_path, retry_min_s=0.01, retry_max_s=0.02)
    callbacks = Callbacks().start(journal)
    try:
        journal._testing_fail_commits(10**6)
        Sequencer(journal).emit(sys_event("tick"))
        callbacks.wait_for(lambda c: len(c.errors) == 1)
        eventually((tmp_path / MARK_NAME).exists, what="the mark made on a retry")
        assert attempts[:2] == [False, True]
    finally:
        journal.close(timeout=5)
