"""One connection's share of a control server lane's worker(s).

A DEALER may pipeline, but at most `limit` of its requests on a lane (the urgent ops, or
the slow ones: replays, queries) are handed to that lane's workers at a time; up to
`max_parked` more wait in its own FIFO and go on, in order, as its earlier ones are
answered. Before, one DEALER pipelining 600 replays
put them all in the pool's queue, and every other client's `execution` waited behind them
for tens of seconds. Waiting requests do not count against the server's `max_pending` (the
requests with the workers, over all clients): a connection past its own `max_parked` is
answered `overloaded`, itself and no one else (once, its waiting backlog filled the shared
count and every other client's submit and cancel were refused). `max_parked_total` (a
count) and `max_parked_bytes` (the requests' sizes) bound the memory of all connections'
waiting requests together.

Used from the control server's socket thread only: no lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["PeerShare"]


class PeerShare:
    def __init__(self, limit: int, *, max_parked: int = 256, max_parked_total: int = 4096,
                 max_parked_bytes: int | None = None) -> None:
        if limit < 1 or max_parked < 0 or max_parked_total < 0 or (max_parked_bytes or 0) < 0:
            raise ValueError(f"limits must be >= 1 (limit) and >= 0, got {limit}, "
                             f"{max_parked}, {max_parked_total}, {max_parked_bytes}")
        self._limit = limit
        self._max_parked, self._max_parked_total = max_parked, max_parked_total
        self._max_parked_bytes = max_parked_bytes
        #: Peer -> its requests with the workers (a key goes when back to 0).
        self._running: dict[bytes, int] = {}
        #: Peer -> its requests waiting for their turn, oldest first, with their sizes.
        self._parked: dict[bytes, deque[tuple[Any, int]]] = {}
        self.parked = 0
        self.parked_bytes = 0

    def must_wait(self, peer: bytes) -> bool:
        """The peer's share is taken (or others of its requests wait already: FIFO)."""
        return self._running.get(peer, 0) >= self._limit or peer in self._parked

    def running(self, peer: bytes) -> int:
        """How many of the peer's requests are with the workers."""
        return self._running.get(peer, 0)

    def park(self, peer: bytes, job: Any, size: int = 0) -> bool:
        """Queue `job` (of `size` bytes) for the peer's next turn; False if its queue, or
        all of them together, is full."""
        waiting = self._parked.get(peer)
        if (len(waiting) if waiting else 0) >= self._max_parked or (
                self.parked >= self._max_parked_total) or (
                self._max_parked_bytes is not None
                and self.parked_bytes + size > self._max_parked_bytes):
            return False
        self._parked.setdefault(peer, deque()).append((job, size))
        self.parked += 1
        self.parked_bytes += size
        return True

    def start(self, peer: bytes) -> None:
        """One of the peer's requests goes to the workers now."""
        self._running[peer] = self._running.get(peer, 0) + 1

    def done(self, peer: bytes) -> Any:
        """One of `peer`'s jobs was answered: its next parked job, to hand to the workers
        now (it takes the finished one's place), or None."""
        waiting = self._parked.get(peer)
        if waiting:
            job, size = waiting.popleft()
            if not waiting:
                del self._parked[peer]
            self.parked -= 1
            self.parked_bytes -= size
            return job
        running = self._running.get(peer, 1) - 1
        if running > 0:
            self._running[peer] = running
        else:
            self._running.pop(peer, None)
        return None
