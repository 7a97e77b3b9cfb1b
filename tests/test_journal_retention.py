"""Retention: `keep_events` / `keep_days` prune whole batch rows in the writer, never past
a registered cursor, an unresolved intent or the newest row; executions and resolved
intents go with their events; the file stays bounded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import journal_retention
from actors.clock import ManualClock
from actors.journal import Journal
from actors.journal_checkpointer import WAL_SIZE_LIMIT
from tests.engine_journal_helpers import captured_logs, eventually
from tests.journal_helpers import (
    Sequencer,
    all_events,
    assert_gapless,
    run_events,
    started,
    sys_event,
)


def commit_rows(journal: Journal, seq: Sequencer, rows: int, per_row: int = 5) -> None:
    """`rows` commits of `per_row` events each (a flush per row: one commit, one row)."""
    for _ in range(rows):
        seq.emit(*[sys_event("tick") for _ in range(per_row)])
        assert journal.flush(5)


def batch_rows(journal: Journal) -> int:
    return int(journal._writer.conn.execute("SELECT count(*) FROM event_batches").fetchone()[0])


def db_pages(journal: Journal) -> int:
    return int(journal._writer.conn.execute("PRAGMA page_count").fetchone()[0])


def test_tiny_keep_events_keeps_the_file_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_retention, "PRUNE_INTERVAL_S", 0.0)  # a pass after every commit
    with started(tmp_path, keep_events=50) as (journal, _):
        seq = Sequencer(journal)
        pages = []
        for _ in range(3):
            for _ in range(200):
                journal.record_submitted(f"exec_wf_{seq.seq:08x}", "wf", {"pad": "x" * 500},
                                         None, None, 0, None)
                seq.emit(*run_events(f"exec_wf_{seq.seq:08x}"))
                assert journal.flush(5)
            assert journal.flush(5)  # the pass after the last commit has run
            assert batch_rows(journal) <= 50 // 6 + 2
            first = journal.first_seq()
            assert seq.seq - 50 - 6 < first <= seq.seq - 50 + 1
            assert_gapless(all_events(journal, first), first, seq.seq)
            pages.append(db_pages(journal))
            assert len(journal.executions(limit=1000)) <= 50 // 6 + 2
        assert pages[2] <= pages[0] + 4, f"the file grows: {pages} pages"
        # The WAL is checkpointed off the commit path (actors/journal_checkpointer.py): at
        # this test's rate (a prune pass after every commit, ~100 MB/s of WAL) its peak
        # depends on how much CPU the checkpointer gets (SQLite's own checkpoint in the
        # writer is the backstop); once checkpoints catch up it rewinds and its file is cut
        # back to WAL_SIZE_LIMIT (the cut itself: tests/test_journal_checkpointer.py).
        wal = tmp_path / "journal.db-wal"

        def wal_cut_back() -> bool:
            seq.emit(sys_event("tick"))  # the write after a full checkpoint rewinds it
            assert journal.flush(5)
            return wal.stat().st_size <= WAL_SIZE_LIMIT

        eventually(wal_cut_back, what=f"the WAL within {WAL_SIZE_LIMIT} bytes")
        assert journal.stats()["pruned_rows"] >= 590


def test_refused_submits_are_kept_to_keep_events_while_no_event_comes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a HALT no event is committed, and a refused submit has none: interval triggers
    wrote a refused row per period that no event's going ever let go (2,100 rows in 20 s
    with keep_events = 10, until a resume)."""
    monkeypatch.setattr(journal_retention, "PRUNE_INTERVAL_S", 0.0)
    with started(tmp_path, keep_events=10) as (journal, _):
        Sequencer(journal).emit(sys_event("tick"))
        for i in range(300):
            journal.record_submitted(f"exec_wf_{i:08x}", "wf", {}, None, None, 0, None,
                                     refused=("halted", "Halted"))
            if i % 50 == 49:
                assert journal.flush(5)
        assert journal.flush(5)
        kept = [e["execution_id"] for e in journal.executions(status="refused", limit=1000)]
        assert 1 <= len(kept) <= 11, len(kept)
        assert kept[0] == f"exec_wf_{299:08x}"  # the newest stay


def test_a_registered_cursor_holds_retention_back(tmp_path: Path) -> None:
    with started(tmp_path, keep_events=10) as (journal, _):
        seq = Sequencer(journal)
        journal.register_cursor("hook", 100)
        commit_rows(journal, seq, 50)                       # seqs 1..250, rows of 5
        with captured_logs() as logs:
            assert journal.prune()
        assert journal.first_seq() == 101                  # 101.. not passed by "hook"
        # Told: status, metrics and a warning (101..240 are past keep_events).
        stats = journal.stats()
        assert (stats["retention_held_by"], stats["retention_held_events"]) == (
            "cursor hook", 140)
        assert [(line["held_by"], line["held_events"]) for line in logs
                if line["event"] == "journal_retention_held"] == [("cursor hook", 140)]
        assert journal.replay(0, limit=1)["events"][0]["seq"] == 101
        journal.register_cursor("hook", 200)
        assert journal.prune() and journal.first_seq() == 201
        journal.unregister_cursor("hook")
        assert journal.prune() and journal.first_seq() == 241   # keep_events alone
        stats = journal.stats()
        assert (stats["retention_held_by"], stats["retention_held_events"]) == (None, 0)
        assert journal.replay(1, limit=5)["first_seq"] == 241
    with Journal.open(tmp_path) as journal:
        assert journal.recovery.cursors == {}
        assert journal.recovery.last_seq == 250 and journal.first_seq() == 241


def test_an_unresolved_intent_holds_retention_back(tmp_path: Path) -> None:
    with started(tmp_path, keep_events=10) as (journal, _):
        seq = Sequencer(journal)
        commit_rows(journal, seq, 20)                       # 1..100
        key = "exec_wf_00000001:trade"
        assert journal.record_intent("exec_wf_00000001", "trade", key, 1, "t").wait(5)
        commit_rows(journal, seq, 30)                       # 101..250
        assert journal.prune() and journal.first_seq() == 96  # the row holding seq_at 100
        assert [i["seq_at"] for i in journal.intents()] == [100]
        assert journal.stats()["retention_held_by"] == f"unresolved intent {key}"
        journal.resolve_intent(key, "not_filled")
        assert journal.prune() and journal.first_seq() == 241
        assert journal.intents(unresolved=False) == []  # resolved, its events gone: pruned


def test_keep_days_prunes_by_age(tmp_path: Path) -> None:
    clock = ManualClock()
    with started(tmp_path, keep_events=None, keep_days=1.0, clock=clock) as (journal, _):
        seq = Sequencer(journal)
        commit_rows(journal, seq, 10)                       # 1..50, written "2 days ago"
        clock.advance(2 * 86400)
        commit_rows(journal, seq, 10)                       # 51..100
        journal.register_cursor("hook", 10)
        assert journal.prune() and journal.first_seq() == 11
        stats = journal.stats()  # 11..50 are due by age, held by the cursor
        assert (stats["retention_held_by"], stats["retention_held_events"]) == (
            "cursor hook", 40)
        journal.unregister_cursor("hook")
        assert journal.prune() and journal.first_seq() == 51
        clock.advance(0.5 * 86400)
        assert journal.prune() and journal.first_seq() == 51
        assert_gapless(all_events(journal, 51), 51, 100)


def test_the_newest_row_is_kept_so_seq_continues(tmp_path: Path) -> None:
    clock = ManualClock()
    with started(tmp_path, keep_events=None, keep_days=1.0, clock=clock) as (journal, _):
        commit_rows(journal, Sequencer(journal), 4)
        clock.advance(30 * 86400)
        assert journal.prune()
        assert journal.first_seq() == 16 and batch_rows(journal) == 1
    with Journal.open(tmp_path) as journal:
        assert journal.recovery.last_seq == 20


def test_executions_go_with_their_events_but_open_ones_stay(tmp_path: Path) -> None:
    with started(tmp_path, keep_events=12) as (journal, _):
        seq = Sequencer(journal)
        journal.record_submitted("exec_wf_queued00", "wf", {}, None, None, 0, None)
        seq.emit(*run_events("exec_wf_running0")[:2])
        for i in range(20):
            seq.emit(*run_events(f"exec_wf_{i:08x}"))
            assert journal.flush(5)
        assert journal.prune()
        kept = {e["execution_id"] for e in journal.executions(limit=100)}
        assert kept == {"exec_wf_queued00", "exec_wf_running0", "exec_wf_00000012",
                        "exec_wf_00000013"}
        row = journal.execution("exec_wf_running0")
        assert row is not None and row["status"] == "running" and row["nodes"] == {}


@pytest.mark.parametrize("first_write_fails", [False, True])
def test_keep_days_goes_on_after_a_clock_that_ran_ahead_is_set_back(
        tmp_path: Path, first_write_fails: bool) -> None:
    clock = ManualClock()
    start = clock.time()
    with started(tmp_path, keep_events=None, keep_days=1.0, clock=clock) as (journal, _):
        seq = Sequencer(journal)
        commit_rows(journal, seq, 10)                       # 1..50
        clock.set_wall(start + 10 * 365 * 86400)            # NTP steps ten years ahead
        commit_rows(journal, seq, 10)                       # 51..100, stamped ten years on
        clock.set_wall(start + 60)                          # ... and is corrected
        if first_write_fails:  # the restamp is rolled back with it, and done on the retry
            journal._testing_fail_commits(1)
        commit_rows(journal, seq, 10)                       # 101..150
        clock.advance(2 * 86400)
        commit_rows(journal, seq, 10)                       # 151..200
        assert journal.prune() and journal.first_seq() == 151
        assert_gapless(all_events(journal, 151), 151, 200)


def test_a_clock_stepped_years_ahead_while_open_prunes_nothing_it_would_not_have(
        tmp_path: Path) -> None:
    clock = ManualClock()
    with captured_logs() as logs, started(tmp_path, keep_events=None, keep_days=1.0,
                                          clock=clock) as (journal, _):
        seq = Sequencer(journal)
        commit_rows(journal, seq, 10)                       # 1..50
        assert journal.prune() and journal.first_seq() == 1  # (the first believed reading)
        clock.set_wall(clock.time() + 20 * 365 * 86400)     # NTP steps twenty years ahead
        commit_rows(journal, seq, 10)                       # 51..100, stamped twenty years on
        assert journal.prune() and journal.first_seq() == 1
        assert journal.stats()["clock_ahead_s"] == pytest.approx(20 * 365 * 86400)
        clock.advance(0.9 * 86400)                          # less than a day really passes
        assert journal.prune() and journal.first_seq() == 1
        clock.advance(0.2 * 86400)                          # now 1..50 are a day old
        assert journal.prune() and journal.first_seq() == 51
        assert_gapless(all_events(journal, 51), 51, 100)
        clock.set_wall(clock.time() - 20 * 365 * 86400)     # ... and is corrected
        assert journal.prune() and journal.stats()["clock_ahead_s"] == 0
    stepped = [e for e in logs if e["event"] == "journal_clock_stepped_ahead"]
    assert len(stepped) == 1 and stepped[0]["ahead_s"] == pytest.approx(20 * 365 * 86400)
    assert [e["event"] for e in logs].count("journal_clock_in_line_again") == 1


def test_the_time_that_passes_prunes_no_further_than_an_intent_or_a_cursor(
        tmp_path: Path) -> None:
    clock = ManualClock()
    with started(tmp_path, keep_events=None, keep_days=1.0, clock=clock) as (journal, _):
        seq = Sequencer(journal)
        commit_rows(journal, seq, 20)                       # 1..100
        key = "exec_wf_00000001:trade"
        assert journal.record_intent("exec_wf_00000001", "trade", key, 1, "t").wait(5)
        journal.register_cursor("hook", 150)
        commit_rows(journal, seq, 20)                       # 101..200
        clock.advance(30 * 86400)
        assert journal.prune() and journal.first_seq() == 96  # the row holding seq_at 100
        journal.resolve_intent(key, "not_filled")
        assert journal.prune() and journal.first_seq() == 151  # not past the cursor
        assert_gapless(all_events(journal, 151), 151, 200)


def test_a_daemon_started_with_a_clock_years_ahead_believes_it(tmp_path: Path) -> None:
    with started(tmp_path, keep_events=None, keep_days=1.0) as (journal, _):
        commit_rows(journal, Sequencer(journal), 10)        # 1..50, stamped now
    ahead = ManualClock(start_wall=time.time() + 20 * 365 * 86400)
    with started(tmp_path, keep_events=None, keep_days=1.0, clock=ahead) as (journal, _):
        assert journal.prune() and journal.first_seq() == 46  # all but the newest row
        assert journal.stats()["clock_ahead_s"] == 0


class TestJudgedTime:
    """`Retention.judged_time`, driven step by step (no journal, no threads)."""

    @staticmethod
    def retention(clock: ManualClock) -> journal_retention.Retention:
        return journal_retention.Retention(keep_events=None, keep_days=1.0, clock=clock,
                                           cursors={})

    def test_a_step_within_the_slack_is_believed_one_past_it_is_not(self) -> None:
        clock = ManualClock()
        retention = self.retention(clock)
        start = retention.judged_time()
        clock.set_wall(start + journal_retention.WALL_STEP_SLACK_S)
        assert retention.judged_time() == start + journal_retention.WALL_STEP_SLACK_S
        clock.set_wall(clock.time() + journal_retention.WALL_STEP_SLACK_S + 1)
        assert retention.judged_time() == start + journal_retention.WALL_STEP_SLACK_S
        assert retention.clock_ahead_s == journal_retention.WALL_STEP_SLACK_S + 1

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["advance", "step"]),
                              st.floats(min_value=-1e9, max_value=1e9)), max_size=30))
    def test_judged_time_never_runs_ahead_of_the_wall_or_of_the_time_that_passed(
            self, moves: list[tuple[str, float]]) -> None:
        clock = ManualClock()
        retention = self.retention(clock)
        judged, mono = retention.judged_time(), clock.monotonic()
        only_advanced = True
        for kind, amount in moves:
            if kind == "advance":
                clock.advance(abs(amount))
            else:
                clock.set_wall(clock.time() + amount)
                only_advanced = False
            now = retention.judged_time()
            assert now <= clock.time()
            assert now - judged <= (clock.monotonic() - mono
                                    + journal_retention.WALL_STEP_SLACK_S + 1e-6 * abs(now))
            if only_advanced:
                assert now == clock.time()
            judged, mono = now, clock.monotonic()


def test_a_clock_set_back_while_the_journal_was_closed_is_noticed_on_reopening(
        tmp_path: Path) -> None:
    ahead = ManualClock(start_wall=ManualClock().time() + 10 * 365 * 86400)
    with started(tmp_path, keep_events=None, keep_days=1.0, clock=ahead) as (journal, _):
        commit_rows(journal, Sequencer(journal), 10)        # 1..50, stamped ten years on
    clock = ManualClock()
    with started(tmp_path, keep_events=None, keep_days=1.0, clock=clock) as (journal, _):
        seq = Sequencer(journal)
        commit_rows(journal, seq, 10)                       # 51..100
        clock.advance(2 * 86400)
        commit_rows(journal, seq, 10)                       # 101..150
        assert journal.prune() and journal.first_seq() == 101
