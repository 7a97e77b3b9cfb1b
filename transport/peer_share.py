"""One connection's share of the control server's worker pool (its slow ops).

A DEALER may pipeline as many requests as it likes, but at most `limit` of its slow ones
(replays, queries) are handed to the pool's workers at a time; the rest wait in its own
FIFO and go on, in order, as its earlier ones are answered. Before, one DEALER pipelining
600 replays put them all in the pool's queue, and every other client's `execution` waited
behind them for tens of seconds. Parked requests still count against the server's
`max_pending` (a full queue is `overloaded`, docs/protocol.md), so memory stays bounded.

Used from the control server's socket thread only: no lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["PeerShare"]


class PeerShare:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = limit
        #: Peer -> its requests with the workers (a key goes when back to 0).
        self._running: dict[bytes, int] = {}
        #: Peer -> its requests waiting for their turn, oldest first.
        self._parked: dict[bytes, deque[Any]] = {}
        self.parked = 0

    def admit(self, peer: bytes, job: Any) -> bool:
        """True: hand `job` to the workers now (counted as the peer's); False: parked."""
        running = self._running.get(peer, 0)
        if running < self._limit and peer not in self._parked:
            self._running[peer] = running + 1
            return True
        self._parked.setdefault(peer, deque()).append(job)
        self.parked += 1
        return False

    def done(self, peer: bytes) -> Any:
        """One of `peer`'s jobs was answered: its next parked job, to hand to the workers
        now (it takes the finished one's place), or None."""
        waiting = self._parked.get(peer)
        if waiting:
            job = waiting.popleft()
            if not waiting:
                del self._parked[peer]
            self.parked -= 1
            return job
        running = self._running.get(peer, 1) - 1
        if running > 0:
            self._running[peer] = running
        else:
            self._running.pop(peer, None)
        return None
