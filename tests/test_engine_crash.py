"""Crash and full-disk tests of a whole engine in a child process (tests/engine_crash_child.py).

Each round a child recovers the data_dir, runs a load (submits one by one and in bursts,
a risk feed, sometimes a halt), and is SIGKILLed at a random point of its event stream.
The parent then reads the journal directly and checks what the child was told: every seq
its subscriber saw is there, seqs have no gaps, every execution id it got is recorded,
completed executions keep their results, no action ran twice for one idempotency key
(the side file the action appends to) and none ran before its intent was durable, a halt
it was told of is on disk, limit values are intact. The next child's recovery must end
what was left open as `interrupted` (with its events), never re-run an action, come back
halted if it was. A last in-process engine does a final recovery.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from actors import Config, EmergencyState, Engine
from actors.engine_journal import WRITE_FAILED_HALT_REASON
from actors.journal import Journal
from actors.journal_failure_mark import MARK_NAME
from tests.engine_crash_child import make_workflow
from tests.engine_journal_helpers import eventually
from tests.journal_helpers import Child, all_events, assert_gapless

CHILD = "tests.engine_crash_child"
WORKFLOW = "crash_wf"


class CrashRuns:
    """What the journal held after the last kill, for the next round to check against."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.side_file = data_dir / "actions.txt"
        self.last_seq = 0
        self.last_wseq = 0
        self.state = "NORMAL"
        self.pos = 0.0
        self.open: dict[str, str] = {}
        self.unresolved: set[str] = set()
        self.completed: dict[str, Any] = {}
        self.halts = 0

    def round(self, rng: random.Random, number: int, *, halt: bool = False,
              at_start: bool = False) -> None:
        """One child, killed at a random point of its event stream (`at_start`: of its
        recovery, which ends what the last child left open one by one)."""
        halt_after = rng.randint(30, 2500) if halt else 0
        kill_at = rng.randint(30, 2500) if not halt else 10**9  # a halt: right after it
        child = Child("load", str(self.data_dir), str(self.side_file), str(number),
                      str(halt_after), module=CHILD)
        try:
            if at_start:  # between the commits of its recovery (or right after it)
                commits = rng.randint(0, 2)
                child.wait_for(lambda _: child.counts["B"] > 0 and (
                    child.counts["C"] >= commits or child.counts["R"] > 0))
            else:
                child.wait_for(lambda _: child.counts["R"] > 0)
                self.check_start(child)
                child.wait_for(lambda _: child.counts["Q"] >= kill_at
                               or child.counts["H"] > 0)
        finally:
            child.kill()
        self.check_journal(child, recovered=child.counts["R"] > 0)

    def check_start(self, child: Child) -> None:
        """The child's recovery found what the journal held after the last kill."""
        last_seq, state, pos = child.tagged("R")[0].split()
        assert int(last_seq) == self.last_seq
        assert state == self.state, "a halted journal comes back halted"
        assert float(pos) == self.pos, "limit values are restored"
        assert dict(line.split() for line in child.tagged("O")) == self.open
        assert set(child.tagged("U")) == self.unresolved
        if state == "HALT":
            child.wait_for(lambda _: child.counts["Z"] > 0)
            assert child.tagged("Z") == ["refused"], "submit refused in HALT"

    def check_journal(self, child: Child, *, recovered: bool = True) -> None:
        with Journal.open(self.data_dir, keep_events=None) as journal:
            last = journal.recovery.last_seq
            events = all_events(journal, self.last_seq + 1)
            assert_gapless(events, self.last_seq + 1, last)
            seen = [int(seq) for seq in child.tagged("Q")]
            assert seen == sorted(seen) and (not seen or seen[-1] <= last), \
                "every seq the subscriber saw is in the journal"
            wseqs = [e["wseq"] for e in events if e.get("workflow_id") == WORKFLOW]
            assert wseqs == list(range(self.last_wseq + 1, self.last_wseq + 1 + len(wseqs)))
            self.check_recovered(journal, events, complete=recovered)
            for execution_id in child.tagged("X"):
                assert journal.has_execution(execution_id), execution_id
            for line in child.tagged("D"):
                execution_id, results = line.split(" ", 1)
                self.completed[execution_id] = json.loads(results)
                kept = journal.execution(execution_id)
                assert kept is not None and kept["status"] == "completed"
                assert kept["results"] == self.completed[execution_id]
            self.check_actions(journal)
            emergency = journal.recovery.emergency
            assert emergency is not None
            if child.tagged("H"):
                self.halts += 1
                assert emergency["state"] == "HALT", "a halt the child was told of is on disk"
                assert journal.emergency_history(1)[0]["state"] == "HALT"
            pos = emergency["limits"]["pos"]["value"]
            told = [float(v) for v in child.tagged("L")]
            assert pos >= max(told, default=self.pos), "a risk update it was told of is kept"
            self.state, self.pos = emergency["state"], pos
            self.open = {e["execution_id"]: e["status"] for e in journal.recovery.open_executions}
            self.unresolved = {i["idempotency_key"]
                               for i in journal.recovery.unresolved_intents}
            self.last_seq = last
            self.last_wseq = wseqs[-1] if wseqs else self.last_wseq

    def check_recovered(self, journal: Journal, events: list[dict[str, Any]], *,
                        complete: bool) -> None:
        """What the last child left open was ended `interrupted` by this child's start
        (`complete`: its start finished; else a kill may have cut its recovery short)."""
        by_execution: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            if event.get("execution_id") in self.open:
                by_execution.setdefault(event["execution_id"], []).append(event)
        for execution_id, status in self.open.items():
            record = journal.execution(execution_id)
            assert record is not None, execution_id
            published = by_execution.get(execution_id, [])
            if not complete and record["status"] == status and not published:
                continue  # not reached before the kill: the next start ends it
            assert record["status"] == "interrupted", (execution_id, record["status"])
            expected = (["execution_started", "execution_failed"] if status == "queued"
                        else ["execution_failed"])
            assert [e["type"] for e in published] == expected, (execution_id, status)
            ending = published[-1]
            assert (ending["status"], ending["error_type"]) == ("interrupted", "Interrupted")

    def check_actions(self, journal: Journal) -> None:
        """Each action ran at most once, and only once its intent was durable."""
        data = self.side_file.read_bytes() if self.side_file.exists() else b""
        whole, newline, cut = data.rpartition(b"\n")
        ran = Counter((whole + newline).decode().splitlines())
        twice = {key: n for key, n in ran.items() if n > 1}
        assert not twice, f"actions run more than once: {twice}"
        intents = {i["idempotency_key"]: i for i in journal.intents(unresolved=False)}
        assert set(ran) <= set(intents), "an action ran without a durable intent"
        if cut:  # the kill cut an action's line short: it ran too; the next run appends
            assert any(key.startswith(cut.decode()) for key in intents), cut
            os.truncate(self.side_file, len(data) - len(cut))
        still_open = {i["idempotency_key"] for i in journal.intents(unresolved=True)}
        assert self.unresolved <= still_open, "intents left open stay open for an operator"

    def final_recovery(self) -> None:
        """An in-process engine on the data_dir: the last child's leftovers end
        interrupted, published; a halt and the limit values are back."""
        before = self.side_file.read_bytes() if self.side_file.exists() else b""
        config = Config.from_dict({
            "daemon": {"data_dir": str(self.data_dir)},
            "emergency": {"limits": [{"name": "pos", "kind": "custom", "threshold": 1e15}]}})
        engine = Engine.start(config)
        try:
            assert engine.state.value == self.state
            assert engine.status()["limits"]["pos"]["value"] == self.pos
            if self.state == "HALT":
                assert engine.submit(make_workflow(None)).result(5).status == "refused"
            events = engine.replay(self.last_seq + 1, limit=10_000)["events"]
            ended = {e["execution_id"]: e for e in events if e["type"] == "execution_failed"}
            for execution_id in self.open:
                assert ended[execution_id]["error_type"] == "Interrupted"
                record = engine.execution(execution_id)
                assert record is not None and record["status"] == "interrupted"
            for execution_id, results in self.completed.items():
                record = engine.execution(execution_id)
                assert record is not None and record["results"] == results
            assert engine.executions(status="running") == []
            assert engine.executions(status="queued") == []
        finally:
            engine.stop()
        after = self.side_file.read_bytes() if self.side_file.exists() else b""
        assert after == before, "recovery never runs an action"


def run_kills(data_dir: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    runs = CrashRuns(data_dir)
    special = rng.sample(range(1, kills), max(2, 2 * kills // 5))
    halt_rounds = set(special[::2])  # the first round recovers nothing: never at_start
    start_rounds = set(special[1::2])
    for number in range(kills):
        try:
            runs.round(rng, number + 1, halt=number in halt_rounds,
                       at_start=number in start_rounds)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, round {number + 1}: {exc}") from exc
    runs.final_recovery()
    assert runs.completed, "some executions completed before the kills"
    assert runs.halts == len(halt_rounds)


def test_sigkill_of_an_engine_under_load_loses_nothing_it_told(tmp_path: Path) -> None:
    run_kills(tmp_path, 4, seed=random.randrange(2**32))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_loop(tmp_path: Path) -> None:
    run_kills(tmp_path, 30, seed=random.randrange(2**32))


def test_a_full_disk_halts_the_engine_delivers_nothing_uncommitted_and_stays_halted(
        tmp_path: Path) -> None:
    """The HALT a failed write caused never reached the disk: the process is killed while
    the writes still fail, and the next start comes back in HALT all the same, until an
    operator resumes."""
    child = Child("fsize", str(tmp_path), module=CHILD)
    try:
        child.wait_for(lambda _: child.counts["DONE"] > 0, timeout=30)
    finally:
        child.kill()
    failures, state = child.tagged("F")[0].split()
    assert (state, int(failures) >= 1) == ("HALT", True), "halted in memory on the failed write"
    seen = [int(seq) for seq in child.tagged("Q")]
    with Journal.open(tmp_path, keep_events=None) as journal:
        last = journal.recovery.last_seq
        assert_gapless(all_events(journal), 1, last)
        assert seen and seen == sorted(seen) and seen[-1] <= last, \
            "nothing uncommitted reached the subscriber"
        for execution_id in child.tagged("X"):
            assert journal.has_execution(execution_id)
    mark = tmp_path / MARK_NAME
    assert "disk I/O error" in mark.read_text(), "the writer marked data_dir as it failed"
    config = Config.from_dict({"daemon": {"data_dir": str(tmp_path)}})
    engine = Engine.start(config)
    try:
        assert engine.status()["last_seq"] >= last
        assert engine.executions(status="running") == []
        status = engine.status()
        assert status["state"] == "HALT", status
        assert status["reason"].startswith(WRITE_FAILED_HALT_REASON + ": "), status
        assert "disk I/O error" in status["reason"]
        changed = [e for e in engine.replay(last + 1)["events"]
                   if e["type"] == "emergency_state_changed"]
        assert [(e["state"], e["source"], e["origin"]) for e in changed] == [
            ("HALT", "journal", "engine")]
        eventually(lambda: not mark.exists(), what="the mark gone once the HALT is written")
        refused = engine.submit(make_workflow(None)).result(timeout=10)
        assert (refused.status, refused.error_type) == ("refused", "Halted"), refused
        engine.resume(reason="disk checked")
        assert engine.state is EmergencyState.NORMAL
    finally:
        engine.stop()
    engine = Engine.start(config)
    try:
        assert engine.state is EmergencyState.NORMAL and not mark.exists()
    finally:
        engine.stop()
