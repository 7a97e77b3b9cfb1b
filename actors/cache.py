"""Provider output cache: `Node(cache_ttl_s=...)` reuses a provider's output across
executions of the same workflow with the same inputs, for that long. Entries are keyed by
(workflow, node, inputs key); `actors.guards.CacheGuard` makes the inputs key."""

from __future__ import annotations

import threading
from typing import Any

from actors.clock import Clock


class ProviderCache:
    def __init__(self, clock: Clock, *, max_entries: int = 10_000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], tuple[float, Any]] = {}

    def get(self, workflow_id: str, node_id: str, inputs_key: str) -> tuple[bool, Any]:
        key = (workflow_id, node_id, inputs_key)
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self._clock.monotonic() >= expires:
            with self._lock:
                self._entries.pop(key, None)
            return False, None
        return True, value

    def put(self, workflow_id: str, node_id: str, inputs_key: str, value: Any,
            ttl_s: float) -> None:
        now = self._clock.monotonic()
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self._max_entries:
                    self._entries.pop(next(iter(self._entries)))
            self._entries[(workflow_id, node_id, inputs_key)] = (now + ttl_s, value)
