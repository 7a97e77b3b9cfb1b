"""How many bytes of large replies each control peer has not taken yet.

A DEALER may pipeline requests and never read the replies. libzmq then queues them for it,
up to the socket's high-water mark in *messages* (10,000): 10,000 replays of 2-16 MiB each
is tens of GB, from one peer that only has to keep asking. The control server sends large
replies zero-copy with a `zmq.MessageTracker`, which is done once libzmq has let go of the
buffer (written to the peer's TCP socket, or dropped with the peer's connection). The
bytes of a peer's replies whose trackers are not done yet are what that peer holds in this
process; past `max_bytes`, the control server answers it `overloaded` instead of sending
another large reply.

Used by the control server's socket thread only.
"""

from __future__ import annotations

import zmq

#: Past this many peers with something tracked, every peer is swept for finished replies
#: (a peer that went away is otherwise only looked at when it is sent to again).
SWEEP_PEERS = 256


class ReplyBudget:
    """Per peer identity, the tracked replies libzmq still holds (see the module doc)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held: dict[bytes, list[tuple[zmq.MessageTracker, int]]] = {}

    def held(self, peer: bytes) -> int:
        """Bytes of `peer`'s replies not yet taken (after dropping the finished ones)."""
        replies = self._held.get(peer)
        if replies is None:
            return 0
        replies[:] = [(tracker, size) for tracker, size in replies if not tracker.done]
        if not replies:
            del self._held[peer]
            return 0
        return sum(size for _, size in replies)

    def allows(self, peer: bytes, size: int) -> bool:
        """Whether a reply of `size` bytes may go to `peer` now (one always may when it
        holds nothing)."""
        held = self.held(peer)
        return held == 0 or held + size <= self.max_bytes

    def track(self, peer: bytes, tracker: zmq.MessageTracker, size: int) -> None:
        if tracker.done:
            return
        self._held.setdefault(peer, []).append((tracker, size))
        if len(self._held) > SWEEP_PEERS:
            for known in list(self._held):
                self.held(known)
