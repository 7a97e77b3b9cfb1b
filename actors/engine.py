"""The engine: the root actor and its small facade.

    engine = Engine.start()                      # in memory, no sockets
    handle = engine.submit(workflow, inputs={...})
    result = handle.result(timeout=5)
    engine.ref.ask(Halt(reason="manual"))        # the same through actor messages
    engine.stop()

Everything is passed down explicitly from here: one sink, one gate, one breaker registry,
a few supervisors. Several engines can live in one process (tests do).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pykka

from actors.admission import HALTED, OVERLOADED, RUN, Admission
from actors.breaker import BreakerRegistry
from actors.cache import ProviderCache
from actors.clock import Clock
from actors.config import Config, start_args
from actors.durable import Durable
from actors.emergency import EmergencyGate, EmergencyState
from actors.emergency_actor import EmergencyActor
from actors.ending import Ending, ExecutionStatus
from actors.engine_actor import EngineActor
from actors.engine_emergency import EmergencyControls
from actors.engine_journal import JournalSide, journal_recovered
from actors.engine_lifecycle import EngineLifecycle
from actors.engine_workflows import WorkflowRegistry, check_optional_str, loaded_workflows
from actors.errors import ConfigError, EngineStopped
from actors.eventlog import DEFAULT_RING_SIZE  # events:
from actors.events import EventCallback, EventSink, Subscription
from actors.execution import ExecutionHandle, ExecutionResult
from actors.execution_ids import ExecutionIds
from actors.hooks import HaltHooks
from actors.logs import get_logger
from actors.machine import Execution
from actors.messages import (
    BroadcastHalt,
    EndExecutions,
    StartExecution,
    SupervisorStats,
    Tick,
)
from actors.reaper import Reaper
from actors.risk import RiskBook
from actors.supervisor import SupervisorActor
from actors.triggers import IntervalTriggers
from actors.version import VERSION
from actors.workflow import Workflow

if TYPE_CHECKING:
    from transport.engine_sockets import EngineSockets

log = get_logger("tradeloom.engine")
_RECENT_STATUSES = 1000


#: `submit(priority=...)` is a signed 64-bit integer (what the journal stores).
PRIORITY_LIMIT = 2 ** 63


class Engine(EmergencyControls, JournalSide, WorkflowRegistry, EngineLifecycle):
    """Facade over the engine's actors. Build it with `Engine.start()`."""

    def __init__(self, config: Config, clock: Clock,
                 on_halt: Sequence[Workflow] = (), *,
                 _event_ring_size: int = DEFAULT_RING_SIZE) -> None:  # events: test knob
        config = loaded_workflows(config)  # (a Config built by hand has only the refs)
        self._halt_hooks = HaltHooks(config, on_halt, submit=self._submit_hook)
        #: The journal, when `[daemon] data_dir` is set: opened (and recovered) first.
        self._durable = Durable.open(config, clock)
        try:
            self._build(config, clock, _event_ring_size)
        except BaseException:
            if self._durable is not None:
                self._durable.close()
            raise

    def _build(self, config: Config, clock: Clock, ring_size: int) -> None:
        durable = self._durable
        self.config = config
        self.clock = clock
        self._started_mono = time.monotonic()
        # The stop's state (actors/engine_lifecycle.py says what each is).
        self._stopped, self._stop_done = False, threading.Event()
        self._stopping_thread: int | None = None
        self._stop_cut_short = False
        #: The seq of the HALT `halt_on_unresolved_intents` started with (0: none).
        self._intents_halt_seq = 0
        #: The event stream and control socket, when started with `[transport]`.
        self._sockets: EngineSockets | None = None
        #: The config's `[[workflows]] every_s` schedule (started by `Engine.start`).
        self.triggers = IntervalTriggers(
            config.workflows, lambda wf, bot, strategy: self.submit(
                wf, bot_id=bot, strategy_id=strategy), monotonic=time.monotonic)
        self._closing: str | None = None
        # Reentrant: a signal handler's stop() may land while its thread holds it.
        self._lock = threading.RLock()
        self._register_entries(config)  # before any actor starts: a refusal leaves none
        #: execution id -> status, of the last _RECENT_STATUSES to end (what `cancel` answers
        #: for one that ended). Not their results: those hold every output, which may be
        #: big, and the engine must not keep a thousand executions' outputs alive.
        self._recent: OrderedDict[str, str] = OrderedDict()
        #: Executions ended, by (workflow_id, status): `execution_counts()` (the metrics).
        self._ended: Counter[tuple[str, str]] = Counter()
        recovery = durable.recovery if durable is not None else None
        self.sink = EventSink(clock, ring_size=ring_size,
                              first_seq=recovery.last_seq + 1 if recovery else 1)
        if recovery is not None:
            self.sink.restore_wseq(recovery.wseq)
        book = RiskBook(config.emergency.limits, warn_at=config.emergency.warn_at, clock=clock)
        self.gate = EmergencyGate(self.sink, book, clock)
        self.gate.hooks_configured = bool(self._halt_hooks.workflows)
        self._halt_hooks.gate = self.gate
        res = config.resilience
        self.breakers = BreakerRegistry(threshold=res.breaker_failure_threshold,
                                        reset_timeout_s=res.breaker_reset_timeout_s,
                                        clock=clock, sink=self.sink)
        self.admission = Admission(max_running=config.daemon.max_concurrent_executions,
                                   max_queued=config.daemon.max_queued_executions)
        self._ids = ExecutionIds() if durable is None else ExecutionIds(
            saved=durable.recovery.execution_ids, save=durable.journal.save_execution_ids,
            taken=durable.journal.has_execution, legacy=durable.recovery.legacy_ids)
        if durable is not None:
            durable.attach(sink=self.sink, gate=self.gate, breakers=self.breakers,
                           on_failure=self._journal_failed, on_recovered=journal_recovered,
                           on_still_failing=self._journal_still_failing)
        self._reaper = Reaper()  # (actors/reaper.py)
        cache = ProviderCache(clock, reaper=self._reaper)
        n = config.daemon.supervisors
        self._supervisors = [
            SupervisorActor.start(sink=self.sink, gate=self.gate, breakers=self.breakers,
                                  admission=self.admission, resilience=res, clock=clock,
                                  cache=cache, risk=self._risk, record=self._remember,
                                  node_actors=config.daemon.node_actors,
                                  max_stuck_runs=config.daemon.max_stuck_runs_per_node,
                                  reaper=self._reaper)
            for _ in range(n)]
        self._next_supervisor = itertools.cycle(self._supervisors).__next__
        self._emergency = EmergencyActor.start(
            gate=self.gate, supervisors=self._supervisors, admission=self.admission,
            on_halt=self._halt_hooks if self._halt_hooks.workflows else None)
        self.gate.on_self_halt = self._broadcast_self_halt
        clock.on_advance(self._tick)
        self.ref: pykka.ActorRef[EngineActor] = EngineActor.start(self)
        if durable is not None:
            self._recover(durable)
            self._run_owed_hooks(durable, self._halt_hooks)

    @classmethod
    def start(cls, config: Config | None = None, *, clock: Clock | None = None,
              on_halt: Sequence[Workflow] = (),
              _event_ring_size: int = DEFAULT_RING_SIZE,  # events: test knob
              _triggers_later: bool = False) -> Engine:  # (the daemon's, after its start)
        """Start an engine; with no config everything is in memory with default settings.

        `on_halt`: workflows run each time HALT is entered (after those of the config's
        `[[emergency.on_halt]]`), e.g. to cancel every resting order."""
        config, clock = start_args(config, clock)
        if config.daemon.cpu_affinity:
            try:
                os.sched_setaffinity(0, config.daemon.cpu_affinity)
            except (OSError, ValueError, OverflowError) as exc:
                raise ConfigError(f"daemon.cpu_affinity {list(config.daemon.cpu_affinity)}: "
                                  f"{exc}") from None
        engine = cls(config, clock, on_halt,
                     _event_ring_size=_event_ring_size)  # events:
        if config.transport is not None:  # no sockets unless configured (README)
            from transport.engine_sockets import EngineSockets  # (transport builds on actors)

            engine._sockets = EngineSockets.bind_for(engine, config.transport)
        if not _triggers_later:
            engine.triggers.start()
        log.debug("engine_started", supervisors=config.daemon.supervisors)
        return engine

    # -- executions (registering workflows: actors/engine_workflows.py) --------------------

    def submit(self, workflow: Workflow | str, inputs: Mapping[str, Any] | None = None, *,
               bot_id: str | None = None, strategy_id: str | None = None,
               priority: int = 0) -> ExecutionHandle:
        """Start an execution. A refused one (HALT, overloaded) comes back already resolved."""
        if self._stopped or self._closing:
            raise EngineStopped(self._closing or "the engine is stopped")
        wf, default_bot, default_strategy = self._resolve_workflow(workflow)
        if inputs is None:
            inputs = {}
        elif not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a mapping, not {type(inputs).__name__}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {type(priority).__name__}")
        if not -PRIORITY_LIMIT <= priority < PRIORITY_LIMIT:
            # The journal stores it as a SQLite INTEGER: a larger one failed every later
            # commit (and so halted the engine). Not printed: it may be too long to print.
            raise ValueError("priority must be in [-2**63, 2**63)")
        check_optional_str(bot_id, "bot_id")
        check_optional_str(strategy_id, "strategy_id")
        handle = ExecutionHandle(self._ids.new(wf.id), wf.id, self.sink.log)  # events:
        exe = Execution(execution_id=handle.execution_id, workflow=wf, inputs=dict(inputs),
                        bot_id=bot_id if bot_id is not None else default_bot,
                        strategy_id=strategy_id if strategy_id is not None else default_strategy,
                        priority=priority, handle=handle)
        # HALT is asked under the admission lock (a halt's drain takes it too).
        verdict = self.admission.admit(exe, halted=self._in_halt)
        if verdict is HALTED:
            self._resolve_refused(exe, "submit refused: the engine is in HALT", "Halted")
            return handle
        if verdict is not OVERLOADED and self._durable is not None:
            handle.recorded = self._durable.record_submitted(exe)
        if verdict is RUN:
            try:
                self._next_supervisor().tell(StartExecution(exe))
            except pykka.ActorDeadError:
                self.admission.finish(ExecutionStatus.CANCELLED)
                raise EngineStopped("the engine is stopped") from None
        elif verdict is OVERLOADED:
            self._resolve_refused(exe, "submit refused: the admission queue is full",
                                  "Overloaded")
        return handle

    def _in_halt(self) -> bool:
        return self.gate.state is EmergencyState.HALT

    def _resolve_refused(self, exe: Execution, error: str, error_type: str) -> None:
        handle = exe.handle
        assert handle is not None
        with self._lock:
            self._ended[(handle.workflow_id, ExecutionStatus.REFUSED.value)] += 1
            self._note_recent(handle.execution_id, ExecutionStatus.REFUSED.value)
        if self._durable is not None:  # `execution(id)` answers for it too
            self._durable.record_refused(exe.id, exe.workflow.id, exe.shown_inputs, exe.bot_id,
                                         exe.strategy_id, exe.priority, error, error_type)
        handle.resolve(ExecutionResult(
            execution_id=handle.execution_id, workflow_id=handle.workflow_id,
            status=ExecutionStatus.REFUSED.value, error=error, error_type=error_type))

    def cancel(self, execution_id: str) -> str:
        """Cancel an execution; returns its status afterwards (`cancelled` if it was live),
        with a journal once its ending is committed: a kill -9 right after the answer must
        not turn the `cancelled` it gave into `interrupted`."""
        if not isinstance(execution_id, str):  # (123 was "no such execution", None a TypeError)
            raise TypeError(f"execution_id must be a str, not {type(execution_id).__name__}")
        self._refuse_wait_in_callback("Cancel")
        queued = self.admission.remove_queued(execution_id)
        cancelled = Ending.cancelled("by request")
        try:
            if queued is not None:
                queued.ending_on_start = cancelled
                # Asked, not told: it has ended (its terminal event sequenced) on return.
                self._next_supervisor().ask(StartExecution(queued), timeout=5.0)
                ended = 1
            else:
                end = EndExecutions(cancelled, execution_id=execution_id)
                ended = sum(int(sup.ask(end, block=True, timeout=5.0))
                            for sup in self._supervisors)
        except pykka.ActorDeadError:  # stopped (or stopping): pykka's error is no answer
            raise EngineStopped("the engine is stopped") from None
        if ended:
            if self._durable is not None:
                self._durable.wait_commit()
            return ExecutionStatus.CANCELLED.value
        status = self._recent.get(execution_id)
        return status if status is not None else self._journaled_status(execution_id)

    def execution_counts(self) -> dict[tuple[str, str], int]:
        """How many executions ended since this engine started, by (workflow_id, status):
        refused submits included, and those the last process left open as `interrupted`."""
        with self._lock:
            return dict(self._ended)

    def _remember(self, result: ExecutionResult) -> None:
        # Once per finished execution, on its supervisor's thread.
        with self._lock:
            self._ended[(result.workflow_id, result.status)] += 1
            self._note_recent(result.execution_id, result.status)

    def _note_recent(self, execution_id: str, status: str) -> None:
        # Under self._lock: what `cancel` answers for an execution that has ended.
        self._recent[execution_id] = status
        if len(self._recent) > _RECENT_STATUSES:
            self._recent.popitem(last=False)

    # -- events, emergency, status ---------------------------------------------------------

    def subscribe(self, callback: EventCallback, *, types: Iterable[str] | None = None,
                  workflow_id: str | None = None,
                  on_gap: EventCallback | None = None) -> Subscription:  # events: on_gap
        """Call `callback(event)` for every matching event from now on, in seq order.

        Each subscription has its own thread and reads the ordered log from its own cursor,
        off the sequencing lock: a slow callback delays only itself (`handle.result()`
        waits until every subscription was given the terminal event). Each call gets its
        own copy of the event (the wire payload map). A subscription that falls more than
        the in-memory log behind gets a `gap` event naming the lost seqs (to `on_gap` if
        given). What a callback raises is logged and counted (`sub.failures`).
        From a callback, `status()`, `submit()` and `subscribe()`/`close()` work; calls that
        wait for the engine (`halt()`, `cancel()`, `handle.result()`) raise
        `WaitInCallback`: send messages instead, e.g. `engine.ref.tell(Halt(reason=...))`.
        After `stop()`: `EngineStopped` (nothing would come, and its thread would linger).
        """
        if self._stopped:
            raise EngineStopped("the engine is stopped")
        return self.sink.subscribe(callback, types=types, workflow_id=workflow_id,
                                   on_gap=on_gap)

    def status(self) -> dict[str, Any]:
        with self.sink.lock:
            limits = self.gate.book.stats()
        last_seq = self.sink.log.committed_seq  # events: what readers may see
        return {
            "state": self.gate.state.value,
            "reason": self.gate.reason,
            "running": self.admission.running,
            "queued": self.admission.queued,
            "workflows": self.workflows,
            "breakers": self.breakers.states(),
            "limits": {name: {"value": s["value"], "threshold": s["threshold"],
                              "utilization": s["utilization"]} for name, s in limits.items()},
            "last_seq": last_seq,
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "counts": dict(self.admission.counts),
            "version": VERSION,
            "journal": self._durable.journal.stats() if self._durable is not None else None,
        }

    @property
    def endpoints(self) -> dict[str, str] | None:
        """The addresses `[transport]` bound, `{"events", "control"}`, with the ports the OS
        picked for `tcp://127.0.0.1:*`; None without `[transport]`."""
        return dict(self._sockets.endpoints) if self._sockets is not None else None

    def supervisor_stats(self) -> list[dict[str, Any]]:
        """Each supervisor's counters; `EngineStopped` once it has stopped (a metrics
        scrape may still be in flight at the daemon's stop)."""
        try:
            return [dict(sup.ask(SupervisorStats(), block=True, timeout=5.0))
                    for sup in self._supervisors]
        except pykka.ActorDeadError:
            raise EngineStopped("the engine is stopped") from None

    def _broadcast_self_halt(self, reason: str) -> None:
        # The gate is in HALT already; a stopped kill switch has nothing left to end.
        with contextlib.suppress(pykka.ActorDeadError):
            self._emergency.tell(BroadcastHalt(reason))

    def _tick(self) -> None:
        for sup in self._supervisors:
            if sup.is_alive():
                sup.tell(Tick())
        if self._emergency.is_alive():  # the stale-feed watchdog, under a manual clock
            self._emergency.tell(Tick())

    # -- on-halt hooks ---------------------------------------------------------------------

    def _submit_hook(self, workflow: Workflow, inputs: Mapping[str, Any],
                     recorded: Callable[[str], None]) -> ExecutionHandle:
        """Start `workflow` as an execution exempt from the halt: it starts in HALT, the
        halt broadcast does not end it, and its actions count as reduces_risk. It takes a
        running slot beyond max_concurrent_executions: a full engine never holds it back.
        `recorded(execution_id)` is called before it starts (see actors/hooks.py)."""
        if self._stopped:
            raise EngineStopped("the engine is stopped")
        handle = ExecutionHandle(self._ids.new(workflow.id), workflow.id,
                                 self.sink.log)  # events:
        exe = Execution(execution_id=handle.execution_id, workflow=workflow,
                        inputs=dict(inputs), bot_id=None, strategy_id=None, priority=0,
                        handle=handle)
        exe.exempt_from_halt = True
        if self._durable is not None:
            handle.recorded = self._durable.record_submitted(exe)
        recorded(exe.id)
        self.admission.force_admit()
        try:
            self._next_supervisor().tell(StartExecution(exe))
        except pykka.ActorDeadError:
            self.admission.finish(ExecutionStatus.CANCELLED)
            raise EngineStopped("the engine is stopped") from None
        return handle
