"""The event sink: the one place where events get their order.

Every event of the engine passes through `EventSink.emit`: under one lock it gets its `seq`
(gapless, across all topics), its `wseq` (per workflow), its timestamp and, for workflow
events, the emergency state it happened in; then the batch is appended to the ordered log
(`actors.eventlog`), still under the lock, and that is all: subscribers, the journal and
the publisher read the log from their own cursors, off the lock.

The same lock is the engine's sequencing lock: the kill switch changes state under it and a
node actor marks a run started under it, so the stream order is the order things happened.
The event types and their fields are declared in `actors.event_types`.
"""

from __future__ import annotations

import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from actors.clock import Clock
from actors.event_types import EVENT_TYPES, WorkflowEvent
from actors.eventlog import (
    DEFAULT_RING_SIZE,
    Event,
    EventCallback,
    EventLog,
    Subscription,
    iso_utc,
)
from actors.topics import EMERGENCY_TYPES

__all__ = ["EMERGENCY_TYPES", "Event", "EventCallback", "EventLog", "EventSink",
           "Subscription", "iso_utc", "topic_of", "validate_event"]



#: A workflow id (`actors.workflow.ID_PATTERN`; not imported: events loads without it).
_WORKFLOW_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def topic_of(event: Mapping[str, Any]) -> str:
    """The ZeroMQ topic of an event (docs/protocol.md (events))."""
    kind = event["type"]
    workflow_id = event.get("workflow_id")
    if workflow_id is not None and "execution_id" in event:
        return f"workflow/{workflow_id}/{kind}"
    if kind in EMERGENCY_TYPES:
        return f"emergency/{kind}"
    return f"system/{kind}"


# -- validation against actors.event_types ----------------------------------------------

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_EXECUTION_SUFFIX = re.compile(r"_[0-9a-f]{8}")


def _check_for(tp: Any) -> Callable[[Any], bool]:
    """A runtime test of a value against the basic shape of an annotation."""
    if tp is Any:
        return lambda value: True
    origin = get_origin(tp)
    if origin is Literal:
        allowed = frozenset((a, type(a)) for a in get_args(tp))  # 1 is not True here

        def literal(value: Any) -> bool:
            try:
                return (value, type(value)) in allowed
            except TypeError:  # unhashable: not one of the values
                return False

        return literal
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if type(None) in args and len(args) == 2:
            other = _check_for(next(arg for arg in args if arg is not type(None)))
            return lambda value: value is None or other(value)
        checks = [_check_for(arg) for arg in args]
        return lambda value: any(check(value) for check in checks)
    if tp is type(None):
        return lambda value: value is None
    if tp is bool:
        return lambda value: isinstance(value, bool)
    if tp is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return lambda value: isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return lambda value: isinstance(value, str)
    if origin is dict:
        return lambda value: isinstance(value, Mapping)
    if origin is list:
        item = _check_for(get_args(tp)[0])
        return lambda value: isinstance(value, list) and all(map(item, value))
    raise TypeError(f"no runtime check for {tp!r}")  # a new annotation kind: add it here


class _Spec:
    __slots__ = ("checks", "family", "required", "shown")

    def __init__(self, kind: str, cls: Any) -> None:
        hints = get_type_hints(cls)
        self.required: frozenset[str] = cls.__required_keys__
        self.checks = {key: _check_for(tp) for key, tp in hints.items()}
        self.shown = {key: tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
                      for key, tp in hints.items()}
        #: The topic's first part; "local" for what is never published.
        self.family = ("workflow" if WorkflowEvent.__required_keys__ <= self.required
                       else "local" if kind == "gap"
                       else "emergency" if kind in EMERGENCY_TYPES else "system")


_SPECS = {kind: _Spec(kind, cls) for kind, cls in EVENT_TYPES.items()}


def validate_event(event: Any, *, strict: bool = False) -> list[str]:
    """What is wrong with `event`, as short sentences (empty: nothing).

    Checks: a mapping with a known `type`; every required field present; the basic type of
    every declared field present (int, float, str, bool, None, a mapping, a literal's
    values); the timestamp's form; ids and the topic rule (workflow events on
    `workflow/<id>/<type>`, `emergency_state_changed` and `risk_limit_*` on `emergency/`,
    the rest on `system/`). With `strict`, fields not declared are problems too.
    """
    if not isinstance(event, Mapping):
        return [f"not a mapping: {type(event).__name__}"]
    kind = event.get("type")
    spec = _SPECS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        return [f"unknown type {kind!r}"]
    problems = [f"{kind}: missing {key!r}" for key in sorted(spec.required - event.keys())]
    for key, value in event.items():
        check = spec.checks.get(key)
        if check is None:
            if strict:
                problems.append(f"{kind}: undeclared field {key!r}")
        elif not check(value):
            problems.append(f"{kind}: {key!r} should be {spec.shown[key]}, got "
                            f"{repr(value)[:60]}")
    if problems:
        return problems
    if not _TIMESTAMP.fullmatch(event["timestamp"]):
        problems.append(f"{kind}: timestamp {event['timestamp']!r} is not ISO-8601 UTC with ms")
    if "seq" in event and event["seq"] < 1:
        problems.append(f"{kind}: seq {event['seq']} < 1")
    if spec.family == "workflow":
        workflow_id, execution_id = event["workflow_id"], event["execution_id"]
        if not _ID.fullmatch(workflow_id):
            problems.append(f"{kind}: workflow_id {workflow_id!r} is not a valid id")
        prefix = f"exec_{workflow_id}"
        if not (execution_id.startswith(prefix)
                and _EXECUTION_SUFFIX.fullmatch(execution_id, len(prefix))):
            problems.append(f"{kind}: execution_id {execution_id!r} is not "
                            f"exec_{workflow_id}_<8 hex>")
        if event["correlation_id"] != execution_id:
            problems.append(f"{kind}: correlation_id differs from execution_id")
        if event["wseq"] < 1:
            problems.append(f"{kind}: wseq {event['wseq']} < 1")
    if spec.family != "local":
        expected = (f"workflow/{event['workflow_id']}/{kind}" if spec.family == "workflow"
                    else f"{spec.family}/{kind}")
        topic = topic_of(event)
        if topic != expected:
            problems.append(f"{kind}: topic {topic!r}, expected {expected!r}")
    elif event["last_missing_seq"] < event["first_missing_seq"]:
        problems.append(f"{kind}: last_missing_seq < first_missing_seq")
    return problems


# -- the sink ------------------------------------------------------------------------------

class EventSink:
    """Sequences batches of events and appends them to `log`."""

    #: A test hook: when set, called with every event once it is sequenced (under the
    #: lock, before the log sees it). The test suite validates every event with it.
    validator: ClassVar[Callable[[Event], None] | None] = None

    def __init__(self, clock: Clock, *, first_seq: int = 1,
                 ring_size: int = DEFAULT_RING_SIZE) -> None:
        # Re-entrant: callers may nest locked steps (no callback runs under it any more).
        self.lock = threading.RLock()
        #: Notified (under `lock`) when sequenced state changes that others may wait on.
        self.changed = threading.Condition(self.lock)
        #: The last seq given out (appended; `log.committed_seq` is what readers see).
        self.last_seq = first_seq - 1
        #: The emergency state name stamped on workflow events; written by the kill switch.
        self.state = "NORMAL"
        self.log = EventLog(first_seq=first_seq, ring_size=ring_size, wall=clock.time,
                            lock=self.lock)
        self._clock = clock
        self._wseq: dict[str, int] = {}
        self._ts_ms = -1
        self._ts_second = -1
        self._ts_prefix = ""
        self._ts = ""

    def restore_wseq(self, wseq: Mapping[str, int]) -> None:
        """Continue each workflow's `wseq` where a journal left it (at start-up)."""
        with self.lock:
            self._wseq.update(wseq)

    def subscribe(self, callback: EventCallback, *, types: Iterable[str] | None = None,
                  workflow_id: str | None = None,
                  on_gap: EventCallback | None = None) -> Subscription:
        """A cursor over the log from the next committed event on (see `EventLog`).

        An unknown type name (a typo: `"node_complete"`) or a workflow id that is not a
        string would match nothing, silently: both are refused here."""
        if types is not None and not isinstance(types, str):  # a str: the log's TypeError
            try:
                types = frozenset(types)
            except TypeError:  # not iterable, or an unhashable item
                raise TypeError("types must be a collection of event types, not "
                                f"{type(types).__name__}") from None
            unknown = sorted(repr(t) for t in types - EVENT_TYPES.keys())
            if unknown:
                raise ValueError(f"unknown event types {', '.join(unknown)} (known: "
                                 f"{', '.join(sorted(EVENT_TYPES))})")
        if workflow_id is not None and not isinstance(workflow_id, str):
            raise TypeError(f"workflow_id must be a string or None, not "
                            f"{type(workflow_id).__name__}")
        if workflow_id is not None and not _WORKFLOW_ID.fullmatch(workflow_id):
            raise ValueError(f"no workflow id is {workflow_id!r} (ids match "
                             "[A-Za-z0-9_.-]{1,128}): it would match nothing")
        return self.log.subscribe(callback, types=types, workflow_id=workflow_id,
                                  on_gap=on_gap)

    def emit(self, events: list[Event]) -> None:
        with self.lock:
            self.emit_locked(events)

    def emit_locked(self, events: list[Event]) -> None:
        """Sequence and append to the log; the caller holds `lock`."""
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
        validator = EventSink.validator
        if validator is not None:
            for event in events:
                validator(event)
        self.log.append(events)

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
