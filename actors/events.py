"""The event sink: the one place where events get their order.

Every event of the engine passes through `EventSink.emit`: under one lock it gets its `seq`
(gapless, across all topics), its `wseq` (per workflow), its timestamp and, for workflow
events, the emergency state it happened in; then it is handed, in that order, to the
outputs (journal, publisher: later issues) and the in-process subscribers.

The same lock is the engine's sequencing lock: the kill switch changes state under it and a
node actor marks a run started under it, so the stream order is the order things happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from actors.clock import Clock

Event = dict[str, Any]
EventCallback = Callable[[Event], None]
Output = Callable[[list[Event]], None]

EMERGENCY_TYPES = frozenset({
    "emergency_state_changed", "risk_limit_warning", "risk_limit_exceeded",
})

log = structlog.get_logger("tradeloom.events")


def topic_of(event: Event) -> str:
    """The ZeroMQ topic of an event (CONTRACT section 5)."""
    kind = event["type"]
    workflow_id = event.get("workflow_id")
    if workflow_id is not None and "execution_id" in event:
        return f"workflow/{workflow_id}/{kind}"
    if kind in EMERGENCY_TYPES:
        return f"emergency/{kind}"
    return f"system/{kind}"


def iso_utc(wall: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as every event's `timestamp`."""
    second = int(wall)
    prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{int((wall - second) * 1000):03d}Z"


class Subscription:
    """An in-process subscriber: `callback(event)` for matching events, in seq order."""

    __slots__ = ("_sink", "callback", "types", "workflow_id")

    def __init__(self, sink: EventSink, callback: EventCallback,
                 types: frozenset[str] | None, workflow_id: str | None) -> None:
        self._sink = sink
        self.callback = callback
        self.types = types
        self.workflow_id = workflow_id

    def close(self) -> None:
        self._sink.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventSink:
    def __init__(self, clock: Clock, *, first_seq: int = 1) -> None:
        # Re-entrant: a subscriber callback runs under it and may call status() or
        # subscribe()/close() on the same thread.
        self.lock = threading.RLock()
        #: Notified (under `lock`) when sequenced state changes that others may wait on.
        self.changed = threading.Condition(self.lock)
        self.last_seq = first_seq - 1
        #: The emergency state name stamped on workflow events; written by the kill switch.
        self.state = "NORMAL"
        self._clock = clock
        self._wseq: dict[str, int] = {}
        self._subscriptions: tuple[Subscription, ...] = ()
        self._outputs: tuple[Output, ...] = ()
        self._ts_ms = -1
        self._ts_second = -1
        self._ts_prefix = ""
        self._ts = ""

    def subscribe(self, callback: EventCallback, *, types: Iterable[str] | None = None,
                  workflow_id: str | None = None) -> Subscription:
        sub = Subscription(self, callback, frozenset(types) if types is not None else None,
                           workflow_id)
        with self.lock:
            self._subscriptions = (*self._subscriptions, sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self.lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not sub)

    def held_by_me(self) -> bool:
        """True on a thread inside the sequencing lock (e.g. in a subscriber callback)."""
        return bool(self.lock._is_owned())  # type: ignore[attr-defined]

    def add_output(self, output: Output) -> None:
        """Add a stage that receives every batch, in seq order, before subscribers do."""
        with self.lock:
            self._outputs = (*self._outputs, output)

    def emit(self, events: list[Event]) -> None:
        with self.lock:
            self.emit_locked(events)

    def emit_locked(self, events: list[Event]) -> None:
        """Sequence and deliver; the caller holds `lock`."""
        timestamp = self._timestamp()
        seq = self.last_seq
        wseq = self._wseq
        state = self.state
        for event in events:
            seq += 1
            event["seq"] = seq
            event["timestamp"] = timestamp
            workflow_id = event.get("workflow_id")
            if workflow_id is not None and "execution_id" in event:
                n = wseq.get(workflow_id, 0) + 1
                wseq[workflow_id] = n
                event["wseq"] = n
                event["state"] = state
        self.last_seq = seq
        for output in self._outputs:
            output(events)
        for sub in self._subscriptions:
            types, workflow_id, callback = sub.types, sub.workflow_id, sub.callback
            for event in events:
                if types is not None and event["type"] not in types:
                    continue
                if workflow_id is not None and event.get("workflow_id") != workflow_id:
                    continue
                try:
                    callback(event)
                except Exception:
                    log.exception("subscriber_failed", callback=repr(callback),
                                  event_type=event["type"], seq=event["seq"])

    def _timestamp(self) -> str:
        # Called under the lock; most batches land in the same millisecond as the last.
        ms = int(self._clock.time() * 1000)
        if ms != self._ts_ms:
            self._ts_ms = ms
            second = ms // 1000
            if second != self._ts_second:
                self._ts_second = second
                self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._ts = f"{self._ts_prefix}.{ms % 1000:03d}Z"
        return self._ts
