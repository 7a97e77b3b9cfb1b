"""The journal wired into the engine (`[daemon] data_dir`): delivery only after commit,
restarts that continue seq/wseq and keep history, halts that survive a restart, the halt
reply after its commit, a failed write that halts in memory, start-up refusals, and no
files without a data_dir. Action intents: tests/test_engine_intents.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors import Config, EmergencyState, Engine, Node, Workflow
from actors.errors import JournalLocked, LimitExceeded, NoJournal, NotAJournal, TradeloomError
from actors.packing import unpack
from tests.conftest import EngineFactory, Recorder
from tests.engine_journal_helpers import (
    Action,
    Disk,
    all_events,
    captured_logs,
    eventually,
    journal_config,
    journal_of,
    raw_rows,
    trade_workflow,
)
from tests.journal_helpers import REPO

LIMITS = {"limits": [{"name": "pos", "kind": "position_size", "threshold": 100.0,
                      "auto_halt": True}]}


def failing(ctx: Any) -> None:
    raise ValueError("no liquidity")


def failing_workflow() -> Workflow:
    return Workflow("wf_b", nodes=[Node("quote", failing, category="provider")])


# -- delivery ---------------------------------------------------------------------------------

def test_subscribers_get_an_event_only_after_its_commit(make_engine: EngineFactory,
                                                        tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    journal = journal_of(engine)
    Disk(journal).slow(0.005)  # a wide window between sequencing and commit
    seen: list[tuple[int, int]] = []
    engine.subscribe(lambda e: seen.append((e["seq"], journal.last_committed_seq())))
    wf = trade_workflow("wf", Action())
    handles = [engine.submit(wf, {"n": n}) for n in range(30)]
    assert {h.result(10).status for h in handles} == {"completed"}
    assert len(seen) >= 30 * 8
    early = [(seq, committed) for seq, committed in seen if seq > committed]
    assert not early, f"delivered before their commit: {early[:5]}"
    seqs = [seq for seq, _ in seen]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_subscriber_behind_the_memory_log_reads_the_journal_without_a_gap(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path), _event_ring_size=16)
    stuck = threading.Event()
    seen: list[int] = []
    gaps: list[dict[str, Any]] = []

    def slow(event: dict[str, Any]) -> None:
        stuck.wait(10)
        seen.append(event["seq"])

    sub = engine.subscribe(slow, on_gap=gaps.append)
    handles = [engine.submit(trade_workflow("wf", Action()), {"n": n}) for n in range(20)]
    eventually(lambda: engine.status()["counts"].get("completed", 0) == 20
               and engine.status()["running"] == 0, what="all executions ended")
    assert engine.status()["last_seq"] > 16 * 4, "far more than the memory log holds"
    stuck.set()
    assert {h.result(10).status for h in handles} == {"completed"}
    assert sub.catch_up(10)
    assert gaps == []
    last = engine.status()["last_seq"]
    assert seen == list(range(1, last + 1))


# -- restarts ---------------------------------------------------------------------------------

def test_a_restart_continues_seq_and_wseq_and_keeps_the_history(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    config = journal_config(tmp_path)
    first = make_engine(config)
    wf_a = trade_workflow("wf_a", Action())
    done = [first.submit(wf_a, {"n": n}).result(5) for n in range(3)]
    failed = [first.submit(failing_workflow()).result(5) for _ in range(2)]
    assert [r.status for r in done + failed] == ["completed"] * 3 + ["failed"] * 2
    before = all_events(first)
    last_seq = first.status()["last_seq"]
    assert [e["seq"] for e in before] == list(range(1, last_seq + 1))
    last_wseq = {wf: max(e["wseq"] for e in before if e.get("workflow_id") == wf)
                 for wf in ("wf_a", "wf_b")}
    old_ids = {r.execution_id for r in done + failed}
    first.stop()

    second = make_engine(config)
    assert second.status()["last_seq"] == last_seq
    rec = Recorder().follow(second)
    again = second.submit(wf_a, {"n": 9}).result(5)
    second.submit(failing_workflow()).result(5)
    events = rec.events
    assert events[0]["seq"] == last_seq + 1
    assert [e["seq"] for e in events] == list(range(last_seq + 1, last_seq + 1 + len(events)))
    for wf in ("wf_a", "wf_b"):
        wseqs = [e["wseq"] for e in events if e.get("workflow_id") == wf]
        assert wseqs == list(range(last_wseq[wf] + 1, last_wseq[wf] + 1 + len(wseqs)))
    assert again.execution_id not in old_ids

    # What the first run completed, from the journal.
    for result in done:
        kept = second.execution(result.execution_id)
        assert kept is not None
        assert kept["status"] == "completed"
        assert kept["results"] == dict(result.results)
        assert {n: s["status"] for n, s in kept["nodes"].items()} == {
            "price": "completed", "check": "completed", "trade": "completed"}
        assert kept["nodes"]["trade"]["outputs"] == result.results["trade"]
    kept = second.execution(failed[0].execution_id)
    assert kept is not None
    assert (kept["status"], kept["error_type"]) == ("failed", "ValueError")
    assert kept["nodes"]["quote"]["status"] == "failed"
    assert second.execution("exec_wf_a_00000000") is None

    listed = second.executions()
    assert len(listed) == 7
    assert listed[1]["execution_id"] == again.execution_id, "newest first"
    assert {e["workflow_id"] for e in second.executions(workflow="wf_b")} == {"wf_b"}
    assert len(second.executions(workflow="wf_b")) == 3
    assert {e["status"] for e in second.executions(status="failed")} == {"failed"}
    assert len(second.executions(status="completed", workflow="wf_a")) == 4
    newest = second.executions(workflow="wf_a", limit=2)
    assert [e["execution_id"] for e in newest] == [
        again.execution_id, done[2].execution_id], "newest first"
    assert set(newest[0]) >= {"execution_id", "workflow_id", "status", "started_at",
                              "ended_at", "duration_ms"}


def test_replay_answers_in_the_contract_shape(make_engine: EngineFactory,
                                              tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    for n in range(3):
        engine.submit(trade_workflow("wf_a", Action()), {"n": n}).result(5)
    engine.submit(failing_workflow()).result(5)
    engine.halt("check replay")
    last = engine.status()["last_seq"]
    page = engine.replay(1, limit=5)
    assert set(page) == {"events", "next_seq", "last_seq", "first_seq"}
    assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4, 5]
    assert (page["next_seq"], page["last_seq"], page["first_seq"]) == (6, last, 1)
    event = page["events"][0]
    assert {"v", "seq", "type", "timestamp", "execution_id", "correlation_id",
            "workflow_id", "bot_id", "strategy_id", "wseq"} <= set(event)
    only_b = engine.replay(1, limit=1000, topic_prefix="workflow/wf_b/")
    assert only_b["events"] and {e["workflow_id"] for e in only_b["events"]} == {"wf_b"}
    assert only_b["next_seq"] == last + 1
    halts = engine.replay(3, topic_prefix="emergency/")["events"]
    assert [(e["type"], e["state"]) for e in halts] == [("emergency_state_changed", "HALT")]
    tail = engine.replay(last)
    assert [e["seq"] for e in tail["events"]] == [last] and tail["next_seq"] == last + 1
    assert engine.replay(last + 1)["events"] == []
    for since_seq in (2**63, 2**64):  # as the wire refuses it: SQLite's INTEGER ends there
        with pytest.raises(ValueError, match=r"since_seq must be < 2\*\*63"):
            engine.replay(since_seq)
    with pytest.raises(ValueError, match=r"limit must be < 2\*\*63"):
        engine.replay(1, limit=2**64)


def test_an_execution_id_the_journal_has_is_never_given_again(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    config = journal_config(tmp_path)
    first = make_engine(config)
    wf = trade_workflow("wf", Action())
    old = first.submit(wf).result(5).execution_id
    first.stop()
    second = make_engine(config)
    # A restart continues after the reserved block: the next id is not the old one ...
    assert second.submit(wf).result(5).execution_id != old
    # ... and where ids are checked one by one (an older journal, or 2**32 used up), an
    # id aimed at the old one is skipped.
    ids = second._ids
    ids._next, ids._checked = int(old.rsplit("_", 1)[1], 16), True
    fresh = second.submit(wf).result(5)
    assert fresh.status == "completed"
    assert fresh.execution_id != old
    kept = second.execution(old)
    assert kept is not None and kept["status"] == "completed"


# -- halts across restarts ------------------------------------------------------------------

def test_a_halted_engine_comes_back_halted_with_its_history_and_limits(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    config = journal_config(tmp_path, emergency=LIMITS)
    first = make_engine(config)
    first.risk_update("pos", 42.0)
    first.alert("wobbly feed")
    first.halt("operator says stop")
    history = first.emergency_history()
    assert [h["state"] for h in history] == ["ALERT", "HALT"]
    first.stop()

    second = make_engine(config)
    assert second.state is EmergencyState.HALT
    assert second.status()["state"] == "HALT"
    assert second.emergency_history() == history
    assert second.status()["limits"]["pos"]["value"] == 42.0
    refused = second.submit(trade_workflow("wf", Action())).result(5)
    assert (refused.status, refused.error_type) == ("refused", "Halted")
    assert second.resume("back") == {"state": "NORMAL", "previous_state": "HALT"}
    action = Action()
    assert second.submit(trade_workflow("wf", action)).result(5).status == "completed"
    assert len(action.calls) == 1
    assert [h["state"] for h in second.emergency_history()] == ["ALERT", "HALT", "NORMAL"]


def test_an_exceeded_limit_is_still_exceeded_after_a_restart(make_engine: EngineFactory,
                                                             tmp_path: Path) -> None:
    config = journal_config(tmp_path, emergency=LIMITS)
    first = make_engine(config)
    first.risk_update("pos", 150.0)
    assert first.state is EmergencyState.HALT
    first.stop()

    second = make_engine(config)
    assert second.state is EmergencyState.HALT
    assert second.gate.source == "risk_limit"
    stats = second.gate.book.stats()["pos"]
    assert (stats["value"], stats["exceeded"]) == (150.0, True)
    with pytest.raises(LimitExceeded):
        second.resume()
    second.risk_update("pos", 10.0)
    assert second.resume()["state"] == "NORMAL"
    assert second.submit(trade_workflow("wf", Action())).result(5).status == "completed"


def test_the_halt_reply_comes_after_the_halt_is_on_disk(make_engine: EngineFactory,
                                                        tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    Disk(journal_of(engine)).slow(0.2)  # without the wait, halt() would beat its commit
    assert engine.halt("now")["state"] == "HALT"
    on_disk = raw_rows(tmp_path, "SELECT state, source, reason FROM emergency_history "
                                 "ORDER BY seq DESC LIMIT 1")
    assert on_disk == [("HALT", "manual", "now")]
    halts = engine.replay(1, topic_prefix="emergency/")["events"]
    assert [e["state"] for e in halts] == ["HALT"]


def test_queries_right_after_a_halt_see_the_halted_executions(make_engine: EngineFactory,
                                                               tmp_path: Path) -> None:
    # The halt replies once its HALT is committed; the executions it ended are committed
    # just after (the writer gives way to the halt). A query waits for what came before it.
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}})
    entered = threading.Semaphore(0)

    def provider(ctx: Any) -> None:
        entered.release()
        ctx.cancelled.wait(30)

    wf = Workflow("held", nodes=[Node("price", provider, category="provider")])
    handles = [engine.submit(wf) for _ in range(100)]
    for _ in handles:
        assert entered.acquire(timeout=10)
    assert engine.halt("test")["state"] == "HALT"
    first = engine.execution(handles[0].execution_id)
    assert first is not None and first["status"] == "halted"
    halted = engine.executions(workflow="held", status="halted", limit=1000)
    assert len(halted) == len(handles)


@pytest.mark.parametrize("where", ["running", "queued"])
def test_a_cancel_replies_after_its_ending_is_on_disk(make_engine: EngineFactory,
                                                      tmp_path: Path, where: str) -> None:
    """A kill -9 right after `cancelled` was answered turned it into `interrupted`."""
    engine = make_engine(journal_config(tmp_path, daemon={"max_concurrent_executions": 1}))
    entered = threading.Event()

    def provider(ctx: Any) -> None:
        entered.set()
        ctx.cancelled.wait(30)

    wf = Workflow("held", nodes=[Node("price", provider, category="provider")])
    running = engine.submit(wf)
    assert entered.wait(10)
    target = running if where == "running" else engine.submit(wf)
    assert target.recorded is not None and target.recorded.wait(10)
    Disk(journal_of(engine)).slow(0.2)  # without the wait, the reply beats the commit
    assert engine.cancel(target.execution_id) == "cancelled"
    assert raw_rows(tmp_path, "SELECT status FROM executions WHERE execution_id = ?",
                    (target.execution_id,)) == [("cancelled",)]


def test_a_risk_update_replies_after_its_figure_is_on_disk(make_engine: EngineFactory,
                                                          tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path, emergency=LIMITS))
    disk = Disk(journal_of(engine))
    for value in (42.0, 43.5, 7.25):
        disk.slow(0.2)  # without the wait, the reply would beat the commit by 0.2 s
        assert engine.risk_update("pos", value)["value"] == value
        (saved,) = raw_rows(tmp_path, "SELECT value FROM state WHERE name = 'emergency'")
        assert unpack(saved[0])["limits"]["pos"]["value"] == value


# -- a failed write ---------------------------------------------------------------------------

def test_a_failed_write_halts_in_memory_and_delivers_nothing_uncommitted(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(journal_config(tmp_path))
    journal = journal_of(engine)
    disk = Disk(journal)
    seen: list[tuple[int, int]] = []
    rec = Recorder().follow(engine)
    sub = engine.subscribe(lambda e: seen.append((e["seq"], journal.last_committed_seq())))
    assert engine.submit(trade_workflow("wf", Action())).result(5).status == "completed"
    intent_recorded = threading.Event()
    record_intent = journal.record_intent

    def spy(*args: Any, **kwargs: Any) -> Any:
        ticket = record_intent(*args, **kwargs)
        intent_recorded.set()
        return ticket

    monkeypatch.setattr(journal, "record_intent", spy)

    def break_the_disk(ctx: Any) -> bool:
        disk.hold()  # until the action waits for its intent: then the commit fails
        journal._testing_fail_commits(10**9)
        return True

    action = Action()
    broken = engine.submit(trade_workflow("wf", action, condition=break_the_disk))
    assert intent_recorded.wait(5)
    disk.release()
    eventually(lambda: engine.state is EmergencyState.HALT, what="HALT in memory")
    status = engine.status()
    assert status["state"] == "HALT"
    assert status["journal"]["failing"] is True
    assert "injected" in status["journal"]["last_error"]
    refused = engine.submit(trade_workflow("wf", Action())).result(5)
    assert refused.status == "refused"
    committed = journal.last_committed_seq()
    assert engine.sink.log.appended_seq > committed, "the HALT event waits for the disk"
    assert status["last_seq"] == committed
    assert max(seq for seq, _ in seen) <= committed
    assert sub.next_seq <= committed + 1
    assert action.calls == [], "its intent never committed: the action must not run"
    with captured_logs() as logs:  # a query reads what is committed, without waiting
        history = engine.executions(workflow="wf", limit=10)
    statuses = [r["status"] for r in history]  # newest first; the broken one's record may
    assert statuses[-1] == "completed" and len(statuses) <= 2  # not be committed yet
    assert "halted" not in statuses  # its end is not committed: the disk is still failing
    assert not [e for e in logs if e["event"].startswith("journal_commit")], logs

    journal._testing_fail_commits(0)  # the disk is back
    changes = rec.wait_for(lambda evs: any(e["type"] == "emergency_state_changed"
                                           for e in evs))
    change = next(e for e in changes if e["type"] == "emergency_state_changed")
    assert (change["state"], change["source"], change["origin"]) == ("HALT", "journal",
                                                                     "engine")
    assert "journal write failed" in change["reason"]
    assert change["seq"] > committed
    assert engine.replay(change["seq"])["events"][0] == change
    assert broken.result(5).status == "halted"
    assert not [(s, c) for s, c in seen if s > c], "delivered before their commit"
    assert engine.status()["journal"]["failing"] is False
    assert engine.state is EmergencyState.HALT, "only an operator's resume leaves it"
    intent = next(i for i in engine.intents(unresolved=False)
                  if i["execution_id"] == broken.execution_id)
    assert intent["outcome"] == "not_started"
    assert action.calls == []
    assert engine.resume("disk replaced")["state"] == "NORMAL"
    assert engine.submit(trade_workflow("wf", Action())).result(5).status == "completed"


def test_a_resume_while_writes_still_fail_halts_again_at_the_next_failed_write(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """Found by the crash probe: resumed while the disk still failed, the engine stayed
    NORMAL (the halt came once per failure episode) and took submits it could never
    record. A retry that fails after the resume halts it again."""
    engine = make_engine(journal_config(tmp_path))
    journal = journal_of(engine)
    journal._testing_fail_commits(10**9)
    engine.submit(trade_workflow("wf", Action()))  # its records cannot be written
    eventually(lambda: engine.state is EmergencyState.HALT, what="the failure's HALT")
    assert engine.resume("operator: try again")["state"] == "NORMAL"
    eventually(lambda: engine.state is EmergencyState.HALT,
               what="HALT again at the next failed retry")
    assert engine.status()["journal"]["failing"] is True
    assert "journal write failed" in (engine.status()["reason"] or "")

    journal._testing_fail_commits(0)  # the disk is back
    eventually(lambda: not engine.status()["journal"]["failing"], what="writes recovered")
    assert engine.state is EmergencyState.HALT, "only an operator's resume leaves it"
    assert engine.resume("disk replaced")["state"] == "NORMAL"
    assert engine.submit(trade_workflow("wf", Action())).result(5).status == "completed"
    assert engine.status()["state"] == "NORMAL"


# -- start-up ---------------------------------------------------------------------------------

def test_a_second_engine_on_the_same_data_dir_is_refused_naming_the_pid(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    config = journal_config(tmp_path)
    first = make_engine(config)
    with pytest.raises(JournalLocked) as refused:
        Engine.start(Config.from_dict(config))
    assert isinstance(refused.value, TradeloomError)
    assert f"pid {os.getpid()}" in str(refused.value)
    # From another process too, and the first engine carries on.
    script = ("import sys\nfrom actors import Config, Engine\nfrom actors.errors import "
              "TradeloomError\ntry:\n    Engine.start(Config.from_dict({'daemon': "
              f"{{'data_dir': {str(tmp_path)!r}}}}}))\nexcept TradeloomError as exc:\n"
              "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.startswith("JournalLocked ") and f"pid {os.getpid()}" in out
    assert "another tradeloom process" in out
    assert len(out.strip().splitlines()) == 1
    assert first.submit(trade_workflow("wf", Action())).result(5).status == "completed"
    first.stop()
    again = make_engine(config)
    assert again.status()["last_seq"] == first.status()["last_seq"]


def test_a_journal_file_that_is_garbage_is_refused_and_left_alone(tmp_path: Path) -> None:
    garbage = bytes(range(256)) * 64
    (tmp_path / "journal.db").write_bytes(garbage)
    for _ in range(2):  # the refusal released data_dir: the second try says the same
        with pytest.raises(NotAJournal) as refused:
            Engine.start(Config.from_dict(journal_config(tmp_path)))
        message = str(refused.value)
        assert "journal.db" in message and "\n" not in message
    assert (tmp_path / "journal.db").read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.db", "journal.lock"]


def test_without_a_data_dir_the_engine_writes_no_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for config in (None, Config.from_dict({}), Config.from_dict({"journal": {"sync": "full"}})):
        engine = Engine.start(config)
        try:
            assert engine.submit(trade_workflow("wf", Action())).result(5).status == "completed"
            engine.halt("x")
            assert engine.status()["journal"] is None
            with pytest.raises(NoJournal):
                engine.replay(1)
            with pytest.raises(NoJournal):
                engine.intents()
        finally:
            engine.stop()
    assert list(tmp_path.iterdir()) == []


def test_stop_gives_subscribers_the_final_events_once_committed(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    Disk(journal_of(engine)).slow(0.01)
    rec = Recorder().follow(engine)
    action = Action(block=True)
    handle = engine.submit(trade_workflow("wf", action))
    assert action.entered.wait(5)
    engine.stop()
    action.release.set()
    assert handle.result(1).status == "cancelled"
    given = rec.wait_for(bool, timeout=1.0)  # closed: no catching up
    assert given[-1]["type"] == "execution_cancelled", "stop() delivers the final events"
    kept = make_engine(journal_config(tmp_path)).execution(handle.execution_id)
    assert kept is not None and kept["status"] == "cancelled"


def test_stop_and_restart_is_quick_and_loses_nothing(make_engine: EngineFactory,
                                                    tmp_path: Path) -> None:
    config = journal_config(tmp_path)
    ids: list[str] = []
    for _ in range(3):
        engine = make_engine(config)
        started = time.monotonic()
        handles = [engine.submit(trade_workflow("wf", Action()), {"n": n}) for n in range(20)]
        ids += [h.execution_id for h in handles]
        engine.stop()
        assert time.monotonic() - started < 10
    last = make_engine(config)
    statuses = {last.execution(i)["status"] for i in ids}  # type: ignore[index]
    assert statuses <= {"completed", "cancelled"}
    events = all_events(last)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_reader_behind_the_ring_takes_one_journal_read_of_bytes_per_call(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader behind the in-memory ring (a web client replaying) gets the journal's own
    dicts: a read of 500 events of 100 KB held 50 MB for a client that kept none of them
    (a filtered one). Now one call takes one journal read, at most its reply bytes."""
    monkeypatch.setattr("actors.journal_reads.MAX_REPLY_BYTES", 300_000)
    engine = make_engine(journal_config(tmp_path), _event_ring_size=8)
    for _ in range(4):
        engine.sink.emit([{"v": 1, "type": "circuit_closed", "breaker": "b" * 100_000,
                           "failures": 0} for _ in range(15)])
    assert engine.journal_flush(10.0)
    last = engine.sink.log.committed_seq
    reader = engine.sink.log.reader(1)
    try:
        seqs: list[int] = []
        biggest = 0
        while not seqs or seqs[-1] < last:
            events = reader.read(seqs[-1] + 1 if seqs else 1, 500)
            assert events
            # (the ring's last 8 are its own dicts, shared: they cost nothing to hold)
            biggest = max(biggest, sum(event["seq"] <= last - 8 for event in events))
            seqs += [event["seq"] for event in events]
        assert seqs == list(range(1, last + 1)) and reader.missed == 0
        assert 1 <= biggest <= 3, f"{biggest} events of 100 KB in one call"
    finally:
        reader.close()


def test_a_node_changing_the_working_directory_leaves_a_relative_data_dir_alone(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative data_dir (the default `.tradeloom`) was looked up again against the
    working directory of the moment: a node's os.chdir() made the writer see its journal
    as removed (a HALT) and every history read fail."""
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    engine = make_engine(journal_config(Path("rel-data")))

    def wander(ctx: Any) -> int:
        os.chdir(elsewhere)
        return 1

    wf = Workflow("wander", nodes=[Node("a", wander)])
    first = engine.submit(wf).result(10)
    assert Path.cwd() == elsewhere
    later = [engine.submit(wf).result(10) for _ in range(3)]
    assert {r.status for r in [first, *later]} == {"completed"}
    assert engine.state is EmergencyState.NORMAL
    assert not engine.status()["journal"]["failing"]
    shown = engine.execution(first.execution_id)  # a reader's connection, made now
    assert shown is not None and shown["status"] == "completed"
    assert (tmp_path / "rel-data" / "journal.db").is_file()
    assert not (elsewhere / "rel-data").exists()
