"""What travels from the engine to the journal's writer: records, tickets, and the codec.

Events reach the writer as the very lists the ordered log appended (no copy, no packing
under the sequencing lock). Everything else is a `Record`: a small object naming what to
write, with the `Ticket` the caller may wait on. The writer packs everything with msgpack,
in its own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from actors.journal_caps import DEFAULT_MAX_EVENT_BYTES, cap_value, cut_to_fit
from actors.logs import get_logger
from actors.packing import as_text, new_packer, pack, unpack_lenient, unpack_stream_lenient

log = get_logger("tradeloom.journal")

#: One lock for every ticket's completion: uncontended, and held for a few field writes.
_TICKETS_LOCK = threading.Lock()


class Ticket:
    """Completes when its record is committed (`done`), or fails for good (`error`).

    A record whose commit failed stays pending while the writer retries: `wait` returns
    False until the disk takes it. `error` is set only when it can never be written
    (the journal closed first). Callbacks run in the writer's thread after the commit;
    they must be quick.
    """

    __slots__ = ("_callbacks", "_latch", "done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self._latch: threading.Lock | None = None
        self._callbacks: list[Callable[[Ticket], None]] | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """True once committed; False on timeout or if it failed for good."""
        if self.done:
            return True
        with _TICKETS_LOCK:
            if self.done or self.error is not None:
                return self.done
            latch = self._latch
            if latch is None:
                latch = self._latch = threading.Lock()
                latch.acquire()
        if latch.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            latch.release()
        return self.done

    def add_done_callback(self, fn: Callable[[Ticket], None]) -> None:
        """Call `fn(ticket)` once it is done or failed (at once if it already is)."""
        with _TICKETS_LOCK:
            if not self.done and self.error is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def _finish(self, error: BaseException | None = None) -> None:
        with _TICKETS_LOCK:
            if self.done or self.error is not None:
                return
            if error is None:
                self.done = True
            else:
                self.error = error
            latch, callbacks, self._callbacks = self._latch, self._callbacks, None
        if latch is not None:
            latch.release()
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:
                log.exception("journal_ticket_callback_failed")

    def __repr__(self) -> str:
        state = "done" if self.done else "failed" if self.error is not None else "pending"
        return f"<Ticket {state}>"


#: An intent's engine-recorded outcome when the gate refused the action after its intent
#: was committed (HALT, REDUCE_ONLY): the function was never called.
NOT_STARTED = "not_started"


# -- records (frozen: the writer reads them in another thread) ------------------------------

@dataclass(frozen=True, slots=True)
class Record:
    ticket: Ticket = field(default_factory=Ticket, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Submitted(Record):
    execution_id: str = ""
    workflow_id: str = ""
    inputs: Any = None
    bot_id: str | None = None
    strategy_id: str | None = None
    priority: int = 0
    submitted_at: str | None = None
    #: (error, error_type) of a submit refused at the door (HALT, a full queue): the row is
    #: written `refused`, ended at once, and pruned with the events around `seq_at`.
    refused: tuple[str, str] | None = None
    seq_at: int | None = None


@dataclass(frozen=True, slots=True)
class Intent(Record):
    execution_id: str = ""
    node_id: str = ""
    idempotency_key: str = ""
    attempt: int = 1
    started_at: str | None = None
    #: The last seq appended when the intent was recorded: retention stops there.
    seq_at: int = 0


@dataclass(frozen=True, slots=True)
class IntentOutcome(Record):
    idempotency_key: str = ""
    #: None records `detail` (a late result) but leaves the intent for reconciliation.
    outcome: str | None = None
    note: str | None = None
    detail: Any = None
    resolved_at: str | None = None


@dataclass(frozen=True, slots=True)
class SaveState(Record):
    """A named snapshot ("emergency", "breakers"); only the newest per commit is written."""

    name: str = ""
    value: Any = None


@dataclass(frozen=True, slots=True)
class Cursor(Record):
    name: str = ""
    #: None removes the cursor.
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Interrupted(Record):
    execution_ids: tuple[str, ...] = ()
    ended_at: str | None = None


@dataclass(frozen=True, slots=True)
class Barrier(Record):
    """Writes nothing: done once everything queued before it is committed (flush)."""


@dataclass(frozen=True, slots=True)
class Prune(Record):
    """Run retention passes now, until nothing more may go."""


@dataclass(frozen=True, slots=True)
class WebhookDeadLetter(Record):
    """An event a webhook gave up on (actors/webhook.py): kept whole, for `webhooks retry`."""

    endpoint: str = ""
    seq: int = 0
    event_type: str | None = None
    event: Any = None
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    failed_at: str = ""
    #: Delete this many of the endpoint's oldest "dead" letters after inserting this one,
    #: in the same commit: its `max_dead_letters` cap (actors/webhook_store.py counts).
    drop_oldest: int = 0


@dataclass(frozen=True, slots=True)
class WebhookLetterState(Record):
    """A dead letter's new state: "queued" (an operator's retry), "delivered", or "dead"
    again (`attempts` more were made). `letter_ids` empty with `endpoint` given: every
    dead letter of that endpoint; both empty: every dead letter."""

    letter_ids: tuple[int, ...] = ()
    endpoint: str | None = None
    state: str = "queued"
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    at: str = ""


@dataclass(frozen=True, slots=True)
class WebhookLettersDeleted(Record):
    """An operator deleted these dead letters (`webhooks delete`); one no longer "dead"
    (re-queued or sent meanwhile) is left alone."""

    letter_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookDelivery(Record):
    """One line of a webhook's delivery log (`webhooks log`); the newest LOG_KEPT are kept
    per endpoint."""

    endpoint: str = ""
    delivery_id: str = ""
    first_seq: int = 0
    last_seq: int = 0
    event_type: str | None = None
    outcome: str = "delivered"
    attempts: int = 0
    http_status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    at: str = ""


#: What a webhook writes to the journal (`Journal.record_webhook`, actors/webhook_store.py).
WebhookRecord = (WebhookDeadLetter | WebhookLetterState | WebhookLettersDeleted
                 | WebhookDelivery)


# -- codec -----------------------------------------------------------------------------------

class Codec:
    """msgpack for one thread (a Packer is not thread-safe), as actors/packing.py packs:
    the journal's bytes are the wire payloads and what a replay reads back. Nothing it
    packs is over `max_event_bytes` (actors/journal_caps.py) but an event with no user data
    left to cut."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._packer = new_packer()
        self._pack_one = self._packer.pack
        self.max_event_bytes = max_event_bytes
        #: Events cut to fit (read by other threads for `status`).
        self.events_cut = 0

    def pack_each(self, events: list[dict[str, Any]]) -> tuple[list[bytes], int]:
        """Each event's msgpack map, and their total size: a batch row is their
        concatenation, and each is the event's wire payload (actors/wire_ring.py). An event
        over the cap is cut to fit, in place. The common path is two C loops."""
        try:
            payloads = list(map(self._pack_one, events))
        except BaseException:  # noqa: BLE001 - a value msgpack (or a user __str__ it calls:
            # SystemExit too) refuses must not stop the journal; MemoryError: cut below
            return self._cut_oversized(events, list(map(self._pack_or_empty, events)))
        size = sum(map(len, payloads))
        if size > self.max_event_bytes:  # (maybe none is over the cap alone)
            return self._cut_oversized(events, payloads)
        return payloads, size

    def _cut_oversized(self, events: list[dict[str, Any]],
                       payloads: list[bytes]) -> tuple[list[bytes], int]:
        limit = self.max_event_bytes
        for i, payload in enumerate(payloads):
            if not payload or len(payload) > limit:
                payloads[i] = self.cut(events[i])
        return payloads, sum(map(len, payloads))

    def cut(self, event: dict[str, Any]) -> bytes:
        """Cut `event` to fit the cap, in place; its packed form."""
        if "omitted" in event:
            # Cut already (for its execution row) and still over the cap: nothing of it is
            # left to cut. A second cut would start a new, empty `omitted` and count it twice.
            return self.pack(event)
        data = cut_to_fit(event, self.max_event_bytes, self.pack)
        if "omitted" in event:
            self.events_cut += 1
        self._renew_packer()  # (a value too big to pack may have grown it, then failed)
        return data

    def _pack_or_empty(self, event: dict[str, Any]) -> bytes:
        try:
            return self.pack(event)
        except MemoryError:
            return b""  # (a packed map is never empty)

    def pack(self, value: Any) -> bytes:
        data = pack(value, self._packer)
        if len(data) > self.max_event_bytes:
            self._renew_packer()
        return data

    def _renew_packer(self) -> None:
        # A Packer keeps its buffer at the largest size it ever packed: after a 1 GB output
        # (or submit inputs, or a late result) the writer would hold that gigabyte for good.
        # A new one starts small. Only past the cap: the common path reuses its buffer.
        self._packer = new_packer()
        self._pack_one = self._packer.pack

    def column(self, e: dict[str, Any], value_of: Callable[[dict[str, Any]], Any]) -> bytes:
        """`value_of(e)` packed for a column. Over the cap (or too big to pack), the event
        is cut first, as its batch row's packing would cut it: column and event agree."""
        try:
            data = self.pack(value_of(e))
            if len(data) <= self.max_event_bytes:
                return data
        except MemoryError:
            pass
        self.cut(e)
        return self.pack_capped(value_of(e))

    def ended_columns(self, e: dict[str, Any]) -> tuple[bytes, str | None, bytes | None]:
        """A terminal event's results, error and nodes columns; if together they are over
        the cap, the event is cut first (it holds them all)."""
        error = column_text(e.get("error"))
        try:
            results = self.pack(e.get("results"))
            nodes = self.pack(e["nodes"]) if e.get("nodes") is not None else None
            size = len(results) + (len(nodes) if nodes is not None else 0) + len(error or "")
        except MemoryError:
            size = self.max_event_bytes + 1
        if size > self.max_event_bytes:
            self.cut(e)
            results, error = self.pack_capped(e.get("results")), column_text(e.get("error"))
            nodes = self.pack_capped(e["nodes"]) if e.get("nodes") is not None else None
        return results, error, nodes

    def pack_capped(self, value: Any) -> bytes:
        """`value` for a journal column: packed, or a note if over the cap."""
        return cap_value(value, self.max_event_bytes, self.pack)


def column_text(value: Any) -> str | None:
    """A text column's value as UTF-8 can carry it: a lone surrogate (in a node's error, or
    a reason, bot_id or note given in-process) would fail every retry of the commit."""
    return None if value is None else as_text(value)


def unpack(data: bytes | None) -> Any:
    if data is None:
        return None
    return unpack_lenient(data)


def unpack_events_sized(blob: bytes) -> Iterator[tuple[dict[str, Any], int]]:
    """A batch row's events, each with its packed size in bytes (its wire payload's)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
    unpacker.feed(blob)
    sized: list[tuple[dict[str, Any], int]] = []
    end = 0
    try:
        for event in unpacker:
            start, end = end, unpacker.tell()
            sized.append((event, end - start))
    except TypeError:  # a tuple key (packed as an array): see unpack_lenient
        events = unpack_stream_lenient(blob)
        share = len(blob) // max(len(events), 1)
        sized = [(event, share) for event in events]
    return iter(sized)
