"""Group commit's bookkeeping: however the same queue is cut into commits (one each, all
in one, or failed commits merged with later ones before a retry), the execution rows
come out the same. Property-tested over interleavings and cut points."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.journal import Journal
from actors.journal_records import Submitted
from tests.journal_helpers import run_events, started

EXECUTIONS = ("exec_wf_0000000a", "exec_wf_0000000b")


@st.composite
def queues(draw: st.DrawFn) -> tuple[list[Any], list[int]]:
    """Two executions' events interleaved, each with its record_submitted somewhere (even
    late), cut into commits at random points."""
    streams: list[list[Any]] = []
    for execution_id in EXECUTIONS:
        status = draw(st.sampled_from(["completed", "failed"]))
        events: list[Any] = [[e] for e in run_events(execution_id, status=status)]
        events = events[:draw(st.integers(1, len(events)))]  # maybe still running
        submitted = Submitted(execution_id=execution_id, workflow_id="wf",
                              inputs={"from": "record"}, bot_id="rec_bot",
                              strategy_id=None, priority=7, submitted_at="t0")
        events.insert(draw(st.integers(0, len(events))), submitted)
        streams.append(events)
    items: list[Any] = []
    while any(streams):
        stream = draw(st.sampled_from([s for s in streams if s]))
        items.append(stream.pop(0))
    seq = 0
    for item in items:
        if isinstance(item, list):
            seq += 1
            item[0] = {**item[0], "seq": seq, "timestamp": f"t{seq}"}
    cuts = sorted(draw(st.sets(st.integers(1, len(items) - 1), max_size=len(items))))
    return items, cuts


def chunks(items: list[Any], cuts: list[int]) -> list[list[Any]]:
    bounds = [0, *cuts, len(items)]
    return [items[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def rows_after(data_dir: Path, items: list[Any], cuts: list[int], how: str
               ) -> list[dict[str, Any] | None]:
    with Journal.open(data_dir) as journal:
        writer = journal._writer
        if how == "one_commit":
            writer.queue.extend(items)
            writer._take()
            assert writer._commit_pending()
        else:
            for chunk in chunks(items, cuts):
                writer.queue.extend(chunk)
                writer._take()  # "merged": a failed commit's group absorbing later ones
                if how == "commit_each":
                    assert writer._commit_pending()
            if how == "merged":
                assert writer._commit_pending()
        return [journal.execution(execution_id) for execution_id in EXECUTIONS]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queue=queues())
def test_however_commits_are_cut_the_rows_agree(tmp_path: Path,
                                                queue: tuple[list[Any], list[int]]) -> None:
    items, cuts = queue
    base = tmp_path / os.urandom(6).hex()
    results = {how: rows_after(base / how, items, cuts, how)
               for how in ("commit_each", "one_commit", "merged")}
    assert results["one_commit"] == results["commit_each"]
    assert results["merged"] == results["commit_each"]
    for row in results["commit_each"]:
        assert row is not None
        assert row["priority"] == 7 and row["submitted_at"] == "t0"
        assert row["status"] in ("queued", "running", "completed", "failed")


def _state_change(seq: int) -> list[dict[str, Any]]:
    return [{"v": 1, "type": "emergency_state_changed", "seq": seq, "timestamp": f"t{seq}",
             "state": "HALT", "previous_state": "NORMAL", "reason": "r", "source": "manual",
             "origin": "api"}]


def _batch(first: int, count: int) -> list[dict[str, Any]]:
    return [{"v": 1, "type": "heartbeat_like", "seq": s, "timestamp": f"t{s}"}
            for s in range(first, first + count)]


def test_a_state_change_ends_its_commit_group_and_groups_are_bounded(tmp_path: Path) -> None:
    """A halt's reply waits for its own event's commit: the group that holds it must not
    also hold the thousands of events the halt itself queued behind it."""
    with Journal.open(tmp_path / "data", keep_events=None) as journal:
        writer = journal._writer
        behind = _batch(3, 5)
        writer.queue.extend([_batch(1, 1), _state_change(2), behind])
        writer._take()
        assert writer.pending is not None and writer.pending.last_seq == 2
        assert list(writer.queue) == [behind]
        assert writer._commit_pending()
        big = [_batch(8 + i * 1500, 1500) for i in range(3)]
        writer.queue.extend(big)
        writer._take()  # it stops taking once GROUP_EVENTS_MAX (2,048) events are in
        assert writer.pending is not None and writer.pending.last_seq == 8 + 3000 - 1
        assert list(writer.queue) == big[2:]


def test_what_a_state_change_left_queued_is_committed_without_another_append(
        tmp_path: Path) -> None:
    with started(tmp_path / "data", keep_events=None) as (journal, callbacks):
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            held.set()
            release.wait(10)

        journal._testing_before_commit(hold)
        journal.append(_batch(1, 1))
        assert held.wait(10)  # the writer is inside the first commit
        journal._testing_before_commit(None)
        journal.append(_state_change(2))
        journal.append(_batch(3, 5))  # queued behind the state change: its own group
        release.set()
        callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] == 7, timeout=5.0)
        assert 2 in callbacks.commits
