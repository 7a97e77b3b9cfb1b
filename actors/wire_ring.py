"""The wire payloads of recently committed events: the journal's packed bytes, reused.

The journal's writer packs every event with msgpack for its batch row, and those bytes are
exactly the event's payload on the wire (one msgpack map). Instead of the publisher packing
each event a second time (about 1.5 µs of the daemon's GIL per event), the writer hands its
bytes to the event log here after the commit and before the log's committed mark moves, so
a reader never sees a committed seq whose payload is not here yet; and what a live
subscriber receives is byte for byte what a replay reads back from the journal.

Slots are indexed like the log's own ring, `(seq - base) % size`, and hold `(seq, payload)`:
a slot a later lap overwrote says so by its seq, and the reader packs that event itself.
A slot every cursor has passed is cleared with the log's (`clear`), so a payload is kept
only while someone may still read it (a node's output may be large).

Threads: `keep` runs in the journal writer's thread, `clear` under the sequencing lock (the
log's `append`), `payload` in reader threads. Each is a slot store or load under the GIL;
the order of `keep` before `mark_committed` is what makes a committed seq's slot current.
"""

from __future__ import annotations

__all__ = ["Chunk", "WireRing"]

#: `(first seq, payloads in seq order)`: one journal batch row's events.
Chunk = tuple[int, list[bytes]]


class WireRing:
    """`(seq, payload)` slots for the log's `size` most recent seqs (allocated on first
    `keep`: memory mode never uses it)."""

    __slots__ = ("_base", "_size", "_slots")

    def __init__(self, base: int, size: int) -> None:
        self._base = base
        self._size = size
        self._slots: list[tuple[int, bytes] | None] = []

    def keep(self, chunks: list[Chunk]) -> None:
        """Store the payloads of committed events (the writer, before the committed mark)."""
        slots, size, base = self._slots, self._size, self._base
        if not slots:
            slots = self._slots = [None] * size
        for first, payloads in chunks:
            index = (first - base) % size
            for seq, payload in enumerate(payloads, first):
                slots[index] = (seq, payload)
                index += 1
                if index == size:
                    index = 0

    def payload(self, seq: int) -> bytes | None:
        """`seq`'s payload, or None when it was never kept or a later lap replaced it."""
        slots = self._slots
        if not slots:
            return None
        slot = slots[(seq - self._base) % self._size]
        if slot is None or slot[0] != seq:
            return None
        return slot[1]

    def clear(self, start: int, n: int) -> None:
        """Drop `n` slots from index `start` on (wrapping): the log cleared the same."""
        slots, size = self._slots, self._size
        if not slots or n <= 0:
            return
        if start + n <= size:
            slots[start:start + n] = [None] * n
        else:
            for i in range(n):
                slots[(start + i) % size] = None
