"""The engine's side of the journal: what it records, what it recovers, what it asks.

On when `[daemon] data_dir` is set. `Durable.open` opens the journal before any actor
starts; `attach` makes it the ordered log's store (an event reaches readers once it is
committed) and the kill switch's memory (its snapshot is queued *before* each state
change's event, so a committed HALT is never followed by a restart that is not halted);
`recover` ends what the last process left open, before anything runs:

- executions the journal had as queued or running end `interrupted`: a queued one gets
  its `execution_started` first, then each gets `execution_failed` with
  `status: "interrupted"`, `error_type: "Interrupted"`;
- action intents with no outcome are logged one by one with their idempotency key and are
  never re-run; with `[journal] halt_on_unresolved_intents` the engine starts in HALT.

Actions: an action's intent is committed before its function is called (`before_action`,
called by the gate before admission, so `halt()` never waits on the disk for it); an
action still waiting for that commit when HALT arrives, or whose execution ended, does not
start. The late result of a timed-out or cancelled action is recorded against its intent,
which stays open for an operator.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from actors.config import Config
from actors.emergency import HISTORY_LEN
from actors.ending import Ending, ExecutionStatus
from actors.events import Event, EventSink, iso_utc
from actors.journal import RESOLUTIONS, Journal, Recovery, Ticket
from actors.journal_reads import close_nodes, with_unstarted
from actors.journal_records import NOT_STARTED
from actors.logs import get_logger

if TYPE_CHECKING:
    from actors.breaker import BreakerRegistry
    from actors.emergency import EmergencyGate
    from actors.machine import Execution, NodeRun

log = get_logger("tradeloom.journal")

#: How often an action waiting for its intent commit looks at HALT and its execution.
INTENT_POLL_S = 0.01
#: How long a state change's reply waits for its commit (then it answers anyway: the
#: state is in force in memory; a failing journal has already halted the engine).
COMMIT_WAIT_S = 5.0
#: How often that wait looks whether writes are failing (then it answers at once).
COMMIT_POLL_S = 0.05


class Durable:
    def __init__(self, journal: Journal, config: Config) -> None:
        self.journal = journal
        self._config = config
        self._clock_time: Callable[[], float] = time.time

    @classmethod
    def open(cls, config: Config, clock: Any) -> Durable | None:
        data_dir = config.daemon.journal_dir
        if data_dir is None:
            return None
        durable = cls(Journal.from_config(data_dir, config.journal, clock=clock), config)
        durable._clock_time = clock.time
        return durable

    @property
    def recovery(self) -> Recovery:
        return self.journal.recovery

    def attach(self, *, sink: EventSink, gate: EmergencyGate, breakers: BreakerRegistry,
               on_failure: Callable[[BaseException], None],
               on_recovered: Callable[[], None],
               on_still_failing: Callable[[BaseException], None] | None = None) -> None:
        """Restore what the journal kept and start writing. Call before any actor runs."""
        rec = self.journal.recovery
        if rec.emergency is not None:
            gate.restore({**rec.emergency, "history": self.journal.emergency_history(
                HISTORY_LEN)[::-1]})
        if rec.breakers:
            breakers.restore(rec.breakers)
        gate.persist = lambda: self.journal.save_emergency(gate.snapshot(history=False))
        gate.intents = self
        breakers.on_change = lambda: self.journal.save_breakers(breakers.snapshot())
        sink.log.attach_store(self.journal)
        self.journal.start(on_commit=sink.log.mark_committed, on_error=on_failure,
                           on_still_failing=on_still_failing,
                           on_recovered_write=on_recovered, give_way=gate.priority.give_way,
                           stop_giving_way=gate.priority.stop_giving_way,
                           on_packed=sink.log.wire.keep)

    def recover(self, sink: EventSink, node_ids: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Publish the endings of what the last process left open; returns the unresolved
        intents (already logged). `node_ids`: workflow_id -> its node ids, of the
        workflows this engine has: an ending carries every node, as a halt's would."""
        interrupted = Ending.interrupted()
        now = self._clock_time()
        records = self.recovery.open_executions
        open_actions = _open_actions(self.recovery.unresolved_intents)
        seen = self.journal.open_node_states(
            {r["execution_id"]: r["started_seq"] for r in records
             if r["status"] == ExecutionStatus.RUNNING and r["started_seq"] is not None})
        for record in records:
            execution_id, workflow_id = record["execution_id"], record["workflow_id"]
            head: Event = {"v": 1, "execution_id": execution_id,
                           "correlation_id": execution_id, "workflow_id": workflow_id,
                           "bot_id": record["bot_id"], "strategy_id": record["strategy_id"]}
            events: list[Event] = []
            nodes: dict[str, dict[str, Any]] | None = None
            if record["status"] == ExecutionStatus.QUEUED:
                started: Event = {**head, "type": "execution_started",
                                  "node_count": len(node_ids.get(workflow_id, ())),
                                  "inputs": record["inputs"], "priority": record["priority"]}
                if isinstance(record["inputs"], str):  # (inputs are a map) stored as the
                    started["omitted"] = ["inputs"]  # journal's note: over max_event_bytes
                events.append(started)
                nodes = {}
            elif execution_id in seen or record["started_seq"] is None:
                nodes = seen.get(execution_id, {})
            if nodes is not None:
                _with_open_actions(nodes, open_actions.get(execution_id, {}))
            ending: Event = {**head, "type": interrupted.terminal_event,
                             "status": interrupted.status.value, "error": interrupted.error,
                             "error_type": interrupted.error_type, "results": {},
                             "duration_ms": _ms_since(record["started_at"], now)}
            if nodes is not None:  # else its early events are gone: no map rather than a guess
                ending["results"], ending["nodes"] = _ended_nodes(
                    nodes, node_ids.get(workflow_id))
            events.append(ending)
            sink.emit(events)
            log.warning("execution_interrupted", execution_id=execution_id,
                        workflow_id=workflow_id, was=record["status"])
        intents = self.recovery.unresolved_intents
        for intent in intents:
            log.warning("unresolved_action_intent", idempotency_key=intent["idempotency_key"],
                        execution_id=intent["execution_id"], node_id=intent["node_id"],
                        attempt=intent["attempt"], started_at=intent["started_at"],
                        detail=intent["detail"])
        return intents

    # -- records ---------------------------------------------------------------------------

    def record_submitted(self, exe: Execution) -> Ticket:
        return self.journal.record_submitted(
            exe.id, exe.workflow.id, exe.shown_inputs, exe.bot_id, exe.strategy_id, exe.priority,
            iso_utc(self._clock_time()))

    def record_refused(self, execution_id: str, workflow_id: str, inputs: Mapping[str, Any],
                       bot_id: str | None, strategy_id: str | None, priority: int,
                       error: str, error_type: str) -> None:
        """A submit refused at the door (HALT, a full queue): `execution(id)` and
        `executions(status="refused")` show it. Nobody waits for it."""
        self.journal.record_submitted(execution_id, workflow_id, inputs, bot_id, strategy_id,
                                      priority, iso_utc(self._clock_time()),
                                      refused=(error, error_type))

    def before_action(self, run: NodeRun, refused: Callable[[], str | None]) -> str | None:
        """Commit the action's intent; None once it is durable, or why it must not start
        (`refused()` is asked while waiting: HALT, or its execution ended)."""
        ticket = self.journal.record_intent(run.execution_id, run.node_id,
                                            run.idempotency_key, run.attempt,
                                            iso_utc(self._clock_time()))
        while not ticket.wait(INTENT_POLL_S):
            reason = refused()
            if reason is not None:
                self.not_started(run, reason)
                return reason
        return None

    def not_started(self, run: NodeRun, reason: str) -> None:
        """The intent was committed but the gate did not let the action start."""
        self.journal.record_intent_outcome(run.idempotency_key, NOT_STARTED,
                                           note=f"never called: {reason}")

    def late_result(self, run: NodeRun, why: str) -> None:
        detail = {"why": why, "ok": run.error is None,
                  "error": run.error_text if run.error is not None else None,
                  # Its event form (made on the node's thread): packing the object itself
                  # would run its user code on the journal writer's.
                  "value": run.shown if run.error is None else None}
        self.journal.record_intent_outcome(run.idempotency_key, None, detail=detail)

    def wait_commit(self, timeout: float = COMMIT_WAIT_S, *,
                    upto_seq: int | None = None) -> bool:
        """Everything queued so far is committed, or with `upto_seq` every event up to it
        (a state change's reply waits on it). Not while writes fail: the change is in
        force in memory, the failure has halted the engine already, and a dead disk must
        not hold up the kill switch's reply."""
        journal = self.journal
        if upto_seq is None:
            ticket = journal.barrier()

            def committed(wait_s: float) -> bool:
                return ticket.wait(wait_s)
        else:
            def committed(wait_s: float) -> bool:
                return journal.wait_committed(upto_seq, wait_s)
        deadline = time.monotonic() + timeout
        while not committed(COMMIT_POLL_S):
            if upto_seq is None and ticket.error is not None:
                return False  # the journal closed: it is never written
            if self.journal.stats()["failing"]:
                log.error("journal_commit_failing", note="the change is in force in memory; "
                          "it is written once the journal's writes succeed")
                return False
            if time.monotonic() >= deadline:
                log.error("journal_commit_slow", waited_s=timeout)
                return False
        return True

    # -- queries ---------------------------------------------------------------------------

    def resolve_intent(self, idempotency_key: str, outcome: str,
                       note: str | None) -> dict[str, Any]:
        if outcome not in RESOLUTIONS:
            raise ValueError(f"outcome must be one of {sorted(RESOLUTIONS)}, not {outcome!r}")
        return self.journal.resolve_intent(idempotency_key, outcome, note)

    def close(self) -> None:
        self.journal.close()


def _open_actions(intents: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """execution_id -> {node_id: attempt} of the action intents left without an outcome."""
    found: dict[str, dict[str, int]] = {}
    for intent in intents:
        found.setdefault(intent["execution_id"], {})[intent["node_id"]] = intent["attempt"]
    return found


def _with_open_actions(nodes: dict[str, dict[str, Any]], actions: dict[str, int]) -> None:
    """An action whose intent was committed but whose `node_started` was not (the kill
    came in between: group commit makes that window wide) may have run: it ends
    `cancelled` with the intent's attempt, as a running node does, never `skipped` (which
    says it did not run) or missing."""
    for node_id, attempt in actions.items():
        entry = nodes.get(node_id)
        if entry is None:
            nodes[node_id] = {"status": "running", "attempts": attempt}
        elif entry.get("status") == "pending":  # (a retry's: its last error is kept)
            entry.update(status="running", attempts=max(attempt, entry.get("attempts", 0)))


def _ended_nodes(nodes: dict[str, dict[str, Any]], ids: list[str] | None
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """An interrupted execution's `results` and `nodes`, from the node states its events
    gave: as the engine closes an execution, the running node `cancelled` and the ones
    that never started (of the workflow under that id, if its nodes match) `skipped`;
    the outputs go to `results`, as in every terminal event."""
    close_nodes(nodes)
    nodes = with_unstarted(nodes, ids, "skipped")
    results = {node_id: entry.pop("outputs") for node_id, entry in nodes.items()
               if entry["status"] == "completed" and "outputs" in entry}
    return results, nodes


def _ms_since(started_at: str | None, now: float) -> float:
    if not started_at:
        return 0.0
    try:
        whole, _, frac = started_at.rstrip("Z").partition(".")
        start = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{frac}")
    except ValueError:
        return 0.0
    return round(max(now - start, 0.0) * 1000.0, 3)
