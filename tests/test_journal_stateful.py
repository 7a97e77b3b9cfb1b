"""The journal's durability model as a Hypothesis state machine: an Engine on a real
data_dir, driven through submits (an action that completes, one that raises, one that
times out, a condition that is false, an action held in flight), halt / resume / alert /
reduce-only, clean restarts (`stop()`, then a new engine on the same data_dir) and an
operator's resolution of open intents.

A model keeps what must be durable, and after every step (a restart included) the engine,
reading its journal, must agree with it:
- `replay` from seq 1, paged, is gapless 1..last with no duplicate, the events seen before
  are still there unchanged, and `status()["last_seq"]` is the last one;
- every execution the journal was given is found with the status, results and error_type
  its caller was told, and no other one (`executions()`); a submit refused in HALT is
  there as `refused`;
- the emergency state and its history survive a restart (halted stays halted: a submit is
  refused);
- each action's idempotency key is one intent at most, with the outcome the engine saw or
  the operator gave (an operator's resolution stays), and no action function is ever called
  twice for one key, or without its intent;
- with `[journal] halt_on_unresolved_intents`, a restart with open intents starts in HALT,
  and resolving the last one resumes only that HALT, never an operator's.

Crashes (kill -9) are covered by the subprocess tests (tests/test_engine_crash.py,
tests/test_journal_crash.py); this machine is about sequences of clean operations.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from actors import Config, Engine, Node, NodeContext, Workflow
from actors.execution import ExecutionResult
from tests.journal_machine_parts import ActionCalls, Held, Recorded, expected_results

#: Every wait in the machine has this deadline (a busy 2-core machine is slow, not stuck).
WAIT_S = 10.0
#: The "late" action's timeout; it answers only when the machine lets it (at most HOLD_S).
LATE_TIMEOUT_S = 0.05
HOLD_S = 10.0
#: A node that is (wrongly) retried is retried at once: such a run stays short.
RETRY_QUICKLY = {"backoff_min_s": 0.01, "backoff_max_s": 0.02}
#: Small replay pages, so that paging is exercised too.
PAGE = 17
KINDS = ("ok", "fails", "skip")
OUTCOMES = ("filled", "not_filled", "unknown")
NOT_STARTED = "not_started"

SETTINGS = settings(max_examples=40, stateful_step_count=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class JournalMachine(RuleBasedStateMachine):
    """Each run gets a fresh data_dir under `base` (set by the test)."""

    base: Path

    def __init__(self) -> None:
        super().__init__()
        self.data_dir = Path(tempfile.mkdtemp(prefix="run", dir=self.base))
        self.calls = ActionCalls()
        #: Set at teardown: every "late" action still waiting returns.
        self.done = threading.Event()
        self.held: Held | None = None
        self.held_lock = threading.Lock()
        self.holds: list[Held] = []
        self.workflows = self._workflows()
        self.engine: Engine | None = None
        self.halt_on_unresolved = False
        # -- the model ---------------------------------------------------------------
        #: execution_id -> what its caller was told (journaled executions only).
        self.executions: dict[str, Recorded] = {}
        #: Refused submits (in HALT): never admitted, so not journaled.
        self.refused: set[str] = set()
        #: idempotency_key -> the intent's outcome (None: open).
        self.intents: dict[str, str | None] = {}
        #: Keys an operator resolved: their outcome is final.
        self.operator_resolved: set[str] = set()
        self.state = "NORMAL"
        #: Every state entered, in order (the emergency history).
        self.history: list[str] = []
        #: The HALT in force is the one a restart made for open intents (resolving the last
        #: one ends it).
        self.intents_halt = False
        #: (seq, type, execution_id) of every event replayed so far.
        self.seen: list[tuple[int, str, str | None]] = []

    # -- the workflows ----------------------------------------------------------------------

    def _workflows(self) -> dict[str, Workflow]:
        calls, done = self.calls, self.done

        def price(ctx: NodeContext) -> dict[str, float]:
            return {"price": 100.0 + float(ctx.inputs["n"])}

        def trade(ctx: NodeContext) -> dict[str, Any]:
            calls.note(ctx.idempotency_key)
            return {"order": ctx.idempotency_key, "n": ctx.inputs["n"]}

        def trade_fails(ctx: NodeContext) -> dict[str, Any]:
            calls.note(ctx.idempotency_key)
            raise ValueError("the exchange said no")

        def trade_late(ctx: NodeContext) -> dict[str, Any]:
            calls.note(ctx.idempotency_key)
            done.wait(HOLD_S)  # past its timeout: the engine cannot know what happened
            return {"order": ctx.idempotency_key, "late": True}

        def trade_held(ctx: NodeContext) -> dict[str, Any]:
            calls.note(ctx.idempotency_key)
            with self.held_lock:  # (submit_held sets it under this lock)
                held = self.held
            assert held is not None and held.key == ctx.idempotency_key
            held.entered.set()
            held.release.wait(HOLD_S)
            return {"order": ctx.idempotency_key, "n": ctx.inputs["n"]}

        def build(kind: str, action: Any, *, go: bool = True, **options: Any) -> Workflow:
            return Workflow(f"sm_{kind}", nodes=[
                Node("price", price, category="provider"),
                Node("check", lambda ctx: go, category="condition", depends_on=["price"]),
                Node("trade", action, category="action", depends_on=["check"], **options),
            ])

        return {"ok": build("ok", trade), "fails": build("fails", trade_fails),
                "late": build("late", trade_late, timeout_s=LATE_TIMEOUT_S),
                "skip": build("skip", trade, go=False), "held": build("held", trade_held)}

    # -- helpers ----------------------------------------------------------------------------

    @property
    def live(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def _start(self) -> None:
        journal = {"halt_on_unresolved_intents": self.halt_on_unresolved}
        self.engine = Engine.start(Config.from_dict(
            {"daemon": {"data_dir": str(self.data_dir)}, "journal": journal,
             "resilience": RETRY_QUICKLY}))

    def _enter(self, state: str) -> None:
        """The model's side of a state change (nothing when the state stays)."""
        if state != self.state:
            self.state = state
            self.history.append(state)
            self.intents_halt = False

    def _record(self, result: ExecutionResult, expected: Recorded) -> None:
        told = Recorded(result.status, result.error_type, dict(result.results))
        assert told == expected, f"{result.execution_id}: told {told}, expected {expected}"
        if told.status == "refused":
            self.refused.add(result.execution_id)
        else:
            self.executions[result.execution_id] = told

    def _end_held(self, status: str, error_type: str | None) -> None:
        """The held execution ended (released, halted or stopped): record what it was told."""
        held = self.held
        assert held is not None
        self.held = None
        result = held.handle.result(timeout=WAIT_S)
        traded = status == "completed"
        self._record(result, Recorded(status, error_type, expected_results(
            "held", held.n, held.key, traded=traded)))
        if held.key not in self.operator_resolved:
            self.intents[held.key] = "completed" if traded else None
        held.release.set()

    # -- rules ------------------------------------------------------------------------------

    @initialize(halt_on_unresolved=st.booleans())
    def start(self, halt_on_unresolved: bool) -> None:
        self.halt_on_unresolved = halt_on_unresolved
        self._start()

    @rule(kind=st.sampled_from(KINDS), n=st.integers(0, 3))
    def submit(self, kind: str, n: int) -> None:
        """A submit, waited for: "ok" completes, "fails" raises, "skip" has a false
        condition."""
        self._submit(kind, n)

    @rule(n=st.integers(0, 3))
    def submit_late(self, n: int) -> None:
        """An action that overruns its timeout: its intent stays open (its own rule: the
        paths through open intents are the longest)."""
        self._submit("late", n)

    def _submit(self, kind: str, n: int) -> None:
        result = self.live.submit(self.workflows[kind], inputs={"n": n}).result(timeout=WAIT_S)
        key = f"{result.execution_id}:trade"
        if self.state == "HALT":
            self._record(result, Recorded("refused", "Halted", {}))
            return
        acts = kind != "skip"
        if self.state == "REDUCE_ONLY":  # the action is refused after its intent's commit
            self._record(result, Recorded("completed", None, expected_results(
                kind, n, key, traded=False)))
            if acts:
                self.intents[key] = NOT_STARTED
            return
        status, error_type, outcome = {
            "ok": ("completed", None, "completed"),
            "fails": ("failed", "ValueError", "failed"),
            "late": ("failed", "NodeTimeout", None),
            "skip": ("completed", None, None),
        }[kind]
        self._record(result, Recorded(status, error_type, expected_results(
            kind, n, key, traded=kind == "ok")))
        if acts:
            self.intents[key] = outcome

    @precondition(lambda self: self.held is None and self.state in ("NORMAL", "ALERT"))
    @rule(n=st.integers(0, 3))
    def submit_held(self, n: int) -> None:
        """An execution whose action is in flight until released, halted or stopped."""
        wf = self.workflows["held"]
        with self.held_lock:  # the action reads `self.held` when it is called
            handle = self.live.submit(wf, inputs={"n": n})
            self.held = held = Held(handle, f"{handle.execution_id}:trade", n)
        self.holds.append(held)
        assert held.entered.wait(WAIT_S), "the held action never started"
        self.intents[held.key] = None

    @precondition(lambda self: self.held is not None)
    @rule()
    def release_held(self) -> None:
        assert self.held is not None
        self.held.release.set()
        self._end_held("completed", None)

    @rule()
    def halt(self) -> None:
        self.live.halt("stateful test: halt")
        self._enter("HALT")
        self.intents_halt = False  # an operator's halt: resolving intents does not end it
        if self.held is not None:
            self._end_held("halted", "Halted")

    @rule()
    def resume(self) -> None:
        self.live.resume("stateful test: resume")
        self._enter("NORMAL")

    @rule(state=st.sampled_from(("ALERT", "REDUCE_ONLY")))
    def alert_or_reduce_only(self, state: str) -> None:
        if state == "ALERT":
            self.live.alert("stateful test: alert")
        else:
            self.live.reduce_only("stateful test: reduce only")
        self._enter(state)

    @rule()
    def restart(self) -> None:
        """A clean restart: stop() (a held execution ends cancelled), a new engine on the
        same data_dir."""
        self.live.stop()
        if self.held is not None:
            self._end_held("cancelled", "Cancelled")
        self.engine = None
        self._start()
        open_intents = [k for k, outcome in self.intents.items() if outcome is None]
        if self.halt_on_unresolved and open_intents and self.state != "HALT":
            self._enter("HALT")
            self.intents_halt = True
        if self.state == "HALT":  # halted stays halted: nothing is admitted
            self._submit("ok", 0)

    @precondition(lambda self: any(o is None for o in self.intents.values()))
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def resolve_intent(self, data: st.DataObject, outcome: str) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, o in self.intents.items() if o is None)))
        self.live.resolve_intent(key, outcome, "stateful test: reconciled")
        self.intents[key] = outcome
        self.operator_resolved.add(key)
        if self.intents_halt and all(o is not None for o in self.intents.values()):
            self._enter("NORMAL")

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def log_is_gapless_and_keeps_what_was_seen(self) -> None:
        if self.engine is None:
            return
        engine = self.engine
        assert engine.journal_flush(WAIT_S), "the journal did not commit within the deadline"
        events: list[dict[str, Any]] = []
        since = 1
        while True:
            page = engine.replay(since, limit=PAGE)
            assert len(page["events"]) <= PAGE
            events += page["events"]
            if page["next_seq"] > page["last_seq"]:
                break
            assert page["next_seq"] > since, "replay made no progress"
            since = page["next_seq"]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), f"replayed seqs not 1..n: {seqs}"
        last = seqs[-1] if seqs else 0
        assert page["last_seq"] == last, f"replay says last_seq {page['last_seq']}, gave {last}"
        status_seq = engine.status()["last_seq"]
        assert status_seq == last, f"status() says last_seq {status_seq}, replay gave {last}"
        now = [(e["seq"], e["type"], e.get("execution_id")) for e in events]
        assert now[:len(self.seen)] == self.seen, "committed events changed or went"
        self.seen = now

    @invariant()
    def executions_are_kept_as_told(self) -> None:
        if self.engine is None:
            return
        engine = self.engine
        for execution_id, told in self.executions.items():
            kept = engine.execution(execution_id)
            assert kept is not None, f"{execution_id} is not in the journal"
            assert Recorded(kept["status"], kept["error_type"], kept["results"]) == told, \
                f"{execution_id}: journal has {kept['status']}, {kept['error_type']}, " \
                f"{kept['results']}; its caller was told {told}"
        for execution_id in self.refused:  # refused at the door: journaled as refused
            kept = engine.execution(execution_id)
            assert kept is not None and kept["status"] == "refused", (execution_id, kept)
        expected = {i: r.status for i, r in self.executions.items()}
        expected.update(dict.fromkeys(self.refused, "refused"))
        if self.held is not None:  # its action is in flight
            expected[self.held.handle.execution_id] = "running"
        listed = {e["execution_id"]: e["status"] for e in engine.executions(limit=10_000)}
        assert listed == expected

    @invariant()
    def emergency_state_and_history_are_kept(self) -> None:
        if self.engine is None:
            return
        assert self.engine.state.value == self.state
        assert self.engine.status()["state"] == self.state
        assert [h["state"] for h in self.engine.emergency_history()] == self.history

    @invariant()
    def each_action_is_one_intent_and_at_most_one_call(self) -> None:
        if self.engine is None:
            return
        intents = self.engine.intents(unresolved=False)
        keys = [i["idempotency_key"] for i in intents]
        assert len(keys) == len(set(keys)), f"an idempotency key is listed twice: {keys}"
        assert {i["idempotency_key"]: i["outcome"] for i in intents} == self.intents
        assert all(i["attempt"] == 1 and i["node_id"] == "trade" for i in intents)
        open_keys = {i["idempotency_key"] for i in self.engine.intents(unresolved=True)}
        assert open_keys == {k for k, o in self.intents.items() if o is None}
        calls = self.calls.counts()
        assert all(n == 1 for n in calls.values()), f"an action ran twice: {calls}"
        called_without_intent = set(calls) - set(self.intents)
        assert not called_without_intent, called_without_intent
        refused_but_called = {k for k in calls if self.intents[k] == NOT_STARTED}
        assert not refused_but_called, refused_but_called

    # -- teardown ---------------------------------------------------------------------------

    def teardown(self) -> None:
        self.done.set()
        for held in self.holds:
            held.release.set()
        if self.engine is not None:
            self.engine.stop()


def test_the_journal_keeps_what_it_was_told_across_clean_restarts(tmp_path: Path) -> None:
    class Machine(JournalMachine):
        base = tmp_path

    run_state_machine_as_test(Machine, settings=SETTINGS)
