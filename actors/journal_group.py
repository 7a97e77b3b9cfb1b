"""Turning what was queued into the rows of one commit (`Group`), in the writer's thread.

The per-event work is kept to: pack it (into its commit's batch row), look at its `type`,
note its `wseq`. Execution rows, intent outcomes and the emergency history come from the
few event types that change them:

- `execution_started`: the execution is running (inserted if record_submitted never was).
- `execution_completed/failed/halted/cancelled`: status (the event's `status`, so an
  interrupted one ends "interrupted"), results, error, error_type, ended_at, duration_ms,
  and `nodes` when the event carries that map.
- `node_completed` / `node_failed` of an action with an open intent: the intent's outcome
  becomes "completed" / "failed" (the function returned or raised: the engine knows what
  happened). A `NodeTimeout` leaves it open: the function is still running, and its late
  result is recorded with `record_intent_outcome(key, None, detail=...)`, for an operator.
  A retry of an idempotent action (the same key) whose earlier attempt was left open so is
  "carried": that attempt may have filled, so only a later attempt that completed, or an
  operator, closes it; a later failure or a refusal (`not_started`) leaves it open.
- `emergency_state_changed`: a row of emergency history (who, when, why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.journal_caps import DEFAULT_MAX_EVENT_BYTES
from actors.journal_records import (
    NOT_STARTED,
    Barrier,
    Codec,
    Cursor,
    Intent,
    IntentOutcome,
    Interrupted,
    Prune,
    SaveState,
    Submitted,
    Ticket,
    WebhookDeadLetter,
    WebhookLettersDeleted,
    WebhookLetterState,
    WebhookRecord,
    log,
)
from actors.journal_records import column_text as _text
from actors.journal_sql import (
    EXECUTION_COLUMNS,
    SQL_CURSOR,
    SQL_CURSOR_DELETE,
    SQL_DEAD_LETTER,
    SQL_DEAD_LETTER_DROP,
    SQL_DELIVERY,
    SQL_DELIVERY_TRIM,
    SQL_INTENT,
    SQL_INTENT_DETAIL,
    SQL_INTENT_RESOLVE,
    SQL_INTERRUPT,
    SQL_LETTER_BY_ID,
    SQL_LETTER_DELETE,
    SQL_LETTERS_REQUEUE,
    SQL_STATE,
    STATUS_INDEX,
)
from actors.wire_ring import Chunk

#: Events per batch row, at most: a replay from the middle of a row unpacks the whole row.
MAX_ROW_EVENTS = 512
#: A batch row ends once its events' bytes pass this (a row holds at least one event, which
#: `[journal] max_event_bytes` keeps below SQLite's limit on one value).
MAX_ROW_BYTES = 64 * 1024 * 1024

TERMINAL_TYPES = {
    "execution_completed": "completed", "execution_failed": "failed",
    "execution_halted": "halted", "execution_cancelled": "cancelled",
}
#: Event types the writer derives rows from; every other type is only packed.
DERIVED_TYPES = frozenset({"execution_started", "node_completed", "node_failed",
                           "emergency_state_changed", *TERMINAL_TYPES})
#: Forget submitted-but-not-started ids past this many (an optimisation only).
QUEUED_IDS_MAX = 100_000

@dataclass(slots=True)
class Group:
    """The rows of one commit, executed in a fixed order: batches, executions, history,
    then `ops` in queue order. Merging a failed group with a later one keeps each
    execution's row moving forward and the ops in queue order."""

    batches: list[tuple[int, int, float, bytes]] = field(default_factory=list)
    #: The batches' events packed one by one: their wire payloads (actors/wire_ring.py).
    wire: list[Chunk] = field(default_factory=list)
    #: execution_id -> its row (EXECUTION_COLUMNS order; None: not learnt in this group).
    executions: dict[str, list[Any]] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    #: (sql, [params, ...]) runs, in queue order: intents, interruptions, state, cursors.
    ops: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)
    wseq: dict[str, int] = field(default_factory=dict)
    tickets: list[Ticket] = field(default_factory=list)
    prune_tickets: list[Ticket] = field(default_factory=list)
    cursor_seqs: dict[str, int] = field(default_factory=dict)
    cursors_removed: set[str] = field(default_factory=set)
    event_count: int = 0
    last_seq: int = 0

    def op(self, sql: str, params: tuple[Any, ...]) -> None:
        if self.ops and self.ops[-1][0] is sql:
            self.ops[-1][1].append(params)
        else:
            self.ops.append((sql, [params]))

    def merge(self, later: Group) -> None:
        self.batches += later.batches
        self.wire += later.wire
        for execution_id, row in later.executions.items():
            known = self.executions.get(execution_id)
            if known is None:
                self.executions[execution_id] = row
            else:
                _merge_row(known, row)
        self.history += later.history
        for sql, params in later.ops:
            for p in params:
                self.op(sql, p)
        self.wseq.update(later.wseq)
        self.tickets += later.tickets
        self.prune_tickets += later.prune_tickets
        for name in later.cursors_removed:
            self.cursor_seqs.pop(name, None)
        self.cursor_seqs.update(later.cursor_seqs)
        self.cursors_removed = (self.cursors_removed - set(later.cursor_seqs)) \
            | later.cursors_removed
        self.event_count += later.event_count
        self.last_seq = max(self.last_seq, later.last_seq)


class GroupBuilder:
    """Builds groups; owned by the writer thread (its codec and sets are not shared)."""

    def __init__(self, *, next_seq: int, open_intents: set[str], clock: Clock,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.next_seq = next_seq
        #: Idempotency keys of intents without an outcome (loaded at open).
        self.open_intents = open_intents
        self.clock = clock
        self.codec = Codec(max_event_bytes)
        self._queued: set[str] = set()
        #: Open intents that a later attempt took over while an earlier one was unresolved.
        self._carried: set[str] = set()

    def build(self, items: list[Any]) -> Group:
        group = Group()
        chunk: list[dict[str, Any]] = []
        states: dict[str, tuple[Any, ...]] = {}
        for item in items:
            if isinstance(item, list):
                self._events(item, group, chunk)
            elif isinstance(item, SaveState):
                # Not capped: the engine's own state (a note would not read back as one).
                states[item.name] = (item.name, self.codec.pack(item.value), self.clock.time())
                group.tickets.append(item.ticket)
            else:
                self._record(item, group)
        if chunk:
            self._row(chunk, group)
        for params in states.values():
            group.op(SQL_STATE, params)
        return group

    def _row(self, chunk: list[dict[str, Any]], group: Group) -> None:
        payloads, size = self.codec.pack_each(chunk)
        if size > MAX_ROW_BYTES:
            self._rows_by_size(chunk, payloads, group)
        else:
            self._one_row(chunk, payloads, group)

    def _rows_by_size(self, chunk: list[dict[str, Any]], payloads: list[bytes],
                      group: Group) -> None:
        start, size = 0, 0
        for i, payload in enumerate(payloads):
            if i > start and size + len(payload) > MAX_ROW_BYTES:
                self._one_row(chunk[start:i], payloads[start:i], group)
                start, size = i, 0
            size += len(payload)
        self._one_row(chunk[start:], payloads[start:], group)

    def _one_row(self, chunk: list[dict[str, Any]], payloads: list[bytes],
                 group: Group) -> None:
        first, last = chunk[0]["seq"], chunk[-1]["seq"]
        group.batches.append((first, last, self.clock.time(), b"".join(payloads)))
        if last - first + 1 == len(chunk):
            group.wire.append((first, payloads))
        else:  # a seq gap (`journal_seq_gap`): a Chunk's payloads must be consecutive seqs
            group.wire += [(event["seq"], [payload]) for event, payload in zip(chunk, payloads,
                                                                              strict=True)]

    def _events(self, events: list[dict[str, Any]], group: Group,
                chunk: list[dict[str, Any]]) -> None:
        if not events:
            return
        first = events[0]["seq"]
        if first != self.next_seq:
            if first < self.next_seq:
                log.error("journal_duplicate_seq", expected=self.next_seq, got=first)
                events = [e for e in events if e["seq"] >= self.next_seq]
                if not events:
                    return
            else:
                log.error("journal_seq_gap", expected=self.next_seq, got=first)
        last = events[-1]["seq"]
        self.next_seq = last + 1
        group.event_count += len(events)
        group.last_seq = last
        wseq = group.wseq
        for event in events:
            if event["type"] in DERIVED_TYPES:
                self._derive(event, group)
            n = event.get("wseq")
            if n is not None:
                wseq[event["workflow_id"]] = n
        chunk.extend(events)
        while len(chunk) >= MAX_ROW_EVENTS:
            self._row(chunk[:MAX_ROW_EVENTS], group)
            del chunk[:MAX_ROW_EVENTS]

    def _derive(self, e: dict[str, Any], group: Group) -> None:
        kind = e["type"]
        if kind == "execution_started":
            row = self._row_of(e, group, "running")
            if row[STATUS_INDEX] == "queued":
                row[STATUS_INDEX] = "running"
            execution_id = row[0]
            if row[6] is None and execution_id not in self._queued:
                row[6] = self.codec.column(e, _inputs)  # no record_submitted wrote them
            self._queued.discard(execution_id)
            if row[5] is None:
                row[5] = e.get("priority")
            row[8], row[15] = e["timestamp"], e["seq"]
        elif kind in TERMINAL_TYPES:
            row = self._row_of(e, group, "")
            row[STATUS_INDEX] = e.get("status") or TERMINAL_TYPES[kind]
            results, error, nodes = self.codec.ended_columns(e)
            row[9:15] = (e["timestamp"], e.get("duration_ms"), results, error,
                         _text(e.get("error_type")), nodes)
            row[16] = e["seq"]
            self._queued.discard(row[0])
        elif kind == "emergency_state_changed":
            group.history.append((e["seq"], e["timestamp"], _text(e.get("state")),
                                  _text(e.get("previous_state")), _text(e.get("reason")),
                                  _text(e.get("source")), _text(e.get("origin"))))
        elif self.open_intents:  # node_completed / node_failed: an action's intent?
            key = f"{e.get('execution_id')}:{e.get('node_id')}"
            if key not in self.open_intents:
                return
            if kind == "node_completed":
                outcome, detail = "completed", None
                self._carried.discard(key)
            elif e.get("error_type") == "NodeTimeout" or key in self._carried:
                return  # still running (the late result says what happened), or carried
            else:
                outcome = "failed"
                detail = self.codec.column(e, _error_detail)
            self.open_intents.discard(key)
            group.op(SQL_INTENT_RESOLVE, (outcome, None, detail, e["timestamp"], key))

    def _row_of(self, e: dict[str, Any], group: Group, status: str) -> list[Any]:
        """The execution's row in this group, new (with `status`) if not seen in it yet."""
        execution_id = e["execution_id"]
        row = group.executions.get(execution_id)
        if row is None:
            row = group.executions[execution_id] = _new_row(
                execution_id, e["workflow_id"], status, _text(e.get("bot_id")),
                _text(e.get("strategy_id")))
        else:  # the last value given wins, as across commits (coalesce(excluded.x, x))
            for i, key in ((3, "bot_id"), (4, "strategy_id")):
                value = _text(e.get(key))
                if value is not None:
                    row[i] = value
        return row

    def _submitted(self, record: Submitted, group: Group) -> None:
        if len(self._queued) >= QUEUED_IDS_MAX:
            self._queued.clear()
        self._queued.add(record.execution_id)
        row = group.executions.get(record.execution_id)
        if row is None:
            row = group.executions[record.execution_id] = _new_row(
                record.execution_id, record.workflow_id, "queued", None, None)
        given = (_text(record.bot_id), _text(record.strategy_id), record.priority,
                 self.codec.pack_capped(record.inputs), record.submitted_at)
        for i, value in enumerate(given, 3):
            if value is not None:  # None leaves a value as it is, as in SQL_EXECUTION
                row[i] = value

    def _refused(self, record: Submitted, group: Group) -> None:
        group.executions[record.execution_id] = _refused_row(
            record, self.codec.pack_capped(record.inputs))

    def _record(self, record: Any, group: Group) -> None:
        if isinstance(record, Submitted):
            if record.refused is not None:
                self._refused(record, group)
            else:
                self._submitted(record, group)
        elif isinstance(record, Intent):
            if record.idempotency_key in self.open_intents:
                self._carried.add(record.idempotency_key)
            self.open_intents.add(record.idempotency_key)
            group.op(SQL_INTENT, (record.idempotency_key, record.execution_id, record.node_id,
                                  record.attempt, record.started_at, record.seq_at))
        elif isinstance(record, IntentOutcome):
            detail = (self.codec.pack_capped(record.detail) if record.detail is not None
                      else None)
            if record.outcome is None:
                group.op(SQL_INTENT_DETAIL, (detail, _text(record.note), record.idempotency_key))
            elif record.outcome == NOT_STARTED and record.idempotency_key in self._carried:
                pass  # this attempt never ran; the earlier one it carries is still open
            else:
                self.open_intents.discard(record.idempotency_key)
                self._carried.discard(record.idempotency_key)
                group.op(SQL_INTENT_RESOLVE, (record.outcome, _text(record.note), detail,
                                              record.resolved_at, record.idempotency_key))
        elif isinstance(record, Cursor):
            if record.seq is None:
                group.cursor_seqs.pop(record.name, None)
                group.cursors_removed.add(record.name)
                group.op(SQL_CURSOR_DELETE, (record.name,))
            else:
                group.cursors_removed.discard(record.name)
                group.cursor_seqs[record.name] = record.seq
                group.op(SQL_CURSOR, (record.name, record.seq))
        elif isinstance(record, Interrupted):
            for execution_id in record.execution_ids:
                group.op(SQL_INTERRUPT, (record.ended_at, execution_id))
        elif isinstance(record, Prune):
            group.prune_tickets.append(record.ticket)
            return
        elif isinstance(record, WebhookRecord):
            self._webhook(record, group)
        elif not isinstance(record, Barrier):
            raise TypeError(f"not a journal record: {record!r}")
        group.tickets.append(record.ticket)


    def _webhook(self, r: WebhookRecord, group: Group) -> None:
        if isinstance(r, WebhookDeadLetter):
            group.op(SQL_DEAD_LETTER, (r.endpoint, r.seq, r.event_type,
                                       self.codec.pack(r.event), r.attempts, r.http_status,
                                       r.error, r.failed_at))
            if r.drop_oldest > 0:
                group.op(SQL_DEAD_LETTER_DROP, (r.endpoint, r.drop_oldest))
        elif isinstance(r, WebhookLetterState):
            values = (r.state, r.attempts, r.http_status, r.error, r.state, r.at)
            if r.letter_ids:
                for letter_id in r.letter_ids:
                    group.op(SQL_LETTER_BY_ID, (*values, letter_id))
            else:
                group.op(SQL_LETTERS_REQUEUE, (*values, r.endpoint, r.endpoint))
        elif isinstance(r, WebhookLettersDeleted):
            for letter_id in r.letter_ids:
                group.op(SQL_LETTER_DELETE, (letter_id,))
        else:
            group.op(SQL_DELIVERY, (r.endpoint, r.delivery_id, r.first_seq, r.last_seq,
                                    r.event_type, r.outcome, r.attempts, r.http_status,
                                    r.latency_ms, r.error, r.at))
            group.op(SQL_DELIVERY_TRIM, (r.endpoint, r.endpoint))


def _refused_row(record: Submitted, inputs: bytes | None) -> list[Any]:
    """A submit refused at the door: ended as it came, with no events of its own (its
    ended_seq is the seq appended before it, so retention prunes it with those)."""
    assert record.refused is not None
    row = _new_row(record.execution_id, record.workflow_id, "refused",
                   _text(record.bot_id), _text(record.strategy_id))
    error, error_type = record.refused
    values = {"priority": record.priority, "inputs": inputs,
              "submitted_at": record.submitted_at, "ended_at": record.submitted_at,
              "error": _text(error), "error_type": error_type, "ended_seq": record.seq_at}
    for name, value in values.items():
        row[EXECUTION_COLUMNS.index(name)] = value
    return row


def _new_row(execution_id: str, workflow_id: str, status: str, bot_id: str | None,
             strategy_id: str | None) -> list[Any]:
    row: list[Any] = [None] * len(EXECUTION_COLUMNS)
    row[:5] = (execution_id, workflow_id, status, bot_id, strategy_id)
    return row


def _merge_row(known: list[Any], later: list[Any]) -> None:
    """Fold a later group's row into an earlier one's, as SQL_EXECUTION would."""
    status = known[STATUS_INDEX]
    for i, value in enumerate(later):
        if value is not None:
            known[i] = value
    new = later[STATUS_INDEX]
    if new == "queued" or (new == "running" and status not in ("queued", "")):
        known[STATUS_INDEX] = status


def _inputs(e: dict[str, Any]) -> Any:
    return e.get("inputs")


def _error_detail(e: dict[str, Any]) -> dict[str, Any]:
    return {"error": e.get("error"), "error_type": e.get("error_type")}
