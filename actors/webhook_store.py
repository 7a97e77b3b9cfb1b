"""Webhooks' durable state in the journal: cursors, dead letters and the delivery log.

Writes go through the journal's single writer (`Journal.record_webhook`, records in
actors/journal_records.py); reads use this store's own read-only connection (WAL: they
never block the writer). Tables: actors/journal_schema.py, version 2.

    store = WebhookStore(journal)
    store.start_seq(config, committed_seq) -> int   # where its cursor resumes
    store.advance(config, seq)                      # delivered (or given up) through seq
    store.dead_letter(..., max_dead_letters) -> int # how many old ones it pushed out
    store.letter_state(...) / store.log(...)
    store.failed(endpoint=None, limit=100) -> [dead letter rows]
    store.queued(endpoint) -> [dead letters to re-send, with their events]
    store.requeue(endpoint=None, ids=(), endpoints=None) -> Tally  # durable on return
    store.delete(endpoint=None, ids=()) -> Tally                  # durable on return
    store.letters(ids) -> {id: (endpoint, state)}
    store.deliveries(endpoint=None, limit=100) -> [log rows, newest first]

The dead letters of an endpoint are capped (`max_dead_letters`): a dead letter that takes
it past its cap deletes its oldest "dead" ones in the same commit. The store counts each
endpoint's "dead" letters itself (as they will be once every record it queued is
written: one journal count, then +1 per dead letter, -1 per re-queued one) and tells the
journal how many to delete; a count query per insert would walk the whole cap. Every
write that changes a "dead" count takes `_writes`, and `requeue` reads what it re-queues
only once the journal has written everything queued before, so the count stays exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.errors import JournalWriteFailed
from actors.events import iso_utc
from actors.journal import Journal
from actors.journal_records import (
    WebhookDeadLetter,
    WebhookDelivery,
    WebhookLettersDeleted,
    WebhookLetterState,
    WebhookRecord,
    unpack,
)
from actors.journal_schema import connect_reader
from actors.webhook_config import WebhookConfig

#: How long an operator's retry (or the first count of an endpoint's dead letters) waits
#: for the journal to commit.
REQUEUE_TIMEOUT_S = 10.0
#: Dead letters read and re-queued (or deleted) per page (one read and one commit each).
REQUEUE_PAGE = 500
#: The most ids a retry's reply lists (a retry of all may re-queue more; it counts them).
RETRY_IDS_LISTED = 10_000
#: The "dead" letters (of one endpoint when the parameter is not NULL): a page's read.
SQL_DEAD_PAGE = ("SELECT id, endpoint FROM webhook_dead_letters WHERE state='dead'"
                 " AND (? IS NULL OR endpoint=?)")
LETTER_COLUMNS = ("id", "endpoint", "seq", "event_type", "attempts", "http_status", "error",
                  "failed_at", "state", "retried_at")
LOG_COLUMNS = ("id", "endpoint", "delivery_id", "first_seq", "last_seq", "event_type",
               "outcome", "attempts", "http_status", "latency_ms", "error", "at")


@dataclass(slots=True)
class Tally:
    """What a retry re-queued (or a delete deleted): how many, and the ids of the first
    RETRY_IDS_LISTED."""

    count: int = 0
    ids: list[int] = field(default_factory=list)

    def add(self, ids: list[int]) -> None:
        self.count += len(ids)
        self.ids.extend(ids[:max(0, RETRY_IDS_LISTED - len(self.ids))])


class WebhookStore:
    """Shared by the deliverers and the control ops; every method is thread-safe."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._conn = connect_reader(journal.path)
        self._lock = threading.Lock()
        #: Held while a write that changes an endpoint's "dead" count is queued.
        self._writes = threading.Lock()
        #: endpoint -> its "dead" letters once every record queued is written (those
        #: counted so far: one journal count at its first dead letter).
        self._dead: dict[str, int] = {}

    # -- cursors ----------------------------------------------------------------------------

    def start_seq(self, hook: WebhookConfig, committed_seq: int) -> int:
        """The first seq this endpoint has not handled: after its cursor when the journal
        has one, else after what is committed now (a new endpoint gets new events only).
        The cursor is registered at once, so retention holds from here."""
        known = self.journal.recovery.cursors.get(hook.cursor_name)
        seq = known if known is not None else committed_seq
        self.journal.register_cursor(hook.cursor_name, seq)
        return seq + 1

    def advance(self, hook: WebhookConfig, seq: int) -> None:
        """Every event through `seq` is delivered or dead-lettered: retention may go on."""
        self.journal.register_cursor(hook.cursor_name, seq)

    def forget_others(self, hooks: tuple[WebhookConfig, ...]) -> list[str]:
        """Unregister the cursors of endpoints no longer configured (they would hold
        retention forever); their names."""
        keep = {hook.cursor_name for hook in hooks}
        gone = [name for name in self.journal.recovery.cursors
                if name.startswith("webhook:") and name not in keep]
        for name in gone:
            self.journal.unregister_cursor(name)
        return gone

    # -- writes ----------------------------------------------------------------------------

    def unqueue_removed(self, hooks: tuple[WebhookConfig, ...]) -> int:
        """Letters re-queued for an endpoint that is no longer configured go back to
        "dead": nothing would send them, and only dead letters are listed, retried or
        deleted. How many; durable on return."""
        names = tuple(hook.name for hook in hooks)
        rows = self._query("SELECT id FROM webhook_dead_letters WHERE state='queued' AND"
                           f" endpoint NOT IN ({', '.join('?' * len(names))})", names)
        if rows:
            ticket = self.journal.record_webhook(WebhookLetterState(
                letter_ids=tuple(int(letter_id) for (letter_id,) in rows), state="dead",
                at=_now()))
            if not ticket.wait(REQUEUE_TIMEOUT_S):
                raise JournalWriteFailed(f"not committed within {REQUEUE_TIMEOUT_S} s")
        return len(rows)

    def dead_letter(self, endpoint: str, event: dict[str, Any], *, attempts: int,
                    http_status: int | None, error: str | None,
                    max_dead_letters: int) -> int:
        """Dead-letter `event`; how many of the endpoint's oldest dead letters it deletes
        (in the same commit) to keep at most `max_dead_letters`."""
        with self._writes:
            held = self._dead_count(endpoint) + 1
            dropped = max(0, held - max_dead_letters)
            self.journal.record_webhook(WebhookDeadLetter(
                endpoint=endpoint, seq=int(event.get("seq", 0)), event_type=event.get("type"),
                event=event, attempts=attempts, http_status=http_status, error=error,
                failed_at=_now(), drop_oldest=dropped))
            self._dead[endpoint] = held - dropped
        return dropped

    def letter_state(self, letter_id: int, state: str, *, endpoint: str, attempts: int,
                     http_status: int | None = None, error: str | None = None) -> None:
        """A re-queued letter of `endpoint` was sent again: "delivered", or "dead" again."""
        with self._writes:
            self.journal.record_webhook(WebhookLetterState(
                letter_ids=(letter_id,), state=state, attempts=attempts,
                http_status=http_status, error=error, at=_now()))
            if state == "dead" and endpoint in self._dead:
                self._dead[endpoint] += 1

    def log(self, endpoint: str, delivery_id: str, events: list[dict[str, Any]], *,
            outcome: str, attempts: int, http_status: int | None, latency_ms: float | None,
            error: str | None) -> None:
        types = {e.get("type") for e in events}
        self.journal.record_webhook(WebhookDelivery(
            endpoint=endpoint, delivery_id=delivery_id, first_seq=int(events[0]["seq"]),
            last_seq=int(events[-1]["seq"]),
            event_type=str(events[0].get("type")) if len(types) == 1 else "batch",
            outcome=outcome, attempts=attempts, http_status=http_status,
            latency_ms=None if latency_ms is None else round(latency_ms, 3),
            error=error, at=_now()))

    def requeue(self, endpoint: str | None = None, ids: tuple[int, ...] = (),
                endpoints: frozenset[str] | None = None) -> Tally:
        """Mark dead letters "queued" for their deliverer to send again (all of
        `endpoint`'s, or these ids; only those of `endpoints` when given); durable on
        return."""
        return self._pages(endpoint, ids, endpoints, lambda chosen: WebhookLetterState(
            letter_ids=chosen, state="queued", at=_now()))

    def delete(self, endpoint: str | None = None, ids: tuple[int, ...] = ()) -> Tally:
        """Delete dead letters (all of `endpoint`'s, or these ids; an endpoint no longer
        configured included); durable on return."""
        return self._pages(endpoint, ids, None,
                           lambda chosen: WebhookLettersDeleted(letter_ids=chosen))

    def _pages(self, endpoint: str | None, ids: tuple[int, ...],
               endpoints: frozenset[str] | None,
               record: Callable[[tuple[int, ...]], WebhookRecord]) -> Tally:
        """`record` the "dead" letters asked for (these ids, else every one), REQUEUE_PAGE
        at a time: one read and one commit each, so millions are never held at once. Each
        page is durable before the next is read. What was recorded, in id order."""
        tally = Tally()
        if ids:
            unique = sorted(set(ids))
            for start in range(0, len(unique), REQUEUE_PAGE):
                part = unique[start:start + REQUEUE_PAGE]
                self._page(f"{SQL_DEAD_PAGE} AND id IN ({', '.join('?' * len(part))})",
                           (endpoint, endpoint, *part), endpoints, record, tally)
            return tally
        # Up to the newest letter at the start: a letter dead-lettered meanwhile waits for
        # the next call (an endpoint refusing a flood would otherwise keep this going).
        ((ceiling,),) = self._query("SELECT coalesce(max(id), 0) FROM webhook_dead_letters", ())
        after: int | None = 0
        while after is not None:
            after = self._page(f"{SQL_DEAD_PAGE} AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                               (endpoint, endpoint, after, ceiling, REQUEUE_PAGE), endpoints,
                               record, tally)
        return tally

    def _page(self, sql: str, params: tuple[Any, ...], endpoints: frozenset[str] | None,
              record: Callable[[tuple[int, ...]], WebhookRecord], tally: Tally) -> int | None:
        """`record` one page of dead letters (those of `endpoints`); the last id read, None
        when the page was empty."""
        with self._writes:
            self._written()  # no pending dead letter or drop: what is read stays true
            rows = self._query(sql, params)
            chosen = [(letter_id, endpoint) for letter_id, endpoint in rows
                      if endpoints is None or endpoint in endpoints]
            if not chosen:
                return int(rows[-1][0]) if rows else None
            ticket = self.journal.record_webhook(record(tuple(i for i, _ in chosen)))
            for _, endpoint in chosen:  # no longer "dead" once written
                if endpoint in self._dead:
                    self._dead[endpoint] -= 1
        if not ticket.wait(REQUEUE_TIMEOUT_S):
            raise JournalWriteFailed(f"not committed within {REQUEUE_TIMEOUT_S} s ("
                                     f"{tally.count} dead letter(s) done before)")
        tally.add([letter_id for letter_id, _ in chosen])
        return int(rows[-1][0])

    def held(self, endpoint: str) -> int:
        """How many letters of `endpoint` the journal holds, whatever their state."""
        ((count,),) = self._query(
            "SELECT count(*) FROM webhook_dead_letters WHERE endpoint=?", (endpoint,))
        return int(count)

    def letters(self, ids: tuple[int, ...]) -> dict[int, tuple[str, str]]:
        """letter id -> (its endpoint, its state: dead, queued or delivered), of `ids`."""
        found: dict[int, tuple[str, str]] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound parameters are limited
            part = ids[start:start + 500]
            for letter_id, endpoint, state in self._query(
                    "SELECT id, endpoint, state FROM webhook_dead_letters WHERE id IN"
                    f" ({', '.join('?' * len(part))})", part):
                found[letter_id] = (endpoint, state)
        return found

    def _dead_count(self, endpoint: str) -> int:
        """The endpoint's "dead" letters once all queued is written (`_writes` held)."""
        held = self._dead.get(endpoint)
        if held is None:
            self._written()
            (held,) = self._query("SELECT count(*) FROM webhook_dead_letters WHERE endpoint=?"
                                  " AND state='dead'", (endpoint,))[0]
            self._dead[endpoint] = held
        return held

    def _written(self) -> None:
        """Wait until every record queued so far is committed."""
        if not self.journal.barrier().wait(REQUEUE_TIMEOUT_S):
            raise JournalWriteFailed(f"the journal did not commit within {REQUEUE_TIMEOUT_S} s")

    # -- reads -----------------------------------------------------------------------------

    def failed(self, endpoint: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Dead letters (state "dead"), oldest first."""
        rows = self._query(
            f"SELECT {', '.join(LETTER_COLUMNS)} FROM webhook_dead_letters WHERE state='dead'"
            " AND (? IS NULL OR endpoint=?) ORDER BY id LIMIT ?", (endpoint, endpoint, limit))
        return [dict(zip(LETTER_COLUMNS, row, strict=True)) for row in rows]

    def queued(self, endpoint: str, limit: int = 100,
               after_id: int = 0) -> list[tuple[int, int, dict[str, Any]]]:
        """(id, attempts, event) of the endpoint's re-queued dead letters with ids past
        `after_id`, oldest first."""
        rows = self._query("SELECT id, attempts, event FROM webhook_dead_letters WHERE"
                           " endpoint=? AND state='queued' AND id > ? ORDER BY id LIMIT ?",
                           (endpoint, after_id, limit))
        return [(int(i), int(n), unpack(blob)) for i, n, blob in rows]

    def deliveries(self, endpoint: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The delivery log, newest first."""
        rows = self._query(
            f"SELECT {', '.join(LOG_COLUMNS)} FROM webhook_deliveries WHERE"
            " (? IS NULL OR endpoint=?) ORDER BY id DESC LIMIT ?", (endpoint, endpoint, limit))
        return [dict(zip(LOG_COLUMNS, row, strict=True)) for row in rows]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _now() -> str:
    return iso_utc(time.time())
