"""What a caller holds of an execution: its id, its handle, its result."""

from __future__ import annotations

import numbers
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from actors.copies import plain_copy
from actors.ending import ExecutionStatus
from actors.errors import WaitInCallback, failure_fields
from actors.eventlog import EventLog, current_subscription
from actors.logs import get_logger

if TYPE_CHECKING:
    from actors.journal_records import Ticket

_log = get_logger("tradeloom.execution")


@dataclass(frozen=True)  # (no slots: `private()` copies the instance dict in one call)
class ExecutionResult:
    """The outcome of one execution, as `handle.result()` returns it.

    `results` is read-only (a `types.MappingProxyType` over a fresh dict). Each
    `handle.result()` call gets its own copy of the outputs' plain data (`private()`):
    exact dicts, lists and tuples, as deep as they go, so one caller changing them changes
    nothing another caller, a node, a subscriber or the journal sees. Objects of other
    types inside (a DataFrame, a client, a Decimal) are the node's own, handed out as they
    are: copying them would run user code on the caller's thread, and a copy of an object
    that owns a resource (a file descriptor) is a second owner. Treat those as read-only.
    `node_report` (and so `nodes`) is copied too.
    """

    execution_id: str
    workflow_id: str
    status: str
    results: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0
    started_at: str | None = None
    ended_at: str | None = None
    #: node_id -> {"status", "attempts"} and "error"/"error_type" (the terminal event's
    #: `nodes`, read-only); `nodes` adds the outputs. Kept instead of the execution record,
    #: which goes (while its memory is still in cache) once it has ended.
    node_report: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", MappingProxyType(dict(self.results)))

    def private(self) -> ExecutionResult:
        """This result with its own copy of the outputs' plain data and of `node_report`
        (see the class docstring)."""
        # The instance dict copied, not `dataclasses.replace` (8 µs a call; this is once
        # per `result()`, a done callback's included): about 3 µs for three small outputs.
        clone = object.__new__(ExecutionResult)
        state = clone.__dict__
        state.update(self.__dict__)
        state["results"] = MappingProxyType({
            node_id: plain_copy(output) for node_id, output in self.results.items()})
        state["node_report"] = {node_id: dict(entry)
                                for node_id, entry in self.node_report.items()}
        return clone

    @property
    def ok(self) -> bool:
        return self.status == ExecutionStatus.COMPLETED

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """node_id -> {"status", "attempts", "outputs" | "error", "error_type"} (a fresh
        dict each time)."""
        results = self.results
        return {node_id: {**entry, "outputs": results[node_id]} if node_id in results
                else dict(entry) for node_id, entry in self.node_report.items()}


class ExecutionHandle:
    """A caller's view of one execution: its id now, its result later.

    The result is in (`done()`, `result()` returns) once the execution has ended AND every
    in-process subscription has been given its terminal event (or was closed), so a
    subscriber never learns of an end after the caller. Done callbacks run after that too,
    in the thread that completed the delivery (a subscription's), or else on the event
    log's done-callbacks thread (never a supervisor's or the journal writer's: a callback
    that waits must not hold up what it waits for). Keep them quick;
    `handle.result()` of the handle they are given returns at once there, but waiting for
    anything else the engine does from a subscription's thread raises `WaitInCallback`.
    """

    __slots__ = ("_callbacks", "_lock", "_log", "_result", "_seq", "_waiter", "execution_id",
                 "recorded", "workflow_id")

    def __init__(self, execution_id: str, workflow_id: str, log: EventLog | None = None) -> None:
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self._log = log
        #: With a journal: done once the execution's record is committed (the daemon's
        #: reply to a submit waits for it). None in memory mode, or for a refused submit.
        self.recorded: Ticket | None = None
        #: The seq of the terminal event; 0 for an execution that never had events.
        self._seq = 0
        self._result: ExecutionResult | None = None
        self._callbacks: list[Callable[[ExecutionHandle], None]] = []
        self._lock = threading.Lock()
        # Held until the execution has ended: the cheapest one-shot latch CPython offers.
        self._waiter = threading.Lock()
        self._waiter.acquire()

    def done(self) -> bool:
        return self._result is not None and self._delivered()

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Wait for the outcome; raises TimeoutError if it is not in within `timeout`."""
        if timeout is not None:  # checked first: a finished handle's answer must not hide it
            timeout = wait_limit(timeout)
        result = self._result
        if result is not None and self._delivered():
            return result.private()
        if current_subscription() is not None:
            raise WaitInCallback(
                f"handle.result() of {self.execution_id} cannot wait from a subscriber "
                "callback (its subscription would wait for itself); use "
                "handle.add_done_callback(fn) instead")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        if result is None:
            if not self._waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                raise TimeoutError(f"{self.execution_id} not finished within {timeout} s")
            self._waiter.release()
            result = self._result
            assert result is not None
        log = self._log
        if log is not None and self._seq:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not log.wait_delivered(self._seq, left):
                raise TimeoutError(f"{self.execution_id} finished, but its terminal event was "
                                   f"not given to every subscriber within {timeout} s")
        return result.private()

    def outcome(self) -> ExecutionResult | None:
        """The result as the engine keeps it, at once and not copied: None until `done()`.
        For reading its status and error (the engine's own callers do); its outputs are
        shared with the nodes: `result()` hands out copies."""
        return self._result if self.done() else None

    def add_done_callback(self, fn: Callable[[ExecutionHandle], None]) -> None:
        """Call `fn(handle)` once the result is in (see the class docstring for where)."""
        with self._lock:
            if self._result is None:
                self._callbacks.append(fn)
                return
        self._after_delivery([fn])

    def resolve(self, result: ExecutionResult, seq: int = 0) -> None:
        """Set the outcome (the engine does this, once; later calls are ignored). `seq` is
        the terminal event's: the result is in once subscribers were given it (0: the
        execution had no events, e.g. refused)."""
        with self._lock:
            if self._result is not None:
                return
            self._seq = seq  # before _result: readers go by _result
            self._result = result
            callbacks, self._callbacks = self._callbacks, []
        self._waiter.release()
        if callbacks:
            self._after_delivery(callbacks, here=False)

    def _delivered(self) -> bool:
        log = self._log
        return log is None or not self._seq or log.delivered(self._seq)

    def _after_delivery(self, callbacks: list[Callable[[ExecutionHandle], None]], *,
                        here: bool = True) -> None:
        """Run `callbacks` once the terminal event is delivered: here, now, if it is and
        `here`; else in the thread that delivers it. `here=False` is the supervisor's
        `resolve`: callbacks due at once go to the log's done-callbacks thread instead, so
        a callback that waits (for another execution, for a halt) cannot hold up the
        supervisor that has to run what it waits for."""
        def run() -> None:
            for fn in callbacks:
                try:
                    fn(self)
                except BaseException as exc:  # noqa: BLE001 - a callback must not break the engine
                    _log.error("done_callback_failed", execution_id=self.execution_id,
                               **failure_fields(exc))

        log = self._log
        if log is None or not self._seq:
            run()
        elif log.delivered(self._seq):
            if here:
                run()
            else:
                log.hand_off([run])
        else:
            log.when_delivered(self._seq, run, here=here)

    def __repr__(self) -> str:
        status = self._result.status if self._result else "pending"
        return f"ExecutionHandle({self.execution_id!r}, {status})"



def wait_limit(timeout: float) -> float | None:
    """A caller's `timeout=` (`result()`, `engine.stop()`) as a lock can wait it: NaN is
    refused naming the argument (a lock's own error does not), and a limit too long for a
    lock (`math.inf` included, an `OverflowError` there) means no limit, as None does."""
    # float and int first: `result(timeout=...)` of a finished handle checks it each call,
    # and the ABC's isinstance is the slow part.
    kind = type(timeout)
    if kind is not float and kind is not int and (
            kind is bool or not isinstance(timeout, numbers.Real)):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if timeout != timeout:
        raise ValueError("timeout must be a number of seconds or None, not nan")
    return None if timeout >= threading.TIMEOUT_MAX else timeout

