"""Provider output cache: `Node(cache_ttl_s=...)` reuses a provider's output across
executions of the same workflow for that long, where it would compute the same thing.
Entries are keyed by (workflow, node, key); `actors.guards.CacheGuard` makes the key (the
function, the inputs, the outputs the node depends on) and keeps the function in the entry.

An entry is a deep copy of a node's output, which may run user code when freed (its
`__del__`); the cache is used from the supervisors' threads, so what it lets go goes to the
engine's `Reaper` (actors/reaper.py), each entry reachable only from the list handed over.
"""

from __future__ import annotations

import threading
from typing import Any

from actors.clock import Clock
from actors.reaper import Reaper


class ProviderCache:
    def __init__(self, clock: Clock, *, max_entries: int = 10_000,
                 reaper: Reaper | None = None) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._reaper = reaper
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], tuple[float, Any]] = {}

    def get(self, workflow_id: str, node_id: str, inputs_key: str) -> tuple[bool, Any]:
        key = (workflow_id, node_id, inputs_key)
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if self._clock.monotonic() < entry[0]:
            return True, entry[1]
        del entry  # the dict's reference must be the last (see the module docstring)
        with self._lock:
            self._let_go([self._entries.pop(key, None)])
        return False, None

    def put(self, workflow_id: str, node_id: str, inputs_key: str, value: Any,
            ttl_s: float) -> None:
        now = self._clock.monotonic()
        key = (workflow_id, node_id, inputs_key)
        with self._lock:
            gone: list[object] = [self._entries.pop(key, None)]
            if len(self._entries) >= self._max_entries:
                gone.append(self._entries)
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self._max_entries:
                    gone.append(self._entries.pop(next(iter(self._entries))))
            self._entries[key] = (now + ttl_s, value)
            self._let_go(gone)

    def _let_go(self, gone: list[object]) -> None:
        if self._reaper is not None and any(item is not None for item in gone):
            self._reaper.bury(gone)
