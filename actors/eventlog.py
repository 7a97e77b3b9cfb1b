"""The ordered event log that every consumer reads from its own cursor.

Every sequenced event is appended here by the sink, under the sequencing lock, and nothing
else happens under that lock: no I/O, no callbacks. Every consumer is a cursor over the
log that reads, off the lock and in seq order, only what is committed:

    sink (sequencing lock) --append--> ring (+ store) --committed_seq--> cursors --> callbacks

- In memory mode an appended batch is committed at once, and the log keeps the last
  `ring_size` events in a ring. With a durable store attached (the journal), `append` also
  hands the batch to the store (still no I/O: it queues it) and the store's writer thread
  calls `mark_committed(seq)` once it is on disk; readers never see past that mark.
- Each in-process subscription (`actors.subscription`) owns a daemon thread and a cursor
  (`next_seq`). A slow callback delays only its own subscription. One that falls behind
  the ring reads from the store, or, in memory mode, gets a `gap` notice naming the lost
  seq range: never a silent loss.
- Each event is packed with msgpack once (lazily, by the first cursor that needs it) and
  every subscriber gets its own unpacked copy: no subscriber can change what another sees.
  Only the values that can be mutated (maps, lists, anything not a str, int, float, bool
  or None) are packed and unpacked; the immutable scalars are shared. The copy equals
  `unpackb(packb(event))`, the wire payload map, at about half the cost.
- `delivered(seq)`: `seq` is committed and every live subscription's cursor is past it.
  `when_delivered(seq, fn)` registers a watcher (a heap ordered by seq) that runs once
  that is true, in the thread that made it true; `handle.result()` waits on one (a latch
  it releases), done callbacks are one. A cursor checks the heap's top after each move, so
  a waiter is woken once, when its seq is passed, not on every event.

Locks: `append` runs under the sequencing lock and never takes `_mutex`; nothing holding
`_mutex` takes the sequencing lock, waits on I/O or calls user code. An idle cursor thread
sleeps on its own doorbell (the writer rings it when it sees the cursor asleep); waiters
sleep on their own latch.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from actors.done_callbacks import DoneCallbackThread, run_all
from actors.logs import get_logger
from actors.packing import pack, pack_plain, unpack
from actors.subscription import (
    Event,
    EventCallback,
    LogReader,
    Subscription,
    current_subscription,
    iso_utc,
)
from actors.wire_ring import WireRing

__all__ = ["DEFAULT_RING_SIZE", "DRAIN_S", "Event", "EventCallback", "EventLog",
           "EventStore", "LogReader", "Subscription", "current_subscription", "iso_utc"]

#: Events kept in memory for cursors that lag (memory mode: older ones become a gap).
DEFAULT_RING_SIZE = 100_000
#: engine.stop() gives subscriptions this long, in all, to take the final events.
DRAIN_S = 2.0
#: A cursor reads at most this many events per pass.
_BATCH = 1024
#: Packed bytes are cached per seq in this many slots (recent events: where cursors are).
_PACKED_SLOTS = 8192

#: Values shared between copies: immutable, and msgpack carries them as they are.
_SCALARS = frozenset({str, int, float, bool, type(None)})

log = get_logger("tradeloom.events")


class EventStore(Protocol):
    """A durable home for the log (the journal): what `EventLog.attach_store` takes."""

    def append(self, events: list[Event]) -> None:
        """Take a sequenced batch. Called under the sequencing lock: queue it, no I/O. Once
        it is durable, call `log.mark_committed(last seq)` from the writer thread."""

    def read_events(self, since_seq: int, limit: int) -> list[Event]:
        """Up to `limit` committed events from `since_seq` on, seq ascending, as fresh
        dicts the caller owns (a missing range, e.g. pruned, is reported as a gap)."""
        ...


class EventLog:
    """The ring of recent events, the committed mark, and the live subscriptions."""

    def __init__(self, *, first_seq: int = 1, ring_size: int = DEFAULT_RING_SIZE,
                 wall: Callable[[], float] = time.time,
                 lock: threading.RLock | None = None) -> None:
        if ring_size < 1:
            raise ValueError(f"ring_size must be >= 1, got {ring_size}")
        self._base = first_seq
        self._size = ring_size
        #: The sequencing lock `append` is called under (subscribe registers under it).
        self._sequencing = lock if lock is not None else threading.RLock()
        # Event with seq s sits at (s - base) % size. It is filled only while someone may
        # read it (a subscription, a store) and allocated then; a slot every cursor has
        # passed is cleared: memory is kept for lagging cursors only.
        self._ring: list[Event | None] = []
        self._cleared = first_seq  # every slot below this seq is cleared or overwritten
        # seq -> its mutable values' keys and those values packed as one array, kept for
        # the next cursor.
        self._packed: list[tuple[int, list[str], bytes] | None] = (
            [None] * min(ring_size, _PACKED_SLOTS))
        #: Committed events' wire payloads, from the journal's writer (`wire.keep`).
        self.wire = WireRing(first_seq, ring_size)
        #: The wall clock (gap notices are stamped with it).
        self.wall = wall
        self._store: EventStore | None = None
        #: The last seq appended, and the last one readers may see (<= appended_seq).
        self.appended_seq = first_seq - 1
        self.committed_seq = first_seq - 1
        self._mutex = threading.Lock()
        #: (seq, n, fn): run fn once delivered(seq). Pushed under _mutex; its top is read
        #: without it (a push is one C call under the GIL).
        self.watchers: list[tuple[int, int, Callable[[], None], bool]] = []
        self._watcher_ids = itertools.count()
        #: Done callbacks made due by a store's commit run there, never on its writer.
        self._done_callbacks = DoneCallbackThread()
        #: Live subscriptions (replaced, never mutated: read without the mutex).
        self.subscriptions: tuple[Subscription, ...] = ()
        #: Live readers (the publisher): they keep events too, but nobody waits for them.
        self._readers: tuple[LogReader, ...] = ()

    # -- writing (the sink, under the sequencing lock) -------------------------------------

    def append(self, events: list[Event]) -> None:
        """Add a sequenced batch (gapless seqs, ascending). No I/O, no callbacks."""
        if not events:
            return
        last: int = events[-1]["seq"]
        self.appended_seq = last
        subs, readers, store = self.subscriptions, self._readers, self._store
        if subs or readers or store is not None:
            self._write(events)
        elif self._ring:
            self._ring = []  # nobody reads: let it all go (a subscriber starts after it)
        if store is not None:
            store.append(events)
        else:
            self.committed_seq = last
            for sub in subs:
                if sub.asleep:
                    sub.wake()
            for reader in readers:
                if reader.asleep:
                    reader.wake()
        if self._ring:
            floor = self.committed_seq + 1
            cursors: tuple[Subscription | LogReader, ...] = (*subs, *readers) if readers else subs
            for cursor in cursors:
                if cursor.next_seq < floor:
                    floor = cursor.next_seq
            if floor > self._cleared:
                self._clear_below(floor)

    def _write(self, events: Sequence[Event]) -> None:
        ring, size = self._ring, self._size
        if not ring:
            ring = self._ring = [None] * size
            self._cleared = events[0]["seq"]
        n = len(events)
        start = (events[0]["seq"] - self._base) % size
        if start + n <= size:
            ring[start:start + n] = events
        else:  # it wraps (a batch larger than the ring keeps its tail)
            for i, event in enumerate(events):
                ring[(start + i) % size] = event

    def _clear_below(self, floor: int) -> None:
        """Drop the events every cursor has passed (only the writer touches the ring)."""
        ring, size = self._ring, self._size
        # Below appended_seq - size + 1 the slots hold newer events already.
        first = max(self._cleared, self.appended_seq - size + 1)
        start = (first - self._base) % size
        # n <= 0: a cursor is more than a ring behind, the slots below it hold newer events
        # (and a negative slice stop would count from the end: the ring would shrink).
        n = floor - first
        if n > 0:
            if start + n <= size:
                ring[start:start + n] = [None] * n
            else:
                for i in range(n):
                    ring[(start + i) % size] = None
            self.wire.clear(start, n)
        self._cleared = floor

    def attach_store(self, store: EventStore) -> None:
        """From now on a batch is committed when `store` says so (`mark_committed`), and a
        cursor that falls behind the ring reads from `store` instead of getting a gap."""
        self._store = store

    def mark_committed(self, seq: int) -> None:
        """The store made every event up to `seq` durable (called from its writer thread,
        and quick: waiters are woken here, done callbacks handed to another thread)."""
        with self._mutex:
            if seq <= self.committed_seq:
                return
            self.committed_seq = min(seq, self.appended_seq)
            due = self._pop_due_locked()
        cursors: tuple[Subscription | LogReader, ...] = (*self.subscriptions, *self._readers)
        for cursor in cursors:
            if cursor.asleep:
                cursor.wake()
        self._run_due(due, here=False)

    def _run_due(self, due: list[tuple[Callable[[], None], bool]], *, here: bool) -> None:
        """Run due watchers: all of them here, or (`here=False`: the store's writer, a
        supervisor) only the quick ones, the rest handed to the log's own thread."""
        if here:
            run_all([fn for fn, _ in due])
            return
        run_all([fn for fn, quick in due if quick])
        slow = [fn for fn, quick in due if not quick]
        if slow:
            self.hand_off(slow)

    def hand_off(self, fns: list[Callable[[], None]]) -> None:
        """Run `fns` on the log's own thread (made on first use), in order: for done
        callbacks that would otherwise run on a thread they could hold up (the store's
        writer, a supervisor)."""
        self._done_callbacks.run_later(fns)

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, callback: EventCallback, *, types: Iterable[str] | None = None,
                  workflow_id: str | None = None,
                  on_gap: EventCallback | None = None) -> Subscription:
        """A new cursor from the next committed event on, with its own thread."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if on_gap is not None and not callable(on_gap):
            raise TypeError(f"on_gap must be callable, got {type(on_gap).__name__}")
        if isinstance(types, str):
            raise TypeError("types must be a collection of event types, not one string")
        try:
            wanted = frozenset(types) if types is not None else None
        except TypeError:
            raise TypeError("types must be a collection of event types, not "
                            f"{type(types).__name__}") from None
        # Under the sequencing lock: the next append sees this cursor and keeps its events.
        with self._sequencing, self._mutex:
            sub = Subscription(self, callback, wanted, workflow_id, on_gap,
                               self.committed_seq + 1)
            self.subscriptions = (*self.subscriptions, sub)
        sub.start()
        return sub

    def reader(self, start_seq: int | None = None) -> LogReader:
        """A pull cursor (the publisher's source) from `start_seq` (default: the next
        committed event)."""
        with self._sequencing, self._mutex:  # as subscribe: the next append keeps events
            reader = LogReader(self, self.committed_seq + 1 if start_seq is None
                               else start_seq)
            self._readers = (*self._readers, reader)
        return reader

    def remove_reader(self, reader: LogReader) -> None:
        with self._mutex:
            self._readers = tuple(r for r in self._readers if r is not reader)
        reader.wake()

    def close_all(self, timeout: float = DRAIN_S) -> list[Subscription]:
        """Let every subscription take what is committed now (waiting `timeout` in all),
        then close them; returns those whose thread was still busy (abandoned: daemons)."""
        deadline = time.monotonic() + timeout
        me = current_subscription()
        if me is not None:
            me.stop()  # called from a callback: its own thread cannot drain
        self.wait_delivered(self.committed_seq, timeout)
        subs = self.subscriptions
        for sub in subs:
            sub.stop()
        abandoned = []
        for sub in subs:
            if not sub.join(max(0.0, deadline - time.monotonic())):
                abandoned.append(sub)
                log.warning("subscription_abandoned", subscription=sub.name,
                            next_seq=sub.next_seq)
        self._done_callbacks.close()
        return abandoned

    def remove(self, sub: Subscription) -> None:
        """`sub` reads no more (`sub.stop()` calls this): nobody waits for it any more."""
        with self._mutex:
            self.subscriptions = tuple(s for s in self.subscriptions if s is not sub)
            due = self._pop_due_locked()
        run_all([fn for fn, _ in due])

    # -- delivery --------------------------------------------------------------------------

    def delivered(self, seq: int) -> bool:
        """True once `seq` is committed and every live subscription is past it."""
        if seq > self.committed_seq:
            return False
        for sub in self.subscriptions:  # noqa: SIM110 - all() over a generator costs twice this
            if sub.next_seq <= seq:
                return False
        return True

    def wait_delivered(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until `delivered(seq)`; False if `timeout` passed first. `seq` must be
        appended already (a watcher for a later seq is only checked as cursors move)."""
        if self.delivered(seq):
            return True
        latch = threading.Lock()
        latch.acquire()
        self.when_delivered(seq, latch.release, quick=True)
        return latch.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))

    def when_delivered(self, seq: int, fn: Callable[[], None], *, quick: bool = False,
                       here: bool = True) -> None:
        """Call `fn()` once `delivered(seq)`: now, in this thread, if it already is; else
        in the thread that makes it so (a cursor's, a closer's), or, when a store's commit
        does, on a thread of the log's (a `quick` fn, e.g. a latch, in the store's thread).
        `here=False` (a supervisor's thread): whatever is due at once, this `fn` or another
        watcher that a cursor's move left for this call to pop, runs on the log's thread
        too, unless quick: a done callback that waits must not hold up a supervisor."""
        with self._mutex:
            # Pushed before looking at the cursors, which look at the heap after moving:
            # one of the two sees the other's write, so no wake-up is lost.
            heapq.heappush(self.watchers, (seq, next(self._watcher_ids), fn, quick))
            due = self._pop_due_locked()
        self._run_due(due, here=here)

    def passed(self, next_seq: int) -> None:
        """A cursor moved to `next_seq`: run the watchers that became due, if any may have."""
        try:  # the top, read without the mutex (a push or a pop is one C call)
            if self.watchers[0][0] >= next_seq:
                return
        except IndexError:
            return
        with self._mutex:
            due = self._pop_due_locked()
        run_all([fn for fn, _ in due])

    def _pop_due_locked(self) -> list[tuple[Callable[[], None], bool]]:
        watchers = self.watchers
        if not watchers:
            return []
        floor = self.committed_seq + 1  # no cursor is past it
        for sub in self.subscriptions:  # (a loop: min() over a generator costs twice this)
            if sub.next_seq < floor:
                floor = sub.next_seq
        limit = floor - 1
        due = []
        while watchers and watchers[0][0] <= limit:
            _, _, fn, quick = heapq.heappop(watchers)
            due.append((fn, quick))
        return due

    # -- reading (cursor threads) ----------------------------------------------------------

    def read(self, start: int) -> tuple[tuple[int, int] | None, list[Event], bool]:
        """Committed events from `start` on (a batch), for a cursor: (gap, events, fresh).
        `gap`: (first, last) seqs lost before `events`; `fresh`: the events came from the
        store as the caller's own dicts (else they are the log's: copy before handing on)."""
        end = min(self.committed_seq, start + _BATCH - 1)
        if end < start:
            return None, [], False
        ring, size, base = self._ring, self._size, self._base
        if len(ring) != size:  # dropped: only a cursor removed already can see that
            return (start, end), [], False
        events = []
        for seq in range(start, end + 1):
            event = ring[(seq - base) % size]
            if event is None or event["seq"] != seq:
                break  # overwritten while we read: the next pass reports it
            events.append(event)
        if events:
            return None, events, False
        # `start` is no longer in the ring: this cursor fell behind it.
        if self._store is not None:
            stored = [e for e in self._store.read_events(start, end - start + 1)
                      if start <= e["seq"] <= end]
            if stored:
                first = stored[0]["seq"]
                return ((start, first - 1) if first > start else None), stored, True
        oldest = max(self.appended_seq - size + 1, start + 1)
        return (start, oldest - 1), [], False

    def copy(self, seq: int, event: Event, packer: Any) -> Event:
        """A subscriber's own copy of `event`: its scalars shared, the rest packed once
        (together, per event, cached for the other cursors) and unpacked for this one."""
        if _SCALARS.issuperset(map(type, event.values())):
            return dict(event)  # most events: nothing to pack (the test runs in C)
        cache = self._packed
        slot = seq % len(cache)
        cached = cache[slot]
        if cached is not None and cached[0] == seq:
            _, keys, data = cached
        else:
            keys = [key for key, value in event.items() if type(value) not in _SCALARS]
            data = pack([event[key] for key in keys], packer)
            if len(self.subscriptions) > 1:  # another cursor will want the same bytes
                cache[slot] = (seq, keys, data)
        copy = dict(event)
        try:
            copy.update(zip(keys, unpack(data), strict=True))
        except Exception:  # noqa: BLE001 - e.g. tuple keys pack but do not read back
            copy.update((key, unpack(pack_plain(event[key]))) for key in keys)
        return copy
