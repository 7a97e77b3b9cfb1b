"""The kill switch: NORMAL / ALERT / REDUCE_ONLY / HALT, risk limits, halt broadcast.

Two parts. `EmergencyGate` (here) is the state itself, shared by every node actor: a node
is admitted to start under the engine's sequencing lock, the same lock under which the
state changes and its event is sequenced, so no action starts after HALT is in the stream.
`EmergencyActor` (`actors/emergency_actor.py`) is the kill switch's mailbox: state changes
by message, risk updates, the stale-feed watchdog, the broadcast that tells every
supervisor to end its executions, and the on-halt hooks that follow it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from actors.clock import Clock
from actors.errors import LimitExceeded
from actors.events import Event, EventSink
from actors.interpreter import HaltPriority
from actors.logs import get_logger
from actors.messages import RiskUpdate
from actors.risk import RiskBook, Verdict

if TYPE_CHECKING:
    from actors.machine import NodeRun

log = get_logger("tradeloom.emergency")

#: State changes kept in memory (and in the gate's snapshot), newest last.
HISTORY_LEN = 1000


class EmergencyState(StrEnum):
    NORMAL = "NORMAL"
    ALERT = "ALERT"
    REDUCE_ONLY = "REDUCE_ONLY"
    HALT = "HALT"


#: How far each state restricts trading; automatic escalations only ever go up.
_RANK = {EmergencyState.NORMAL: 0, EmergencyState.ALERT: 1, EmergencyState.REDUCE_ONLY: 2,
         EmergencyState.HALT: 3}
#: The states an exceeded auto_halt limit keeps the engine out of, unless forced.
_GUARDED = frozenset({EmergencyState.NORMAL, EmergencyState.ALERT})


class IntentLedger(Protocol):
    """Where actions' intents are committed (`actors.durable.Durable`)."""

    def before_action(self, run: NodeRun, refused: Callable[[], str | None]) -> str | None:
        """Commit the intent; None once durable, else why the action must not start."""

    def not_started(self, run: NodeRun, reason: str) -> None:
        """The intent is committed but the gate refused the action."""

    def late_result(self, run: NodeRun, why: str) -> None:
        """A timed-out or cancelled action returned after all."""


def _hooks_owed(saved: object) -> dict[str, Any] | None:
    """A snapshot's `hooks_owed`, if well formed (older journals have none)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("runs"), list):
        return None
    return {"reason": str(saved.get("reason") or "halted"),
            "source": str(saved.get("source") or "manual"),
            "origin": str(saved.get("origin") or "engine"),
            "runs": [r for r in saved["runs"] if isinstance(r, str)]}


def _nothing() -> None:
    """No journal: the kill switch's state lives in memory only."""


class EmergencyGate:
    """The emergency state and the check every node passes on its way to start."""

    def __init__(self, sink: EventSink, book: RiskBook, clock: Clock) -> None:
        self._sink = sink
        #: The sequencing lock: the state and the risk book change only under it.
        self.lock = sink.lock
        self._clock = clock
        self.book = book
        self.state = EmergencyState.NORMAL
        self.reason: str | None = None
        self.source: str | None = None
        self.origin: str | None = None
        #: The last HISTORY_LEN changes: {state, previous_state, reason, source, origin,
        #: timestamp, seq}, oldest first.
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_LEN)
        #: A HALT was asked for (`transition`) while already in HALT (kept in `snapshot`,
        #: so across a restart): an operator's halt during the open intents' HALT makes it
        #: theirs, and resolving the intents does not end it, in this process or the next.
        self.halt_held = False
        #: On-halt hooks are configured (the engine sets it): entering HALT owes them.
        self.hooks_configured = False
        #: What the current HALT owes its on-halt hooks, until each has ended: {"reason",
        #: "source", "origin", "runs": [the hook executions' ids]}; None when nothing is
        #: owed. Kept in `snapshot`, with the HALT in one commit and each run's id before
        #: it starts: a process killed before its hooks ended runs them at the next start
        #: (those whose actions had not started: actors/engine_journal.py).
        self.hooks_owed: dict[str, Any] | None = None
        #: Actions admitted whose function has not been entered yet.
        self.starting = 0
        #: Called (outside the lock) when the gate halts by itself (action_rate breach).
        self.on_self_halt: Callable[[str], None] = lambda reason: None
        #: With a journal: queues `snapshot()` for writing (under the lock, no I/O). It is
        #: called before a state change's event is sequenced, so the journal never holds
        #: a committed HALT without the state that goes with it.
        self.persist: Callable[[], object] = _nothing
        #: With a journal: commits an action's intent before the action may start.
        self.intents: IntentLedger | None = None
        #: Held from a halt's call to its reply: the journal writer gives way to it.
        self.priority = HaltPriority()

    def snapshot(self, *, history: bool = True) -> dict[str, Any]:
        """The kill switch's durable state: emergency state, every limit's figures, and
        (unless `history=False`: a journal keeps it from the events) the history of
        changes."""
        with self.lock:
            saved: dict[str, Any] = {
                "state": self.state.value, "reason": self.reason, "source": self.source,
                "origin": self.origin, "halt_held": self.halt_held,
                "limits": self.book.snapshot(),
                "hooks_owed": None if self.hooks_owed is None else {
                    **self.hooks_owed, "runs": list(self.hooks_owed["runs"])}}
            if history:
                saved["history"] = [dict(entry) for entry in self.history]
            return saved

    def restore(self, saved: dict[str, Any]) -> None:
        """Put back a snapshot at start-up, before anything runs: an engine restarted
        while halted comes back halted. Publishes nothing (nothing changed), runs no
        on-halt hook; stale-feed clocks start now."""
        with self.lock:
            self.book.restore(saved.get("limits", {}))
            self.state = EmergencyState(saved["state"])
            self.reason, self.source = saved.get("reason"), saved.get("source")
            self.origin = saved.get("origin")
            self.halt_held = saved.get("halt_held") is True
            self.hooks_owed = _hooks_owed(saved.get("hooks_owed"))
            self._sink.state = self.state.value
            self.history = deque((dict(entry) for entry in saved.get("history", ())),
                                 maxlen=HISTORY_LEN)

    def admit(self, run: NodeRun, started_event: Event) -> str | None:
        """Mark `run` started and publish `started_event`, or say why it may not start.

        An execution exempt from the halt (an on-halt hook) is admitted in HALT, and its
        actions count as `reduces_risk` and are not held to the action rate."""
        is_action = run.node.category == "action"
        exempt = run.execution.exempt_from_halt
        intents = self.intents if is_action else None
        if intents is not None:
            # Committed before the action may start, and waited for outside the lock:
            # halt() never waits on the disk for an action that has not started.
            denied = intents.before_action(run, lambda: self._refusal(run, exempt))
            if denied is not None:
                return denied
        verdict = self._admit(run, started_event, is_action, exempt)
        if verdict is not None and intents is not None:
            intents.not_started(run, verdict)
        return verdict

    def _refusal(self, run: NodeRun, exempt: bool) -> str | None:
        """Why `run` may not start now, checking only what needs no lock."""
        if run.execution.closed or run.abandoned:
            return "closed"
        if self.state is EmergencyState.HALT and not exempt:
            return "halted"
        return None

    def _admit(self, run: NodeRun, started_event: Event, is_action: bool,
               exempt: bool) -> str | None:
        while True:
            with self.lock:
                if run.execution.closed or run.abandoned:
                    return "closed"
                state = self.state
                if state is EmergencyState.HALT and not exempt:
                    return "halted"
                wait = 0.0
                if is_action:
                    if (state is EmergencyState.REDUCE_ONLY and not run.node.reduces_risk
                            and not exempt):
                        return "reduce_only"
                    if self.book.action_rate_limits and not exempt:
                        verdicts, wait = self.book.note_action(self._clock.monotonic())
                        halt_reason = self._apply_verdicts_locked(verdicts)
                        if halt_reason is not None:
                            break
                    if wait <= 0:
                        self.starting += 1
                if wait <= 0:
                    run.started_at = self._clock.monotonic()  # before `started`: read unlocked
                    run.started = True
                    self._sink.emit_locked([started_event])
                    return None
            # Over a rate limit without auto_halt: wait for the window (or a cancel), retry.
            run.cancelled.wait(wait)
        self.on_self_halt(halt_reason)
        return "halted"

    def action_begun(self) -> None:
        """The admitted action's function is being entered now."""
        with self.lock:
            self.starting -= 1
            if self.starting == 0:
                self._sink.changed.notify_all()

    def wait_actions_begun(self, timeout: float) -> bool:
        """Wait until every admitted action has entered its function."""
        with self.lock:
            return self._sink.changed.wait_for(lambda: self.starting == 0, timeout)

    def transition(self, new: EmergencyState, reason: str | None, source: str,
                   origin: str = "api", *, force: bool = False) -> tuple[EmergencyState, bool]:
        """An operator's change. To NORMAL or ALERT it is refused (`LimitExceeded`) while
        an auto_halt limit is exceeded, whatever the state it comes from, unless forced."""
        with self.lock:
            halted = self.state is EmergencyState.HALT
            if new is EmergencyState.HALT and halted and not self.halt_held:
                self.halt_held = True
                self.persist()
            if new in _GUARDED and not force:
                blocking = self.book.blocking()
                if blocking:
                    what = "resume" if new is EmergencyState.NORMAL else "alert"
                    raise LimitExceeded(
                        f"{what} refused: risk limit {', '.join(blocking)} still exceeded "
                        "(lower the figure, or force)")
            return self._transition_locked(new, reason, source, origin)

    def _transition_locked(self, new: EmergencyState, reason: str | None, source: str,
                           origin: str, extra_events: Sequence[Event] = ()
                           ) -> tuple[EmergencyState, bool]:
        previous = self.state
        events = list(extra_events)
        change: Event | None = None
        if new is not previous:
            self.state = new
            self.halt_held = False
            self.reason, self.source, self.origin = reason, source, origin
            self._sink.state = new.value
            self.hooks_owed = ({"reason": reason or "halted", "source": source,
                                "origin": origin, "runs": []}
                               if new is EmergencyState.HALT and self.hooks_configured
                               else None)
            self.persist()
            change = {"v": 1, "type": "emergency_state_changed", "state": new.value,
                      "previous_state": previous.value, "reason": reason,
                      "source": source, "origin": origin}
            events.append(change)
        if events:
            try:
                self._sink.emit_locked(events)
            finally:
                # Sequenced before any subscriber ran: kept even if one of them raised.
                if change is not None and "seq" in change:
                    self.history.append({k: change[k] for k in (
                        "state", "previous_state", "reason", "source", "origin",
                        "timestamp", "seq")})
        return previous, new is not previous

    def hook_submitted(self, owed: dict[str, Any], execution_id: str) -> None:
        """A hook execution of the HALT that owes `owed` is recorded and about to start:
        its id is journaled before any of its actions' intents can be."""
        with self.lock:
            if self.hooks_owed is owed:
                owed["runs"].append(execution_id)
                self.persist()

    def hooks_ended(self, owed: dict[str, Any]) -> None:
        """Every hook `owed` lists has ended (or will not run again): nothing is owed."""
        with self.lock:
            if self.hooks_owed is owed:
                self.hooks_owed = None
                self.persist()

    def update_risk(self, update: RiskUpdate) -> tuple[Verdict, str | None]:
        """Apply a risk figure; returns its verdict and the halt reason if it halted."""
        with self.lock:
            verdict = self.book.update(update.limit, value=update.value, delta=update.delta,
                                       equity=update.equity)
            self.persist()  # limit values live in the journal too
            return verdict, self._apply_verdicts_locked([verdict])

    def _apply_verdicts_locked(self, verdicts: Sequence[Verdict]) -> str | None:
        events = [e for v in verdicts for e in v.events]
        # REDUCE_ONLY (entered, often from HALT, to close positions) is halted again only
        # by a figure that rose: one still over but falling is the reduction working, and
        # halting on it would refuse the very actions that reduce it.
        reducing = self.state is EmergencyState.REDUCE_ONLY
        breach = next((v for v in verdicts if v.breach and (v.rose or not reducing)), None)
        if breach is None or self.state is EmergencyState.HALT:
            if events:
                self._sink.emit_locked(events)
            return None
        lim = breach.limit
        # (`measure`: a position's size is its absolute value; "-50 >= 10" read as a lie)
        shown = (f"|{lim.value:g}|" if lim.measure != lim.value else f"{lim.value:g}")
        reason = f"risk limit {lim.name} exceeded: {shown} >= {lim.threshold:g}"
        self._transition_locked(EmergencyState.HALT, reason, "risk_limit", "engine", events)
        return reason

    def check_stale(self) -> tuple[EmergencyState, str] | None:
        """Raise the state for limits whose feed went silent: ALERT, or HALT when one of
        them has auto_halt; never lower (REDUCE_ONLY stays unless it is HALT). Returns the
        new state and reason if it changed."""
        with self.lock:
            due, newly = self.book.stale_due(self._clock.monotonic())
            if not due:
                return None
            for lim in newly:  # once per feed going stale, not at each re-report
                log.warning("risk_feed_stale", limit=lim.name, stale_after_s=lim.stale_after_s,
                            auto_halt=lim.auto_halt, state=self.state.value)
            target = (EmergencyState.HALT if any(lim.auto_halt for lim in due)
                      else EmergencyState.ALERT)
            if _RANK[self.state] >= _RANK[target]:
                return None
            reason = "risk feed stale: " + ", ".join(
                f"limit {lim.name} got no update for {lim.stale_after_s:g} s" for lim in due)
            self._transition_locked(target, reason, "stale_feed", "engine")
            return target, reason

    def next_stale_delay(self) -> float | None:
        """Seconds until the stale-feed watchdog must look again; None: only when woken."""
        with self.lock:
            at = self.book.next_stale_at()
        if at is None:
            return None
        delay = at - self._clock.monotonic()
        if delay <= 0:
            return 0.0
        return delay if self._clock.real else None
