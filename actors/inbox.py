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

#: The longest single inbox wait. A deadline further off (a `timeout_s` or `stale_after_s`
#: of 1e12 meaning "never") would overflow the wait (`OverflowError`, which killed the
#: actor's thread); waking once an hour to a Tick with nothing due costs nothing.
MAX_WAIT_S = 3600.0


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
        if timeout is None:
            timeout = self.next_delay()
            if timeout is not None and timeout > MAX_WAIT_S:
                timeout = MAX_WAIT_S
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return _TICK
