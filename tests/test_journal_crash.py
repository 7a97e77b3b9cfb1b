"""Crash: a child appends events and records under load and is SIGKILLed at random
points; after each kill the journal reopens with every seq on_commit reported, seqs
gapless from 1, every completed ticket's record present, wseq and emergency state
continuing. The next child continues the same data_dir."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from actors.journal import Journal
from tests.journal_helpers import Child, all_events, assert_gapless


def crash_and_check(data_dir: Path, rng: random.Random, previous_last: int) -> int:
    child = Child("load", str(data_dir))
    try:
        child.wait_for(lambda _: child.counts["R"] > 0)
        assert child.tagged("R") == [str(previous_last)], "seq continues across restarts"
        # Kill after a random number of commits (a random point in the stream).
        commits = rng.randint(3, 25)
        child.wait_for(lambda _: child.counts["C"] >= commits)
    finally:
        child.kill()
    reported = [int(s) for s in child.tagged("C")]
    assert reported and reported == sorted(reported) and reported[0] > previous_last
    assert child.tagged("S") and child.tagged("I"), "tickets completed before the kill"
    with Journal.open(data_dir, keep_events=None) as journal:
        last = journal.recovery.last_seq
        assert last >= reported[-1], f"reported {reported[-1]} but the journal ends at {last}"
        events = all_events(journal)
        assert_gapless(events, 1, last)
        for execution_id in child.tagged("S"):
            assert journal.has_execution(execution_id), execution_id
        committed_keys = {i["idempotency_key"] for i in journal.intents(unresolved=False)}
        assert set(child.tagged("I")) <= committed_keys
        saved = child.tagged("M")
        if saved:
            emergency = journal.recovery.emergency
            assert emergency is not None and emergency["n"] >= int(saved[-1])
        wseq = [e["wseq"] for e in events if e.get("workflow_id") == "wf"]
        assert wseq == list(range(1, len(wseq) + 1))
        assert journal.recovery.wseq.get("wf", 0) == len(wseq)
        started = {e["execution_id"] for e in events if e["type"] == "execution_started"}
        ended = {e["execution_id"] for e in events if e["type"] == "execution_completed"}
        open_ids = {e["execution_id"] for e in journal.recovery.open_executions}
        assert open_ids == {e["execution_id"] for e in journal.executions(limit=10**6)
                            if e["status"] in ("queued", "running")}
        assert (started - ended) <= open_ids, "what was running is found open"
        journal.mark_interrupted(open_ids)  # as the engine's recovery would
    return last


def run_kills(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    last = 0
    for _ in range(kills):
        last = crash_and_check(tmp_path, rng, last)


def test_sigkill_at_random_points_loses_nothing_reported(tmp_path: Path) -> None:
    run_kills(tmp_path, 3, seed=random.randrange(2**32))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_loop(tmp_path: Path) -> None:
    run_kills(tmp_path, 30, seed=random.randrange(2**32))
