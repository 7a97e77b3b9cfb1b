"""The engine's journal side: recovery at start, a failing disk, and the queries.

A part of `Engine` (a mixin it inherits). Without `[daemon] data_dir` the engine keeps no
journal and the queries raise `NoJournal`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.durable import Durable
from actors.emergency import EmergencyGate, EmergencyState
from actors.ending import ExecutionStatus
from actors.errors import LimitExceeded, NoJournal, NotFound
from actors.logs import get_logger
from actors.messages import BroadcastHalt

if TYPE_CHECKING:
    import threading

    import pykka

    from actors.config import Config
    from actors.events import EventSink
    from actors.execution import ExecutionHandle
    from actors.hooks import HaltHooks
    from actors.journal import Journal
    from actors.workflow import Workflow

__all__ = ["JournalSide", "journal_recovered"]

log = get_logger("tradeloom.engine")

#: The reason of the HALT `halt_on_unresolved_intents` starts with, after their count.
INTENTS_HALT_REASON = (" action intent(s) from before the restart have no known outcome: "
                       "reconcile them (tradeloom intents) or resume")
#: The reason of the HALT a start makes when the last process ended while its journal
#: writes failed (its own HALT may never have been written), before the failure's text.
WRITE_FAILED_HALT_REASON = ("journal writes were failing when the last process ended; "
                            "check the disk, then resume")
#: A query (`execution`, `executions`, `intents`) first waits this long, at most, for what
#: was sequenced before it to be committed; then it reads what is.
QUERY_WAIT_S = 1.0

#: What `executions(status=...)` may ask for: the execution statuses (docs/protocol.md).
_STATUSES: tuple[str, ...] = tuple(ExecutionStatus)


class JournalSide:
    """Recovery, journal failure handling and history queries, for `Engine`."""

    config: Config
    gate: EmergencyGate
    sink: EventSink
    _durable: Durable | None
    _emergency: pykka.ActorRef[Any]
    _intents_halt_seq: int
    _lock: threading.RLock
    _ended: Counter[tuple[str, str]]
    _workflows: dict[str, tuple[Workflow, str | None, str | None]]

    #: EmergencyControls.resume (the other half of Engine).
    resume: Callable[..., dict[str, Any]]

    def _recover(self, durable: Durable) -> None:
        """End what the last process left open, before anything runs."""
        ids = {wf_id: [node.id for node in entry[0].nodes]
               for wf_id, entry in self._workflows.items()}
        with self._lock:
            for record in durable.recovery.open_executions:
                self._ended[(record["workflow_id"], ExecutionStatus.INTERRUPTED.value)] += 1
        intents = durable.recover(self.sink, ids)
        mark = durable.recovery.write_failed_mark
        if mark is not None:
            # The last process's writes were failing when it ended: its HALT may never
            # have reached the journal. Only an operator's resume ends that HALT, so this
            # one too (resolving intents does not: it is already in HALT below). Already
            # in HALT (the intents' HALT of an earlier restart, say), asking again makes
            # it held (`halt_held`), as the failure did in the last process, whose
            # `halt_held` may never have reached the journal either.
            log.critical("journal_was_failing_at_last_stop", reason=mark,
                         state=self.gate.state.value)
            self.gate.transition(EmergencyState.HALT,
                                 WRITE_FAILED_HALT_REASON + (f": {mark}" if mark else ""),
                                 "journal", "engine")
        if intents and self.config.journal.halt_on_unresolved_intents:
            # Resolving the last intent ends this HALT (or the one an earlier restart made
            # for them), never a HALT the engine was already in: an operator's, a failed
            # disk's, a risk limit's, nor one an operator asked for again while the
            # intents' held (`halt_held`).
            ours = self._halted_for_intents()
            changed = False
            if not ours:  # (asking again for a HALT that is ours would make it held)
                _, changed = self.gate.transition(
                    EmergencyState.HALT, f"{len(intents)}{INTENTS_HALT_REASON}", "journal",
                    "engine")
            if changed or ours:
                self._intents_halt_seq = self.gate.history[-1]["seq"]
        if mark is not None:
            durable.journal.clear_write_failed_mark()  # once the HALT is in the journal
        durable.wait_commit()

    def _run_owed_hooks(self, durable: Durable, hooks: HaltHooks) -> None:
        """The on-halt hooks the HALT this engine starts in still owes (the last process
        died before they all ended, or recovery has just halted): run them now, each but
        one that has already run (completed or failed) or whose action had started (an
        intent: at most once; the operator reconciles it, as any other)."""
        gate, owed = self.gate, self.gate.hooks_owed
        if owed is None:
            return
        if gate.state is not EmergencyState.HALT or not hooks.workflows:
            gate.hooks_ended(owed)  # (no hooks configured any more: none is owed)
            return
        journal = durable.journal
        records = [r for r in map(journal.execution, owed["runs"]) if r is not None]
        due = []
        for workflow in hooks.workflows:
            mine = [r for r in records if r["workflow_id"] == workflow.id]
            if any(r["status"] in ("completed", "failed") for r in mine):
                continue
            actions = [node.id for node in workflow.nodes if node.category == "action"]
            started = [r["execution_id"] for r in mine
                       if any(journal.intent(f"{r['execution_id']}:{node_id}") is not None
                              for node_id in actions)]
            if started:
                log.warning("on_halt_hook_not_run_again", workflow_id=workflow.id,
                            execution_ids=started,
                            why="its action had started: reconcile its intents")
                continue
            due.append(workflow)
        if not due:
            gate.hooks_ended(owed)
            return
        log.warning("on_halt_hooks_owed", workflow_ids=[w.id for w in due],
                    reason=owed["reason"], why="their HALT's hooks had not all ended")
        hooks(owed["reason"], owed["source"], owed["origin"], only=due)

    def _halted_for_intents(self) -> bool:
        """The HALT restored at start is the one a restart made for open intents."""
        gate = self.gate
        return (gate.state is EmergencyState.HALT and not gate.halt_held
                and (gate.source, gate.origin) == ("journal", "engine")
                and bool(gate.history) and (gate.reason or "").endswith(INTENTS_HALT_REASON))

    def _journal_failed(self, error: BaseException) -> None:
        """A commit failed (disk full, I/O error, file removed). Nothing uncommitted gets
        out; HALT now, in memory: nothing starts, no submit is accepted. Its event is
        committed and published once a write succeeds; only an operator's resume ends it."""
        reason = f"journal write failed: {type(error).__name__}: {error}"
        log.critical("journal_write_failed", error=str(error), error_type=type(error).__name__)
        self.gate.transition(EmergencyState.HALT, reason, "journal", "engine")
        if self._emergency.is_alive():
            self._emergency.tell(BroadcastHalt(reason, source="journal", origin="engine"))

    def _journal_still_failing(self, error: BaseException) -> None:
        """A retry failed too. An operator may have resumed while the disk still failed:
        then a write that fails again halts again, as the first one did (resumed, the
        engine would accept submits whose records can never be written)."""
        if self.gate.state is not EmergencyState.HALT:
            self._journal_failed(error)

    @property
    def journal(self) -> Journal | None:
        """The journal (None in memory mode): for readers of their own, such as webhooks."""
        return self._durable.journal if self._durable is not None else None

    def journal_flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything sequenced so far is committed (True at once in memory)."""
        return self._durable is None or self._durable.journal.flush(timeout)

    #: What the first `close_journal()` found (a second call says the same).
    _journal_closed_whole: bool | None = None

    def close_journal(self) -> bool:
        """Flush and close the journal (everything sequenced is committed). False if its
        writes were failing and records were never written: they are lost, and that is
        logged at error level (`journal_unwritten_at_stop`), once."""
        if self._durable is None:
            return True
        if self._journal_closed_whole is not None:
            return self._journal_closed_whole
        journal = self._durable.journal
        self._durable.close()
        stats = journal.stats()  # after close: what the writer was left holding
        unwritten_events, unwritten_records = stats["lag"], stats["pending"]
        self._journal_closed_whole = not (unwritten_events or unwritten_records)
        if not self._journal_closed_whole:
            log.error("journal_unwritten_at_stop", unwritten_events=unwritten_events,
                      unwritten_records=unwritten_records, committed_seq=stats["committed_seq"],
                      last_error=stats["last_error"],
                      note="the journal's writes were failing: what is counted here was "
                           "never written and is lost")
        return self._journal_closed_whole

    def wait_recorded(self, handle: ExecutionHandle, timeout: float) -> bool:
        """True once the execution's record is committed (at once without a journal)."""
        ticket = handle.recorded
        return ticket is None or ticket.wait(timeout)

    def _journal(self) -> Durable:
        if self._durable is None:
            raise NoJournal("this engine keeps no journal: start it with [daemon] data_dir "
                            "set for history, replay and intents")
        return self._durable

    def replay(self, since_seq: int, limit: int = 1000,
               topic_prefix: str = "") -> dict[str, Any]:
        """Committed events from `since_seq` on: {events, next_seq, last_seq, first_seq}."""
        return self._journal().journal.replay(since_seq, limit, topic_prefix)

    def _caught_up(self) -> Durable:
        """The journal, once what was sequenced before this call is committed (at most
        QUERY_WAIT_S, and not while writes fail): a query made right after a halt's, a
        cancel's or a submit's reply sees what they did to the executions."""
        durable = self._journal()
        if not durable.journal.stats()["failing"]:  # (then: what is committed, at once)
            durable.journal.flush(QUERY_WAIT_S)
        return durable

    def _journaled_status(self, execution_id: str) -> str:
        """For `cancel`: the status of an execution that left memory (it ended before this
        process started, or long ago), from the journal; `NotFound` if it has none."""
        found = self.execution(execution_id) if self._durable is not None else None
        if found is None:
            raise NotFound(f"no live or recent execution {execution_id!r}")
        return str(found["status"])

    def execution(self, execution_id: str) -> dict[str, Any] | None:
        """One execution from the journal (its nodes, results, times), or None."""
        if not isinstance(execution_id, str):  # else a typo'd argument reads as "not found"
            raise TypeError(f"execution_id must be a str, not {type(execution_id).__name__}")
        return self._caught_up().journal.execution(execution_id, self._node_ids)

    def _node_ids(self, workflow_id: str) -> list[str] | None:
        """The node ids of the workflow registered under `workflow_id` now, if any: the
        journal adds the nodes an execution's events have not named yet."""
        with self._lock:
            entry = self._workflows.get(workflow_id)
        return None if entry is None else [node.id for node in entry[0].nodes]

    def executions(self, workflow: str | None = None, status: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        """Executions from the journal, newest first."""
        if isinstance(status, str) and status not in _STATUSES:  # a typo would match nothing
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        return self._caught_up().journal.executions(workflow, status, limit)

    def intents(self, unresolved: bool = True) -> list[dict[str, Any]]:
        """Action intents (only those with no known outcome, by default)."""
        if not isinstance(unresolved, bool):  # "no" must not quietly mean True
            raise TypeError(f"unresolved must be True or False, not {unresolved!r}")
        return self._caught_up().journal.intents(unresolved)

    def resolve_intent(self, idempotency_key: str, outcome: str,
                       note: str | None = None, *, origin: str = "api") -> dict[str, Any]:
        """Record an operator's reconciliation: filled, not_filled or unknown; returns
        `{"idempotency_key", "outcome"}` (the control op's result) once durable; an outcome
        it replaces (the engine's `completed`, `failed` or `not_started`, an earlier
        resolution) is logged (`intent_resolution_replaced`). The HALT
        that `halt_on_unresolved_intents` started with ends when the last one is resolved
        (unless the state changed since, an operator asked for HALT meanwhile, or a limit
        is exceeded)."""
        journal = self._journal()
        answer = journal.resolve_intent(idempotency_key, outcome, note)
        halt_seq = self._intents_halt_seq
        history = self.gate.history
        if (halt_seq and history and history[-1]["seq"] == halt_seq
                and not self.gate.halt_held
                and not journal.journal.intents(unresolved=True)):
            self._intents_halt_seq = 0
            try:
                self.resume("every action intent from before the restart is reconciled",
                            origin=origin)
            except LimitExceeded:
                log.warning("intents_reconciled_still_halted",
                            why="a risk limit is exceeded: resume by hand")
        return answer


def journal_recovered() -> None:
    log.warning("journal_write_recovered",
                note="commits resumed; a HALT the failure made ends only by an operator's "
                     "resume")
