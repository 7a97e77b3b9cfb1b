"""What a caller holds of an execution: its id, its handle, its result."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

import structlog

from actors.ending import ExecutionStatus

if TYPE_CHECKING:
    from actors.machine import Execution

_log = structlog.get_logger("tradeloom.execution")


class ExecutionIds:
    """`exec_<workflow_id>_<8 hex>` ids that never repeat within a process.

    A counter from a random start is passed through a bijection of 32-bit integers
    (multiply by an odd constant, xor a random salt), so ids look random but cannot clash
    until 2**32 have been issued. `taken` lets a journal veto ids used by earlier runs.
    """

    def __init__(self, taken: Callable[[str], bool] | None = None) -> None:
        seed = int.from_bytes(os.urandom(8), "little")
        self._counter = count(seed & 0xFFFFFFFF)
        self._salt = seed >> 32
        self._taken = taken

    def new(self, workflow_id: str) -> str:
        while True:
            n = (next(self._counter) * 0x9E3779B1 ^ self._salt) & 0xFFFFFFFF
            execution_id = f"exec_{workflow_id}_{n:08x}"
            if self._taken is None or not self._taken(execution_id):
                return execution_id


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """The outcome of one execution, as `handle.result()` returns it."""

    execution_id: str
    workflow_id: str
    status: str
    results: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0
    started_at: str | None = None
    ended_at: str | None = None
    #: The finished execution record; `nodes` is computed from it on demand.
    execution: Execution | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == ExecutionStatus.COMPLETED

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """node_id -> {"status", "attempts", "outputs" | "error", "error_type"}."""
        exe = self.execution
        if exe is None:
            return {}
        report = exe.node_summary()
        for node_id, entry in report.items():
            if node_id in exe.outputs:
                entry["outputs"] = exe.outputs[node_id]
        return report


class ExecutionHandle:
    """A caller's view of one execution: its id now, its result later."""

    __slots__ = ("_callbacks", "_lock", "_result", "_waiter", "execution_id", "workflow_id")

    def __init__(self, execution_id: str, workflow_id: str) -> None:
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self._result: ExecutionResult | None = None
        self._callbacks: list[Callable[[ExecutionHandle], None]] | None = []
        self._lock = threading.Lock()
        # Held until the result is in: the cheapest one-shot latch CPython offers.
        self._waiter = threading.Lock()
        self._waiter.acquire()

    def done(self) -> bool:
        return self._result is not None

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Wait for the outcome; raises TimeoutError if it is not in within `timeout`."""
        result = self._result
        if result is None:
            if not self._waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                raise TimeoutError(f"{self.execution_id} not finished within {timeout} s")
            self._waiter.release()
            result = self._result
            assert result is not None
        return result

    def add_done_callback(self, fn: Callable[[ExecutionHandle], None]) -> None:
        """Call `fn(handle)` once the result is in (at once if it already is)."""
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.append(fn)
                return
        fn(self)

    def resolve(self, result: ExecutionResult) -> None:
        """Set the outcome (the engine does this, once; later calls are ignored)."""
        with self._lock:
            if self._result is not None:
                return
            self._result = result
            callbacks, self._callbacks = self._callbacks, None
        self._waiter.release()
        for fn in callbacks or ():
            try:
                fn(self)
            except BaseException:  # noqa: BLE001 - a caller's callback must not break the engine
                _log.exception("done_callback_failed", execution_id=self.execution_id)

    def __repr__(self) -> str:
        status = self._result.status if self._result else "pending"
        return f"ExecutionHandle({self.execution_id!r}, {status})"
