"""The journal state machine's parts (tests/test_journal_stateful.py): who called which
action, the execution held in flight, and what a caller was told."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from actors.execution import ExecutionHandle


class ActionCalls:
    """Every call of the machine's action functions, by idempotency key (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def note(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)


@dataclass
class Held:
    """The execution whose action the machine holds in flight (at most one)."""

    handle: ExecutionHandle
    key: str
    n: int
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Recorded:
    """What a caller was told of an execution: what the journal must keep."""

    status: str
    error_type: str | None
    results: dict[str, Any]


def expected_results(kind: str, n: int, key: str, *, traded: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"price": {"price": 100.0 + n}, "check": kind != "skip"}
    if traded:
        results["trade"] = {"order": key, "n": n}
    return results
