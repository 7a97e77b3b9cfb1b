"""Writing and reading back: group commit, replay paging and topics, executions, action
intents and their reconciliation, coalesced snapshots, and recovery at the next open."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from actors import journal_reads
from actors.errors import NotFound
from actors.journal import Journal
from actors.packing import pack
from tests.journal_helpers import (
    Callbacks,
    Sequencer,
    all_events,
    assert_gapless,
    run_events,
    started,
    sys_event,
    topics,
    wf_event,
)


def test_appends_before_start_wait_and_then_go_in_one_commit(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    seq = Sequencer(journal)
    for i in range(2000):
        seq.emit(sys_event("tick", n=i))
    assert journal.last_committed_seq() == 0 and journal.replay(1)["events"] == []
    Callbacks().start(journal)
    try:
        assert journal.wait_committed(2000, 10)
        stats = journal.stats()
        assert stats["commits"] == 1 and stats["batch_max"] == 2000 and stats["lag"] == 0
        assert_gapless(all_events(journal), 1, 2000)
    finally:
        journal.close()


def test_group_commit_under_a_concurrent_producer(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, callbacks):
        seq = Sequencer(journal)
        appends = 3000

        def produce() -> None:
            for i in range(appends):
                seq.emit(sys_event("tick", n=i), sys_event("tock", n=i))

        producers = [threading.Thread(target=produce) for _ in range(2)]
        for t in producers:
            t.start()
        for t in producers:
            t.join(30)
        last = 2 * appends * 2
        callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] == last)
        commits = callbacks.commits
        assert commits == sorted(set(commits)), "on_commit seqs strictly increase"
        assert len(commits) < 2 * appends, "group commit: fewer commits than appends"
        assert journal.stats()["events_committed"] == last
        assert_gapless(all_events(journal), 1, last)


def test_replay_pages_by_seq_and_filters_by_topic(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        for i in range(5):
            seq.emit(*run_events(f"exec_a_{i:08x}", "a"))           # 6 events each
            seq.emit(sys_event("emergency_state_changed", state="HALT", previous_state="NORMAL",
                               reason="r", source="manual"),
                     sys_event("risk_limit_warning", limit="l", value=1.0),
                     sys_event("circuit_opened", breaker="x", failures=5))
            seq.emit(*run_events(f"exec_b_{i:08x}", "b"))
        assert journal.flush(5)
        last = 5 * 15
        page = journal.replay(1, limit=10)
        assert [e["seq"] for e in page["events"]] == list(range(1, 11))
        assert (page["next_seq"], page["last_seq"], page["first_seq"]) == (11, last, 1)
        assert_gapless(all_events(journal), 1, last)
        a = journal.replay(0, limit=1000, topic_prefix="workflow/a/")["events"]
        assert len(a) == 30 and set(topics(a)) == {f"workflow/a/{e['type']}" for e in a}
        assert [e["wseq"] for e in a] == list(range(1, 31))
        emergency = journal.read_events(1, 1000, "emergency/")
        assert {e["type"] for e in emergency} == {"emergency_state_changed", "risk_limit_warning"}
        system = journal.read_events(1, 3, "system/")
        assert [e["type"] for e in system] == ["circuit_opened"] * 3
        page = journal.replay(1, limit=2, topic_prefix="system/")
        assert page["next_seq"] == page["events"][-1]["seq"] + 1
        done = journal.replay(last + 1)
        assert done["events"] == [] and done["next_seq"] == last + 1
        assert journal.replay(last + 50)["next_seq"] == last + 50
        first = journal.replay(1, limit=1)["events"][0]
        assert first["execution_id"] == "exec_a_00000000" and first["inputs"] == {"x": 1}
        bad_args: list[tuple[dict[str, Any], type[Exception]]] = [
            ({"since_seq": -1}, ValueError), ({"limit": 0}, ValueError),
            ({"since_seq": "1"}, TypeError), ({"topic_prefix": 3}, TypeError)]
        for bad, error in bad_args:
            with pytest.raises(error):
                journal.replay(**{"since_seq": 1, **bad})


def test_a_replay_of_large_events_pages_by_bytes_and_loses_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_reads, "MAX_REPLY_BYTES", 10_000)
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        for i in range(20):
            seq.emit(sys_event("tick", n=i, blob="x" * 3000))
        seq.emit(sys_event("tick", n=20, blob="y" * 50_000))  # alone past the budget
        seq.emit(sys_event("tick", n=21))
        assert journal.flush(5)
        page = journal.replay(1, limit=1000)
        sizes = [len(pack(e)) for e in page["events"]]
        assert sum(sizes[:-1]) < 10_000 <= sum(sizes) and page["next_seq"] == len(sizes) + 1
        pages, since = [], 1
        while since <= 22:
            page = journal.replay(since, limit=1000)
            pages.append([e["seq"] for e in page["events"]])
            since = page["next_seq"]
        assert [s for p in pages for s in p] == list(range(1, 23))
        assert [21] in pages  # the large one: a page of its own, never none
        assert journal.replay(1, limit=1000, topic_prefix="workflow/")["events"] == []


def test_execution_lifecycle_queued_running_completed(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        events = run_events("exec_wf_00000001")
        ticket = journal.record_submitted("exec_wf_00000001", "wf", {"x": 1}, "bot", "strat", 5,
                                          "2026-01-01T00:00:00.000Z")
        assert ticket.wait(5) and ticket.done
        queued = journal.execution("exec_wf_00000001")
        assert queued is not None
        assert (queued["status"], queued["inputs"], queued["priority"], queued["bot_id"]) == \
            ("queued", {"x": 1}, 5, "bot")
        seq.emit(*events[:4])  # started; price completed; trade started
        assert journal.flush(5)
        running = journal.execution("exec_wf_00000001")
        assert running is not None and running["status"] == "running"
        assert running["nodes"] == {
            "price": {"status": "completed", "attempts": 1, "outputs": {"price": 1.5}},
            "trade": {"status": "running", "attempts": 1}}
        assert journal.executions(status="running")[0]["execution_id"] == "exec_wf_00000001"
        seq.emit(*events[4:])
        assert journal.flush(5)
        done = journal.execution("exec_wf_00000001")
        assert done is not None
        assert done["status"] == "completed" and done["duration_ms"] == 2.0
        assert done["results"] == {"price": {"price": 1.5}, "trade": {"id": 7}}
        assert done["nodes"]["trade"] == {"status": "completed", "attempts": 1,
                                          "outputs": {"id": 7}}
        assert done["started_at"] and done["ended_at"] and done["inputs"] == {"x": 1}
        assert journal.has_execution("exec_wf_00000001")
        assert not journal.has_execution("exec_wf_ffffffff")
        assert journal.execution("exec_wf_ffffffff") is None


def test_one_commit_or_several_give_the_same_execution_row(tmp_path: Path) -> None:
    """Submitted, started and ended in one commit are one insert; across commits, updates
    that only move forward. Either way the row is the same."""
    rows = []
    for split in (False, True):
        data_dir = tmp_path / str(split)
        journal = Journal.open(data_dir)
        seq = Sequencer(journal)
        journal.record_submitted("exec_wf_00000002", "wf", {"x": 1}, "bot", "strat", 0, "t0")
        for event in run_events("exec_wf_00000002", status="failed"):
            seq.emit(event)
            if split:
                journal._writer.write_now([])  # commit each step on its own
        if not split:
            journal._writer.write_now([])
        rows.append(journal.execution("exec_wf_00000002"))
        journal.close()
    assert rows[0] == rows[1]
    assert rows[0] is not None and rows[0]["status"] == "failed"
    assert (rows[0]["error"], rows[0]["error_type"]) == ("boom", "ValueError")


def status_steps(journal: Journal, seq: Sequencer, commit: Any) -> list[str]:
    """A late record_submitted after the start, and an interrupted execution's
    execution_started (the engine publishes one for a queued execution it interrupts):
    neither moves a status back."""
    statuses = []
    events = run_events("exec_wf_0000000a")
    journal.record_submitted("exec_wf_0000000b", "wf", {"b": 1}, None, None, 0, "t")
    seq.emit(events[0])
    commit()
    journal.record_submitted("exec_wf_0000000a", "wf", {"x": 1}, "bot", "strat", 3, "t")
    commit()
    journal.mark_interrupted(["exec_wf_0000000b"])
    seq.emit(wf_event("execution_started", "exec_wf_0000000b", inputs={"b": 1}))
    commit()
    for execution_id in ("exec_wf_0000000a", "exec_wf_0000000b"):
        row = journal.execution(execution_id)
        assert row is not None
        statuses.append(row["status"])
    return statuses


def test_status_only_moves_forward(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "direct") as journal:
        seq = Sequencer(journal)
        assert status_steps(journal, seq, lambda: journal._writer.write_now([])) == \
            ["running", "interrupted"]
        row = journal.execution("exec_wf_0000000a")
        assert row is not None and (row["priority"], row["submitted_at"]) == (3, "t")


def test_a_failed_commit_merged_with_later_ones_gives_the_same_rows(tmp_path: Path) -> None:
    """While commits fail, later work is merged into the pending group: the rows must come
    out as if each step had been committed on its own."""
    rows = {}
    for merged in (False, True):
        with started(tmp_path / str(merged), retry_min_s=0.01,
                     retry_max_s=0.02) as (journal, callbacks):
            seq = Sequencer(journal)
            if merged:
                journal._testing_fail_commits(10**6)
            events = run_events("exec_wf_0000000c")
            journal.record_submitted("exec_wf_0000000c", "wf", {"x": 1}, "bot", "s", 0, "t")
            for event in events:
                seq.emit(event)
                if not merged:
                    assert journal.flush(5)
            if merged:
                callbacks.wait_for(lambda c: len(c.errors) == 1)
                journal._testing_fail_commits(0)
            assert journal.flush(5)
            rows[merged] = journal.execution("exec_wf_0000000c")
    assert rows[True] == rows[False]
    merged_row = rows[True]
    assert merged_row is not None and merged_row["status"] == "completed"


def test_terminal_nodes_map_and_in_process_executions(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        nodes = {"price": {"status": "completed", "attempts": 1},
                 "trade": {"status": "skipped", "attempts": 0}}
        seq.emit(wf_event("execution_started", "exec_wf_00000003", inputs={"y": 2}),
                 wf_event("execution_halted", "exec_wf_00000003", status="halted",
                          results={"price": 9}, error="halted: r", error_type="Halted",
                          duration_ms=0.5, nodes=nodes))
        assert journal.flush(5)
        row = journal.execution("exec_wf_00000003")
        assert row is not None
        assert row["inputs"] == {"y": 2} and row["status"] == "halted"
        assert row["nodes"] == {"price": {"status": "completed", "attempts": 1, "outputs": 9},
                                "trade": {"status": "skipped", "attempts": 0}}
        assert row["submitted_at"] is None and row["error_type"] == "Halted"


def test_executions_lists_newest_first_with_filters(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        for i in range(6):
            workflow = "a" if i % 2 else "b"
            journal.record_submitted(f"exec_{workflow}_{i:08x}", workflow, {}, None, None, 0, None)
            if i < 4:
                seq.emit(*run_events(f"exec_{workflow}_{i:08x}", workflow))
        assert journal.flush(5)
        ids = [e["execution_id"] for e in journal.executions()]
        assert ids == [f"exec_{'a' if i % 2 else 'b'}_{i:08x}" for i in reversed(range(6))]
        assert [e["execution_id"] for e in journal.executions(workflow="a", limit=2)] == \
            ["exec_a_00000005", "exec_a_00000003"]
        assert [e["execution_id"] for e in journal.executions(status="queued")] == \
            ["exec_a_00000005", "exec_b_00000004"]
        assert set(journal.executions()[0]) >= {"execution_id", "workflow_id", "status",
                                                "started_at", "ended_at", "duration_ms"}
        with pytest.raises(ValueError):
            journal.executions(limit=0)
        with pytest.raises(TypeError):
            journal.executions(workflow=3)  # type: ignore[arg-type]


def test_intents_outcomes_and_reconciliation(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        seq.emit(sys_event("daemon_started"))
        keys = {name: f"exec_wf_0000000{i}:trade" for i, name in
                enumerate(["ok", "raised", "timeout", "cancelled"])}
        for key in keys.values():
            execution_id = key.split(":")[0]
            assert journal.record_intent(execution_id, "trade", key, 1, "t").wait(5)
        unresolved = journal.intents()
        assert [i["idempotency_key"] for i in unresolved] == list(keys.values())
        assert unresolved[0]["seq_at"] == 1 and unresolved[0]["outcome"] is None
        ids = {name: key.split(":")[0] for name, key in keys.items()}
        seq.emit(wf_event("node_completed", ids["ok"], node_id="trade", attempt=1, outputs={}),
                 wf_event("node_failed", ids["raised"], node_id="trade", attempt=1,
                          error="rejected", error_type="ValueError", final=True),
                 wf_event("node_failed", ids["timeout"], node_id="trade", attempt=1,
                          error="timed out", error_type="NodeTimeout", final=True))
        late = journal.record_intent_outcome(keys["timeout"], None,
                                             detail={"late": "late_ok", "value": {"id": 3}})
        assert late.wait(5)
        by_key = {i["idempotency_key"]: i for i in journal.intents(unresolved=False)}
        assert by_key[keys["ok"]]["outcome"] == "completed"
        assert by_key[keys["raised"]]["outcome"] == "failed"
        assert by_key[keys["raised"]]["detail"]["error_type"] == "ValueError"
        assert by_key[keys["timeout"]]["outcome"] is None
        assert by_key[keys["timeout"]]["detail"] == {"late": "late_ok", "value": {"id": 3}}
        assert {i["idempotency_key"] for i in journal.intents()} == \
            {keys["timeout"], keys["cancelled"]}
        assert journal.resolve_intent(keys["timeout"], "filled", note="seen on the exchange") \
            == {"idempotency_key": keys["timeout"], "outcome": "filled"}
        resolved = {i["idempotency_key"]: i for i in journal.intents(False)}[keys["timeout"]]
        assert (resolved["outcome"], resolved["note"]) == ("filled", "seen on the exchange")
        assert resolved["detail"] == {"late": "late_ok", "value": {"id": 3}}
        assert [i["idempotency_key"] for i in journal.intents()] == [keys["cancelled"]]
        with pytest.raises(ValueError, match="outcome"):
            journal.resolve_intent(keys["cancelled"], "maybe")
        with pytest.raises(NotFound):
            journal.resolve_intent("exec_wf_nope:trade", "filled")
        # A retried idempotent action records attempt 2: open again until it ends.
        assert journal.record_intent(ids["raised"], "trade", keys["raised"], 2, "t2").wait(5)
        again = {i["idempotency_key"]: i for i in journal.intents()}[keys["raised"]]
        assert (again["attempt"], again["outcome"]) == (2, None)
    with Journal.open(tmp_path) as reopened:
        assert {i["idempotency_key"] for i in reopened.recovery.unresolved_intents} == \
            {keys["cancelled"], keys["raised"]}


def test_snapshots_are_coalesced_and_every_ticket_completes(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    tickets = [journal.save_emergency({"state": "ALERT", "n": n}) for n in range(5)]
    tickets += [journal.save_breakers({"x": {"state": "open", "n": n}}) for n in range(3)]
    done: list[Any] = []
    tickets[0].add_done_callback(done.append)
    assert not tickets[0].wait(0.01) and not tickets[0].done
    changes = journal._writer.conn.total_changes
    Callbacks().start(journal)
    try:
        assert all(t.wait(5) for t in tickets) and done == [tickets[0]]
        assert journal._writer.conn.total_changes - changes == 2, "one write per snapshot"
        stmt = "SELECT count(*) FROM state"
        assert journal._writer.conn.execute(stmt).fetchone()[0] == 2
    finally:
        journal.close()
    late: list[Any] = []
    tickets[0].add_done_callback(late.append)  # already done: called at once
    assert late == [tickets[0]]
    with Journal.open(tmp_path) as reopened:
        assert reopened.recovery.emergency == {"state": "ALERT", "n": 4}
        assert reopened.recovery.breakers == {"x": {"state": "open", "n": 2}}


def test_recovery_continues_where_the_last_run_stopped(tmp_path: Path) -> None:
    with started(tmp_path) as (journal, _):
        seq = Sequencer(journal)
        seq.emit(*run_events("exec_a_00000001", "a"))                       # completed
        journal.record_submitted("exec_a_00000002", "a", {"q": 1}, "bot", None, 0, "t")
        seq.emit(*run_events("exec_b_00000003", "b")[:3])                   # running
        journal.record_intent("exec_b_00000003", "trade", "exec_b_00000003:trade", 1, "t")
        seq.emit(sys_event("emergency_state_changed", state="HALT", previous_state="NORMAL",
                         reason="manual halt", source="manual", origin="api"))
        journal.save_emergency({"state": "HALT", "reason": "manual halt", "limits": {}})
        journal.register_cursor("hook", 4)
        assert journal.flush(5)
        last = seq.seq
    with Journal.open(tmp_path) as journal:
        recovery = journal.recovery
        assert recovery.last_seq == last and recovery.wseq == {"a": 6, "b": 3}
        assert [(e["execution_id"], e["status"]) for e in recovery.open_executions] == \
            [("exec_a_00000002", "queued"), ("exec_b_00000003", "running")]
        assert recovery.open_executions[0]["inputs"] == {"q": 1}
        assert [i["idempotency_key"] for i in recovery.unresolved_intents] == \
            ["exec_b_00000003:trade"]
        assert recovery.emergency == {"state": "HALT", "reason": "manual halt", "limits": {}}
        assert recovery.cursors == {"hook": 4}
        assert journal.emergency_history()[0]["reason"] == "manual halt"
        callbacks = Callbacks().start(journal)
        journal.mark_interrupted(["exec_a_00000002", "exec_b_00000003", "exec_a_00000001"])
        seq = Sequencer(journal)
        assert seq.emit(sys_event("daemon_started")) == last + 1
        callbacks.wait_for(lambda c: c.commits[-1:] == [last + 1])
        statuses = {e["execution_id"]: e["status"] for e in journal.executions()}
        assert statuses == {"exec_a_00000001": "completed", "exec_a_00000002": "interrupted",
                            "exec_b_00000003": "interrupted"}
    with Journal.open(tmp_path) as journal:
        assert journal.recovery.open_executions == []
        assert journal.recovery.last_seq == last + 1


def test_mark_interrupted_before_start_is_written_at_once(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal._writer.write_now([])
        journal.record_submitted("exec_wf_00000009", "wf", {}, None, None, 0, None)
        journal._writer.write_now([])
        journal.mark_interrupted(["exec_wf_00000009"])
        row = journal.execution("exec_wf_00000009")
        assert row is not None and row["status"] == "interrupted" and row["ended_at"]
