"""`Journal.execution(id, node_ids)` of an execution whose terminal event carries no node
map (one the daemon died under): its map is rebuilt from its events, and the workflow's
nodes those never named are added (`skipped` once it is interrupted, `pending` while it
runs), but only while every one of its events is still kept: after retention took the
early ones, a node that ran would read as one that never started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.journal_helpers import Sequencer, run_events, started, sys_event, wf_event

EXECUTION = "exec_wf_0000000a"
NODES = ["price", "trade", "report"]


def node_ids(workflow_id: str) -> list[str] | None:
    return NODES if workflow_id == "wf" else None


def statuses(found: dict[str, Any] | None) -> dict[str, tuple[str, int]]:
    assert found is not None
    return {node: (entry["status"], entry["attempts"]) for node, entry in found["nodes"].items()}


def test_nodes_are_filled_while_every_event_of_the_execution_is_kept(
        tmp_path: Path) -> None:
    with started(tmp_path) as (journal, callbacks):
        seq = Sequencer(journal)

        def committed(last: int) -> None:
            callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] >= last)

        journal.record_submitted(EXECUTION, "wf", {}, None, None, 0, "t")
        committed(seq.emit(*run_events(EXECUTION)[:4]))  # price done, trade running
        running = journal.execution(EXECUTION, node_ids)
        assert statuses(running) == {"price": ("completed", 1), "trade": ("running", 1),
                                     "report": ("pending", 0)}
        assert statuses(journal.execution(EXECUTION)) == {  # no workflow known: as read
            "price": ("completed", 1), "trade": ("running", 1)}

        journal.mark_interrupted([EXECUTION])  # the next start, after a kill
        committed(seq.emit(interrupted()))
        assert statuses(journal.execution(EXECUTION, node_ids)) == {
            "price": ("completed", 1), "trade": ("cancelled", 1), "report": ("skipped", 0)}
        assert statuses(journal.execution(EXECUTION, lambda wf: ["price", "other"])) == {
            "price": ("completed", 1), "trade": ("cancelled", 1)}  # redefined: no guess


def test_nodes_are_not_filled_once_retention_took_the_early_events(tmp_path: Path) -> None:
    with started(tmp_path, keep_events=5) as (journal, callbacks):
        seq = Sequencer(journal)

        def committed(last: int) -> None:
            callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] >= last)

        journal.record_submitted(EXECUTION, "wf", {}, None, None, 0, "t")
        committed(seq.emit(*run_events(EXECUTION)[:4]))  # price done, trade running
        committed(seq.emit(*(sys_event("daemon_started", version="t") for _ in range(10))))
        assert journal.prune()
        assert journal.first_seq() > 4  # the execution's events are gone, not its row
        journal.mark_interrupted([EXECUTION])
        committed(seq.emit(interrupted()))
        found = journal.execution(EXECUTION, node_ids)
        assert found is not None and found["status"] == "interrupted"
        assert found["nodes"] == {}, "price completed: it must not read as skipped"


def interrupted() -> dict[str, Any]:
    return wf_event("execution_failed", EXECUTION, status="interrupted", error="interrupted",
                    error_type="Interrupted", results={}, duration_ms=1.0)


def test_a_refused_execution_has_no_nodes(tmp_path: Path) -> None:
    """Never admitted: no events, and no node to show. (Its record's ticket, which no one
    in the engine waits for, is finished like any other's.)"""
    with started(tmp_path) as (journal, _callbacks):
        Sequencer(journal).emit(sys_event("daemon_started", version="t"))  # (as a daemon)
        ticket = journal.record_submitted(EXECUTION, "wf", {}, None, None, 0, "t",
                                          refused=("the engine is in HALT", "Halted"))
        assert ticket.wait(10), "a refused record's ticket ends once it is written"
        found = journal.execution(EXECUTION, node_ids)
        assert found is not None and (found["status"], found["nodes"]) == ("refused", {})


def test_recovery_reads_the_node_states_of_the_open_executions_whose_events_are_all_kept(
        tmp_path: Path) -> None:
    """`open_node_states` (what recovery puts in the interrupted endings), one pass: an
    execution whose `execution_started` retention took is left out, not guessed."""
    other = "exec_wf_0000000b"
    with started(tmp_path, keep_events=8) as (journal, callbacks):
        seq = Sequencer(journal)

        def committed(last: int) -> None:
            callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] >= last)

        committed(seq.emit(*run_events(other)[:2]))  # seqs 1-2: pruned below
        committed(seq.emit(*(sys_event("daemon_started", version="t") for _ in range(6))))
        committed(seq.emit(*run_events(EXECUTION)[:4]))  # price done, trade running
        assert journal.prune()
        assert journal.first_seq() > 2
        states = journal.open_node_states({EXECUTION: 9, other: 1})
    assert list(states) == [EXECUTION]
    assert statuses({"nodes": states[EXECUTION]}) == {"price": ("completed", 1),
                                                      "trade": ("running", 1)}
    assert states[EXECUTION]["price"]["outputs"] == {"price": 1.5}


def test_a_stored_interrupted_map_gets_the_nodes_of_a_workflow_registered_later(
        tmp_path: Path) -> None:
    """Recovery writes an interrupted execution's map from all its events, with only the
    nodes that had any when the engine did not know the workflow yet (registered after
    the start, in-process): the read adds the others as `skipped`, in the workflow's
    order. Other endings' maps are the engine's own, complete: left as they are."""
    with started(tmp_path) as (journal, callbacks):
        seq = Sequencer(journal)
        journal.record_submitted(EXECUTION, "wf", {}, None, None, 0, "t")
        seq.emit(*run_events(EXECUTION)[:3])  # price done
        journal.mark_interrupted([EXECUTION])
        ending = interrupted()
        ending.update(results={"price": {"price": 1.5}},
                      nodes={"price": {"status": "completed", "attempts": 1}})
        last = seq.emit(ending)
        callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] >= last)
        found = journal.execution(EXECUTION, node_ids)
        assert found is not None
        assert list(found["nodes"]) == NODES
        assert statuses(found) == {"price": ("completed", 1), "trade": ("skipped", 0),
                                   "report": ("skipped", 0)}
        assert found["nodes"]["price"]["outputs"] == {"price": 1.5}
        assert statuses(journal.execution(EXECUTION)) == {"price": ("completed", 1)}

        done = "exec_wf_0000000c"  # completed, under a definition since grown a node
        journal.record_submitted(done, "wf", {}, None, None, 0, "t")
        events = run_events(done)
        events[-1]["nodes"] = {"price": {"status": "completed", "attempts": 1},
                               "trade": {"status": "completed", "attempts": 1}}
        last = seq.emit(*events)
        callbacks.wait_for(lambda c: bool(c.commits) and c.commits[-1] >= last)
        assert list(statuses(journal.execution(done, node_ids))) == ["price", "trade"]
