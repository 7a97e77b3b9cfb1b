"""Node actors and their balancing pool.

A node actor runs one node function at a time in its own thread. A supervisor's node actors
share one mailbox (Akka's BalancingPool): an actor that finishes a run takes the next one
without going to sleep, so under load there is no thread wake-up per node, and a slow node
never holds up the runs queued behind it. Starting a thread per node per execution is what
made earlier designs slow; here threads are started only when every actor is busy.

A node actor whose node overran its timeout is abandoned: a Python thread cannot be killed,
so its run is marked abandoned, `ctx.cancelled` is set, a replacement actor is started, and
the stuck actor retires as soon as (if ever) its function returns. It is never reused.
A node with `max_stuck_runs` runs stuck so is not called again until one returns: its next
runs fail at once with `NodeStuck` (a node that hangs on every run would otherwise hold a
new thread per run, until the OS refused threads to every workflow).
"""

from __future__ import annotations

import queue
import threading
import time
import types
from numbers import Number
from typing import Any, ClassVar, cast

import pykka

from actors._compat import EngineActorBase, ReleasingEnvelope, context_setters, stop_envelope
from actors.emergency import EmergencyGate
from actors.errors import (
    ConditionError,
    CoroutineReturned,
    NodeStuck,
    NodeThreadUnavailable,
    describe,
)
from actors.guards import cache_entry
from actors.logs import get_logger
from actors.messages import NodeDone, RunNode
from actors.packing import event_snapshot

_perf = time.perf_counter
log = get_logger("tradeloom.node")
_COROUTINE = types.CoroutineType


class SharedInbox:
    """One node actor's view of its pool's shared mailbox (bound right after creation).

    `empty()` is always True so that pykka's teardown of one stopping actor never drains
    runs meant for its siblings.
    """

    def bind(self, shared: queue.SimpleQueue[Any]) -> None:
        self.get = shared.get
        self.put = shared.put

    def empty(self) -> bool:
        return True


class NodeActor(EngineActorBase):
    """Runs node functions, one at a time, taken from its pool's shared mailbox."""

    inbox_factory = SharedInbox
    direct: ClassVar[frozenset[type]] = frozenset({RunNode})

    def __init__(self, shared: queue.SimpleQueue[Any], supervisor_inbox: Any,
                 gate: EmergencyGate, lock: threading.Lock, slot: Slot,
                 stuck: StuckRuns) -> None:
        super().__init__()
        cast(SharedInbox, self.actor_inbox).bind(shared)
        self._reply = supervisor_inbox.put
        self._gate = gate
        self._lock = lock
        self._slot = slot
        self._stuck = stuck

    def on_start(self) -> None:
        # Every log line a node function writes carries its execution (structlog
        # contextvars, per thread); each run overwrites them, so nothing needs resetting.
        self._set_execution_id, self._set_node_id = context_setters()

    def on_receive(self, message: Any) -> None:
        if type(message) is not RunNode:
            return super().on_receive(message)  # type: ignore[no-any-return]
        run = message.run
        node = run.node
        execution = run.execution
        reply = self._reply
        started_event = {
            **execution.head, "type": "node_started", "node_id": node.id,
            "node_name": node.name, "node_category": node.category, "attempt": run.attempt,
        }
        try:
            denied = self._gate.admit(run, started_event)
        except Exception as exc:  # noqa: BLE001 - the supervisor must hear back, always
            denied = f"admission failed: {describe(exc)}"
        if denied is not None:
            run.denied = denied
            reply(ReleasingEnvelope(NodeDone(run)))
            return None
        self._set_execution_id(execution.id)
        self._set_node_id(node.id)
        slot = self._slot
        run.slot = slot
        slot.since = t0 = _perf()
        try:
            if node.category == "action":
                self._gate.action_begun()
            if self._stuck.counts:  # (empty but for a node that hangs)
                self._stuck.check(run, self._gate)
            value = node.fn(run)
            if type(value) is _COROUTINE:  # an async def called without await
                _refuse_coroutine(value, node.id)
            if node.category == "condition":
                # A bool (the common case) is its own verdict: one type check, no call.
                run.truth = value if type(value) is bool else _truth(value, node.id)
            # The form events carry, made here: what it takes (a user `__str__`) is this
            # node's time, never the journal writer's or a subscriber's. Plain data is
            # copied: what is recorded is what the node returned, whoever changes it later.
            run.shown, run.user_object = event_snapshot(value)
            run.value = value
            if node.cache_ttl_s is not None:  # (its own copy: `shown` may be `value` itself)
                run.cache_copy = cache_entry(value, node.id)
        except BaseException as exc:  # noqa: BLE001 - a node's failure is data, never fatal
            run.error_text = describe(exc)  # user code too: taken here, not in the supervisor
            run.error = _without_tracebacks(exc)
        run.duration_s = _perf() - t0
        slot.since = 0.0
        with self._lock:
            run.returned = True
            abandoned = run.abandoned
        reply(ReleasingEnvelope(NodeDone(run)))
        if abandoned:
            # Overran and was replaced: retire instead of taking more work.
            self.stop_now()
        return None


def _without_tracebacks(error: BaseException) -> BaseException:
    """`error` with no traceback on it or on the exceptions it chains. A traceback holds the
    node's frames, and they `ctx` (this run, whose `error` it becomes): a reference cycle,
    which only the cyclic collector frees, on any thread (a supervisor's), with every
    input and output of the execution (actors/reaper.py). Nothing reads it later: the
    error's text is taken before, and a node's failure is logged without a traceback.
    Never raises (an exception class may make any attribute raise): what it could not
    clear keeps its traceback, and the cyclic collector frees it."""
    seen: set[int] = set()
    chain = [error]
    try:
        while chain:
            exc = chain.pop()
            if id(exc) in seen:
                continue
            seen.add(id(exc))
            exc.__traceback__ = None
            chain += [e for e in (exc.__cause__, exc.__context__) if e is not None]
            if issubclass(type(exc), BaseExceptionGroup):  # (type(): `__class__` may raise)
                chain += cast("BaseExceptionGroup[BaseException]", exc).exceptions
    except BaseException:  # noqa: BLE001 - user code: see the docstring
        pass
    return error


def _truth(value: Any, node_id: str) -> bool:
    """A condition's verdict on a result that is not a bool. An object with no truth value
    (a numpy array, a pandas Series) or a number unequal to itself (NaN of any kind: float,
    numpy, Decimal; `bool(nan)` is True) fails the node with a ConditionError naming its
    type: a trade must not go ahead on a figure that is neither true nor false. So does
    text: `"False"`, `"no"` or `"0"` would read as true."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        kind = type(value)
        raise ConditionError(
            f"condition {node_id!r} returned a {kind.__qualname__}, which is no verdict (any "
            "non-empty text reads as true); return a bool")
    try:
        is_nan = isinstance(value, Number) and bool(value != value)
        verdict = bool(value)
    except BaseException as exc:  # noqa: BLE001 - user objects may raise anything here
        kind = type(value)
        raise ConditionError(
            f"condition {node_id!r} returned a {kind.__module__}.{kind.__qualname__}, which "
            f"has no truth value ({type(exc).__name__}: {describe(exc)}); return a bool"
        ) from None
    if is_nan:
        kind = type(value)
        raise ConditionError(
            f"condition {node_id!r} returned a {kind.__module__}.{kind.__qualname__} NaN, "
            "which is neither true nor false; return a bool")
    return verdict


def _refuse_coroutine(value: types.CoroutineType[Any, Any, Any], node_id: str) -> None:
    """Close a coroutine a node function returned (unrun: no "never awaited" warning at
    collection) and fail the node, instead of publishing it as the node's output."""
    value.close()
    raise CoroutineReturned(
        f"node {node_id!r} returned a coroutine ({value.__qualname__}), which is never "
        "awaited: node functions run in threads; use a plain def") from None


#: Actors a pool grows to whenever all are busy, whatever its nodes do.
CORE_ACTORS = 16
#: Beyond the core, a pool grows only by as many actors as are blocked: inside one run for
#: longer than BLOCKED_S (exchange I/O, a hung call). More threads then help; for quick,
#: GIL-bound nodes they only add contention (measured: 16 actors beat 64 by ~15% on
#: trivial nodes). The supervisor checks every CHECK_S while runs wait.
BLOCKED_S = 0.01
CHECK_S = 0.002
#: While runs wait and the OS refuses threads, the growth check tries again this often
#: (rather than every CHECK_S): the runs must not wait for a later submit to re-arm it.
REFUSED_RETRY_S = 0.1


class StuckRuns:
    """Per node (workflow id, node id), its runs abandoned still running: written by the
    supervisor (abandon, retire), read by the node actors before they call a function."""

    __slots__ = ("counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, run: Any, change: int) -> None:
        key = (run.workflow_id, run.node_id)
        left = self.counts.get(key, 0) + change
        if left > 0:
            self.counts[key] = left
        else:
            self.counts.pop(key, None)

    def check(self, run: Any, gate: EmergencyGate) -> None:
        """Raise NodeStuck, instead of calling it, if `run`'s node is at the limit (it was
        admitted: its node_started is out; an action's committed intent is marked never
        called, so it needs no reconciliation)."""
        stuck = self.counts.get((run.workflow_id, run.node_id), 0)
        if stuck < self.limit:
            return
        if run.node.category == "action" and gate.intents is not None:
            gate.intents.not_started(run, f"{stuck} runs of the node were stuck")
        raise NodeStuck(f"node {run.node_id!r} not run: {stuck} of its runs are still stuck "
                        "past their timeout (a thread cannot be killed); it runs again once "
                        "one returns")


class Slot:
    """What one node actor is doing, for the pool's growth check: when its run began."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = 0.0


class NodePool:
    """The node actors of one supervisor, sharing one mailbox.

    Used only from the supervisor's thread. `busy` counts runs handed out and not yet
    answered; capacity is the actors not stuck in an abandoned run. When every actor is
    busy a new one starts while capacity is under CORE_ACTORS; beyond that the supervisor
    calls `grow()` every CHECK_S while runs wait, and the pool adds one actor per blocked
    one, up to `max_actors` (below the core, after actors were abandoned, one at once).
    While the OS refuses threads the check goes on every REFUSED_RETRY_S, so waiting runs
    start once threads can be made again.
    """

    def __init__(self, supervisor_inbox: Any, gate: EmergencyGate, *, max_actors: int,
                 max_stuck_runs: int) -> None:
        self._supervisor_inbox = supervisor_inbox
        self._gate = gate
        self.max_actors = max_actors
        self._core = min(CORE_ACTORS, max_actors)
        #: True while a growth check is scheduled with the supervisor.
        self.checking = False
        self._shared: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._put = self._shared.put
        self._lock = threading.Lock()
        self._members: dict[Slot, pykka.ActorRef[Any]] = {}
        #: Actors not stuck in an abandoned run.
        self.capacity = 0
        self.busy = 0
        self.started = 0
        self.abandoned = 0
        #: Abandoned runs still running, per node.
        self.stuck = StuckRuns(max_stuck_runs)
        #: Why the last actor start failed; None once one starts again.
        self._start_error: str | None = None

    def run(self, run: Any) -> bool:
        """Hand a run to the pool; True when runs wait and a growth check is due.

        Raises NodeThreadUnavailable when the pool has no actor and cannot start one."""
        if self.busy >= self.capacity and self.capacity < self._core:
            started = self._start_actor()
            if not started and self.capacity == 0:
                raise NodeThreadUnavailable(
                    f"node {run.node.id!r} not run: no node actor, and no thread for one "
                    f"({self._start_error})")
        busy = self.busy = self.busy + 1
        self._put(ReleasingEnvelope(RunNode(run)))
        return busy > self.capacity and not self.checking and self.capacity < self.max_actors

    def grow(self) -> float | None:
        """The periodic check: one more actor per blocked one while runs wait.

        Returns in how many seconds to check again (None: no more checks)."""
        backlog = self.busy - self.capacity
        room = self.max_actors - self.capacity
        if backlog <= 0 or room <= 0:
            self.checking = False
            return None
        if self.capacity < self._core:  # below the core (actors abandoned): no need to wait
            return CHECK_S if self._start_actor() else REFUSED_RETRY_S  # for them to block
        now = _perf()
        blocked = sum(1 for slot in self._members if slot.since and now - slot.since > BLOCKED_S)
        for _ in range(min(backlog, room, blocked)):
            if not self._start_actor():
                return REFUSED_RETRY_S  # threads are short: try again, less often
        return CHECK_S

    def check_due(self) -> bool:
        """Runs wait and no growth check is scheduled (after an abandon)."""
        return self.busy > self.capacity and not self.checking and self.capacity < self.max_actors

    def _start_actor(self) -> bool:
        """Start one more actor; False if the OS refused its thread (logged once for a
        run of refusals: the runs wait for the actors there are)."""
        slot = Slot()
        try:
            actor = NodeActor.start(self._shared, self._supervisor_inbox, self._gate,
                                    self._lock, slot, self.stuck)
        except Exception as exc:  # noqa: BLE001 - RuntimeError: can't start new thread
            refused_before, self._start_error = self._start_error, describe(exc)
            if refused_before is None and self.capacity:
                log.error("node_actor_start_failed", error=self._start_error,
                          node_actors=self.capacity, runs_in_flight=self.busy)
            return False
        if self._start_error is not None:
            self._start_error = None
            log.info("node_actor_start_recovered", node_actors=self.capacity + 1)
        self._members[slot] = actor
        self.capacity += 1
        self.started += 1
        return True

    def done(self) -> None:
        self.busy -= 1

    def abandon(self, run: Any) -> bool:
        """A started run overran. Unless its function has just returned (its reply is on the
        way), mark it abandoned: its actor is stuck in it and no longer counts as capacity
        (the growth check sees it blocked and starts a replacement); it retires itself if
        its function ever returns. Returns whether the run was abandoned."""
        with self._lock:
            if run.returned:
                return False
            run.abandoned = True
        self.busy -= 1
        self.capacity -= 1
        self.abandoned += 1
        self.stuck.add(run, 1)
        if self.busy > self.capacity:  # runs are waiting: replace the stuck actor now
            self._start_actor()
        return True

    def retired(self, run: Any) -> None:
        """An abandoned run's function came back; its actor has retired."""
        self._members.pop(run.slot, None)
        self.stuck.add(run, -1)

    @property
    def size(self) -> int:
        return len(self._members)

    def stop_all(self) -> None:
        for _ in range(self.capacity):
            self._put(stop_envelope())
        self._members = {}
        self.capacity = 0
