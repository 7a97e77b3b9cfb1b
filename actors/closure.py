"""A workflow's transitive closure: each node's ancestors (what its `ctx.upstream` holds)
and descendants (what a false condition, a failure or reduce_only skips).

Kept as one bitset per node (a Python int, bit j = node j): a chain of n nodes has n²/2
(node, ancestor) pairs, and as tuples a chain of 8,000 nodes took 4.8 s and 900 MB to
build; as bitsets it is 16 MB (`bench/workflow_size.py`). Workflows of ordinary size
(`CACHED_PAIRS_MAX`) also keep the answers as tuples, read on the supervisor's hot path
with one C-level lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import compress, count

#: Up to this many (node, ancestor) pairs in all (a chain of ~360 nodes), the answers are
#: kept as tuples; past it they are read off the bitsets when asked.
CACHED_PAIRS_MAX = 65_536
#: A bitset's binary text as bytes of 0 and 1, which `compress` reads as its selectors
#: in C (no call per bit, as `"1".__eq__` would make).
_BITS = bytes.maketrans(b"01", b"\x00\x01")


def members(bits: int) -> list[int]:
    """The indexes of the bits set in `bits`, ascending, picked in C off its binary text
    (bit by bit in Python would be n big-int shifts for n nodes)."""
    return list(compress(count(), _selectors(bits)))


def _selectors(bits: int) -> bytes:
    """Byte j is 1 if bit j is set: the binary text reversed (least significant first)."""
    return bin(bits)[:1:-1].encode().translate(_BITS)


class Closure:
    """`ancestor_ids(i)`: the ids of every node that node `i` depends on, directly or not, in
    node order. `descendants(i)`: the indexes of every node that depends on node `i`, in
    topological order (the order their skip events go out)."""

    __slots__ = ("_down", "_ids", "_position", "_up", "ancestor_ids", "descendants")

    def __init__(self, ids: Sequence[str], deps: Sequence[Sequence[int]],
                 dependents: Sequence[Sequence[int]], order: Sequence[int]) -> None:
        up = [0] * len(ids)
        for i in order:
            bits = 0
            for d in deps[i]:
                bits |= up[d] | (1 << d)
            up[i] = bits
        down = [0] * len(ids)
        for i in reversed(order):
            bits = 0
            for j in dependents[i]:
                bits |= down[j] | (1 << j)
            down[i] = bits
        self._up, self._down, self._ids = up, down, tuple(ids)
        self._position = {node: pos for pos, node in enumerate(order)}
        self.ancestor_ids: Callable[[int], tuple[str, ...]] = self._ancestor_ids
        self.descendants: Callable[[int], tuple[int, ...]] = self._descendants
        if sum(bits.bit_count() for bits in up) <= CACHED_PAIRS_MAX:
            self.ancestor_ids = tuple(map(self._ancestor_ids, range(len(ids)))).__getitem__
            self.descendants = tuple(map(self._descendants, range(len(ids)))).__getitem__

    def _ancestor_ids(self, i: int) -> tuple[str, ...]:
        return tuple(compress(self._ids, _selectors(self._up[i])))

    def _descendants(self, i: int) -> tuple[int, ...]:
        return tuple(sorted(members(self._down[i]), key=self._position.__getitem__))
