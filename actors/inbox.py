"""The supervisor's inbox, on `queue.SimpleQueue`.

pykka's default inbox is a `queue.Queue` (a Condition per wait); the C SimpleQueue wakes a
thread for a fraction of that, and thread wake-ups are the engine's main cost.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from actors._compat import Envelope
from actors.messages import Tick

_TICK = Envelope(Tick())


class TimerInbox:
    """pykka's inbox protocol (put/get/empty) on a SimpleQueue, whose blocking `get()`
    returns a Tick when its owner's next timer is due."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.put = self._queue.put
        self.empty = self._queue.empty
        self.next_delay: Callable[[], float | None] = lambda: None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        q = self._queue
        if not block or not q.empty():  # busy: no need to work out how long to wait
            return q.get(False)
        try:
            return q.get(timeout=self.next_delay() if timeout is None else timeout)
        except queue.Empty:
            return _TICK
