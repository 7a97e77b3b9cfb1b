"""Cursors over the ordered log (`actors.eventlog`): in-process subscriptions, each with
its own daemon thread so a slow callback delays only itself, and readers (`LogReader`) for
consumers that run their own thread, like the publisher.

The thread sleeps on its own doorbell while the log has nothing committed past its cursor
(`asleep` set, then blocked on a held lock that the log's writer releases once), reads a
batch, and calls the callback with its own copy of each matching event, in seq order.
Before each call its cursor (`next_seq`) moves up to the event, so whoever waits for an
earlier seq (`handle.result()`) goes on without waiting for this callback to return.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.errors import failure_fields
from actors.logs import get_logger
from actors.packing import new_packer, pack

if TYPE_CHECKING:
    from actors.eventlog import EventLog

Event = dict[str, Any]
EventCallback = Callable[[Event], None]

log = get_logger("tradeloom.events")
_local = threading.local()
#: After its first failure, a subscription logs its callback's failures this seldom.
FAILURE_LOG_EVERY_S = 10.0
_names = itertools.count(1)


def current_subscription() -> Subscription | None:
    """The subscription whose thread this is (inside its callback, or a done callback it
    runs), else None. A waiting call made there would wait for that thread itself."""
    sub: Subscription | None = getattr(_local, "subscription", None)
    return sub


#: (second, its "YYYY-MM-DDTHH:MM:SS" text): the last second `iso_utc` formatted. Swapped
#: whole, so a thread reads a matching pair; strftime was ~2.5 µs of each call.
_iso_second: tuple[int, str] = (-1, "")


def iso_utc(wall: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as every event's `timestamp`."""
    global _iso_second  # a one-entry cache, swapped whole
    second = int(wall)
    cached = _iso_second
    if cached[0] != second:
        cached = _iso_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                      time.gmtime(second)))
    return f"{cached[1]}.{int((wall - second) * 1000):03d}Z"


class Subscription:
    """One in-process consumer: `callback(event)`, in seq order, for every matching event
    committed after it was made, each call with its own copy of the event.

    A callback may do anything except wait for the engine (`handle.result()`, `halt()`):
    those raise `WaitInCallback` here. Whatever it raises (any BaseException) is logged as
    `subscriber_failed`, counted in `failures`, and the subscription goes on (the first
    failure is logged with its traceback, then at most one line every
    `FAILURE_LOG_EVERY_S` with the count: a callback that fails on every event must not
    turn into a traceback per event, which costs more than the event). A gap notice
    (`type: "gap"`) goes to `on_gap` if given, else to `callback`, whatever the filters.
    Made by `EventLog.subscribe` (`engine.subscribe`).
    """

    def __init__(self, log: EventLog, callback: EventCallback, types: frozenset[str] | None,
                 workflow_id: str | None, on_gap: EventCallback | None, next_seq: int) -> None:
        self.callback = callback
        self.types = types
        self.workflow_id = workflow_id
        self.on_gap = on_gap
        self.name = f"tradeloom-subscription-{next(_names)}"
        #: The next seq this cursor reads: every event before it has been handled.
        self.next_seq = next_seq
        #: Events given to the callback, callbacks that raised, gap notices, events lost.
        self.delivered = 0
        self.failures = 0
        self._failure_logged_at = -FAILURE_LOG_EVERY_S
        self.gaps = 0
        self.missed = 0
        #: Set while the thread sleeps on its doorbell, for the log's writer to `wake()` it.
        self.asleep = False
        #: What ended its thread other than `close()` (a bug in the engine, logged as
        #: `subscription_crashed`); None while it runs or once closed normally.
        self.crashed: BaseException | None = None
        self._log = log
        self._closing = False
        self._bell = threading.Lock()
        self._bell.acquire()
        self._moved = threading.Condition()  # catch_up() callers wait on it
        self._catching_up = 0
        self._packer = new_packer()  # this thread's own: packers are not thread-safe
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def running(self) -> bool:
        """True while its thread is alive (a closed one stuck in its callback too)."""
        return self._thread.is_alive()

    def catch_up(self, timeout: float | None = None) -> bool:
        """Wait until this subscription has handled every event committed now (or is
        closed); False if `timeout` passed first, or if its thread crashed (`crashed`):
        the events after the crash were never handled. Not from its own callback."""
        target = self._log.committed_seq
        if self.next_seq > target or self._closing:
            return self.crashed is None
        if current_subscription() is self:
            raise RuntimeError("catch_up() from the subscription's own callback")
        with self._moved:
            self._catching_up += 1
            try:
                done = self._moved.wait_for(
                    lambda: self.next_seq > target or self._closing, timeout)
            finally:
                self._catching_up -= 1
        return done and self.crashed is None

    def close(self, timeout: float = 1.0) -> None:
        """Stop delivering; wait up to `timeout` for the thread (never for a stuck
        callback: its daemon thread is abandoned). Works from inside the callback."""
        self.stop()
        self.join(timeout)

    def stop(self) -> None:
        """Stop delivering, without waiting: from another thread, the one callback the
        thread was about to make may still start (`close()` waits for it); no later one."""
        self._closing = True
        self._log.remove(self)
        with self._moved:
            self._moved.notify_all()
        self.wake()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the thread to end (at once from the thread itself);
        True if it has."""
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wake(self) -> None:
        """Ring the doorbell (the writer does, when it sees `asleep`).

        `asleep` is cleared first: until the woken thread runs, the writer's next appends
        see it awake and do not ring again (measured: ~7 rings per workflow at c=50, all
        but one on a bell rung already, each an exception caught)."""
        self.asleep = False
        try:  # noqa: SIM105 - contextlib.suppress costs ~0.3 us more, on the writer's path
            self._bell.release()
        except RuntimeError:  # rung already, not yet heard: once is enough
            pass

    def start(self) -> None:
        self._thread.start()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {self.name} next_seq={self.next_seq} closed={self._closing}>"

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        _local.subscription = self
        log_ = self._log
        try:
            while self._sleep_until_committed():
                gap, events, fresh = log_.read(self.next_seq)
                if self._closing:
                    break
                if gap is not None:
                    self._gap(*gap)
                if events:
                    self._deliver(events, fresh)
        except BaseException as exc:  # noqa: BLE001 - a bug here must not strand result() waiters
            self.crashed = exc
            log.error("subscription_crashed", subscription=self.name, **failure_fields(exc))
        finally:
            self.stop()

    def _sleep_until_committed(self) -> bool:
        """Sleep until there is something at `next_seq`; False once closed."""
        log_ = self._log
        while log_.committed_seq < self.next_seq and not self._closing:
            # Asleep first, then look again: the writer commits, then looks at `asleep`;
            # one of the two sees the other's write, so no wake-up is lost.
            self.asleep = True
            if log_.committed_seq < self.next_seq and not self._closing:
                self._bell.acquire()
            self.asleep = False
        return not self._closing

    def _deliver(self, events: list[Event], fresh: bool) -> None:
        # The per-event path, inlined (`_move_to`, `_call`): it runs ~10 times per workflow.
        log_ = self._log
        types, workflow_id, callback = self.types, self.workflow_id, self.callback
        packer, copy, watchers = self._packer, log_.copy, log_.watchers
        for event in events:
            if self._closing:
                return
            if types is not None and event["type"] not in types:
                continue
            if workflow_id is not None and event.get("workflow_id") != workflow_id:
                continue
            seq: int = event["seq"]
            # Everything before it is handled: waiters may go on (the heap's top, read
            # without the log's mutex, as `EventLog.passed` does).
            self.next_seq = seq
            try:
                due = watchers[0][0] < seq
            except IndexError:
                due = False
            if due:
                log_.passed(seq)
            if self._catching_up:
                with self._moved:
                    self._moved.notify_all()
            try:
                callback(event if fresh else copy(seq, event, packer))
            except BaseException as exc:  # noqa: BLE001 - user code must never stop the subscription
                self._failed(exc, event)
            self.delivered += 1
        self._move_to(events[-1]["seq"] + 1)

    def _move_to(self, next_seq: int) -> None:
        self.next_seq = next_seq
        self._log.passed(next_seq)
        if self._catching_up:
            with self._moved:
                self._moved.notify_all()

    def _gap(self, first: int, last: int) -> None:
        self.gaps += 1
        self.missed += last - first + 1
        log.warning("subscription_gap", subscription=self.name, first_missing_seq=first,
                    last_missing_seq=last)
        notice: Event = {"v": 1, "type": "gap", "first_missing_seq": first,
                         "last_missing_seq": last, "timestamp": iso_utc(self._log.wall())}
        self._move_to(last + 1)
        self._call(self.on_gap or self.callback, notice)

    def _call(self, callback: EventCallback, event: Event) -> None:
        try:
            callback(event)
        except BaseException as exc:  # noqa: BLE001 - user code must never stop the subscription
            self._failed(exc, event)

    def _failed(self, exc: BaseException, event: Event) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1 or now - self._failure_logged_at >= FAILURE_LOG_EVERY_S:
            self._failure_logged_at = now
            fields = failure_fields(exc)
            if self.failures > 1:  # (the traceback once: the same callback, every event)
                del fields["traceback"]
            log.error("subscriber_failed", subscription=self.name, failures=self.failures,
                      event_type=event.get("type"), seq=event.get("seq"), **fields)


class LogReader:
    """A pull cursor for a consumer with its own thread: the publisher's `EventSource`
    (`committed_seq()`, `wait_committed(after_seq, timeout)`, `read(since_seq, limit)`).

    Its position (the last `since_seq` asked for) keeps the log's in-memory events from
    there on, like a subscription's; `handle.result()` does not wait for it. `read` hands
    out the log's own event dicts: read them, never change them. Made by
    `EventLog.reader()`; `close()` when done."""

    def __init__(self, log: EventLog, next_seq: int) -> None:
        self.next_seq = next_seq
        #: Events it asked for that were gone (behind the in-memory ring): logged, counted.
        self.missed = 0
        self.asleep = False
        self._log = log
        self._bell = threading.Lock()
        self._bell.acquire()
        self._packer: Any = None  # made in the reading thread (packers are not thread-safe)

    def committed_seq(self) -> int:
        return self._log.committed_seq

    def wait_committed(self, after_seq: int, timeout: float) -> int:
        """Block until something past `after_seq` is committed or `timeout` passes; the
        committed seq then."""
        log_ = self._log
        if log_.committed_seq <= after_seq and timeout > 0:
            self.asleep = True  # then look again: see Subscription._sleep_until_committed
            if log_.committed_seq <= after_seq:
                self._bell.acquire(timeout=timeout)
            self.asleep = False
        return log_.committed_seq

    def read(self, since_seq: int, limit: int) -> list[Event]:
        """Committed events from `since_seq` on, ascending, at most `limit` (fewer when they
        come from the journal: one read's worth of bytes); the first is later than
        `since_seq` when older ones are gone (in memory: past the ring)."""
        self.next_seq = max(self.next_seq, since_seq)
        events: list[Event] = []
        seq = since_seq
        while len(events) < limit:
            gap, batch, from_store = self._log.read(seq)
            if gap is not None:
                self.missed += gap[1] - gap[0] + 1
                log.warning("reader_gap", first_missing_seq=gap[0], last_missing_seq=gap[1])
            if not batch:
                if gap is None:
                    break
                seq = gap[1] + 1  # gone: go on after it
                continue
            events += batch[:limit - len(events)]
            seq = events[-1]["seq"] + 1
            if from_store:
                # The journal's dicts are this call's own, unlike the ring's: one store read
                # (at most the journal's MAX_REPLY_BYTES of events) per call, so a reader
                # that keeps few of what it reads (a filtered web client) never holds
                # `limit` big events at once.
                break
        return events

    def read_packed(self, since_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """`read`, as `(seq, topic, msgpack payload)`: the journal's bytes where the log has
        them (actors/wire_ring.py), else packed here. The publisher's thread only."""
        from actors.events import topic_of  # (actors.events imports this module)

        payload_of = self._log.wire.payload
        out = []
        for event in self.read(since_seq, limit):
            seq = event["seq"]
            payload = payload_of(seq)
            if payload is None:
                if self._packer is None:
                    self._packer = new_packer()
                payload = pack(event, self._packer)
            out.append((seq, topic_of(event), payload))
        return out

    def wake(self) -> None:
        """Ring the doorbell (see `Subscription.wake`)."""
        self.asleep = False
        try:  # noqa: SIM105 - as Subscription.wake
            self._bell.release()
        except RuntimeError:
            pass

    def close(self) -> None:
        self._log.remove_reader(self)
