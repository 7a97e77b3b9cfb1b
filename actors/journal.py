"""The journal: the ordered log made durable in one SQLite file (WAL), with group commit.

    Journal.open(data_dir, *, sync="normal", keep_events=10_000_000, keep_days=None,
                 clock=None, retry_min_s=0.05, retry_max_s=1.0) -> Journal
    Journal.from_config(data_dir, config: JournalConfig, *, clock=None) -> Journal
    .recovery: Recovery        # last_seq, wseq, emergency, breakers, open_executions,
                               # unresolved_intents, cursors: read at open, before anything runs
    .start(*, on_commit: (seq) -> None, on_error: (exc) -> None,
           on_recovered_write: () -> None = no-op, on_packed: (chunks) -> None = None,
           give_way: (seq, max_s) -> None = None, stop_giving_way: () -> None = None)
    .append(events: list[dict]) -> None          # under the sequencing lock: enqueue only
    .record_submitted(execution_id, workflow_id, inputs, bot_id, strategy_id, priority,
                      submitted_at) -> Ticket
    .record_intent(execution_id, node_id, idempotency_key, attempt, started_at) -> Ticket
    .record_intent_outcome(idempotency_key, outcome | None, note=None, detail=None) -> Ticket
    .save_emergency(snapshot) -> Ticket / .save_breakers(states) -> Ticket
    .save_execution_ids(state) -> Ticket
    .register_cursor(name, seq) / .unregister_cursor(name)
    .record_webhook(record) -> Ticket            # dead letters, delivery log (webhooks)
    .wait_committed(seq, timeout) -> bool / .flush(timeout) -> bool / .prune(timeout) -> bool
    .barrier() -> Ticket                         # done once all queued before is committed
    .mark_interrupted(execution_ids, timeout=10.0) -> None            # durable on return
    .resolve_intent(idempotency_key, outcome, note=None, timeout=10.0) -> dict  # durable
    .replay(since_seq, limit=1000, topic_prefix="") -> {events, next_seq, last_seq, first_seq}
    .read_events(since_seq, limit=1000, topic_prefix="") -> list[dict]
    .first_seq() -> int / .last_committed_seq() -> int
    .execution(execution_id, node_ids=None) -> dict | None / .has_execution(id) -> bool
    .executions(workflow=None, status=None, limit=100) -> list[dict]   # newest first
    .intents(unresolved=True) -> list[dict] / .emergency_history(limit=100) -> list[dict]
    .stats() -> dict / .close(timeout=5.0) -> None

Threads: `append` is called under the engine's sequencing lock and only enqueues (no I/O,
no packing, no waiting). Records and reads may come from any thread. The callbacks and
ticket callbacks run in the writer's thread: they must be quick and must not wait on the
journal. A `Ticket` is done once its record is committed; while writes fail it stays
pending; it gets an `error` (JournalClosed) only if the journal closes first.

Opening (actors/journal_opening.py): data_dir and data_dir/journal.lock (flocks held while open:
a second opener gets JournalLocked) and data_dir/journal.db (actors/journal_schema.py).

Writing (actors/journal_writer.py, actors/journal_group.py): one thread with its own
connection writes everything queued since its last commit in ONE transaction (group
commit), then calls `on_commit(last_seq)` (the ordered log may release events up to
there), then completes the records' tickets. Only committed data ever gets out: a failed
write reports nothing, calls `on_error` once per failure episode (the engine halts in
memory), keeps everything and retries with backoff; the first success calls
`on_recovered_write()`, commits resuming in order with no gap.

Records and what waits on them: `record_submitted` (the reply to a submit waits),
`record_intent` (an action waits before its function is called), `record_intent_outcome`
(late results: outcome None keeps the intent open for an operator, with the result as
`detail`), `save_emergency` / `save_breakers` (coalesced: the newest per commit). An
action's intent gets outcome "completed"/"failed" from its own node_completed/node_failed
event (not after a NodeTimeout: the function may still be running).

Reading (actors/journal_reads.py): any thread, committed data only.
`execution(id)["nodes"]` is the terminal event's `nodes` map when it carries one (outputs
filled in from `results`); otherwise it is rebuilt from the execution's events still kept
(for a running execution: what is committed so far; empty once retention pruned them).

Retention (`keep_events` newest events and/or `keep_days`; either prunes) runs in the
writer between commits, in small passes that never go past a registered cursor, an
unresolved intent or the newest batch row: actors/journal_retention.py.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from actors.clock import Clock, SystemClock
from actors.config import JournalConfig
from actors.errors import JournalClosed, JournalWriteFailed, NotFound
from actors.events import Event, iso_utc
from actors.journal_caps import DEFAULT_MAX_EVENT_BYTES
from actors.journal_checkpointer import BACKSTOP_PAGES, Checkpointer
from actors.journal_opening import open_data_dir
from actors.journal_reads import JournalReader, NodeIds, Recovery
from actors.journal_records import (
    Barrier,
    Cursor,
    Intent,
    IntentOutcome,
    Interrupted,
    Prune,
    Record,
    SaveState,
    Submitted,
    Ticket,
    WebhookRecord,
    log,
)
from actors.journal_schema import DataDirLock
from actors.journal_writer import JournalWriter
from actors.wire_ring import Chunk

__all__ = ["RESOLUTIONS", "Journal", "Recovery", "Ticket"]

#: Outcomes an operator may give an action intent (docs/protocol.md (control ops) `resolve_intent`).
RESOLUTIONS = frozenset({"filled", "not_filled", "unknown"})


def _ignore() -> None:
    """The default on_recovered_write."""


class Journal:
    """One data_dir's journal. Open with `Journal.open`; see the module docstring."""

    def __init__(self, *, path: Path, lock: DataDirLock, writer: JournalWriter,
                 recovery: Recovery, clock: Clock, sync: str = "normal") -> None:
        self.path = path
        self.recovery = recovery
        self._lock = lock
        self._writer = writer
        self._clock = clock
        self._queue = writer.queue
        self._wake = writer.wake
        self._reader = JournalReader(path, lambda: writer.committed_seq)
        #: WAL checkpoints off the commit path (actors/journal_checkpointer.py).
        self._checkpointer = Checkpointer(path, sync=sync)
        self._state_lock = threading.Lock()
        self._started = False
        self._closed = False
        #: The last seq appended (stats' lag; an intent's seq_at).
        self._appended_seq = recovery.last_seq

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, sync: str = "normal",
             keep_events: int | None = 10_000_000, keep_days: float | None = None,
             clock: Clock | None = None, retry_min_s: float = 0.05,
             retry_max_s: float = 1.0,
             max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Journal:
        """Lock data_dir, open (or create, or migrate) journal.db and read `recovery`
        (actors/journal_opening.py)."""
        clock = clock or SystemClock()
        opened = open_data_dir(data_dir, sync=sync, keep_events=keep_events,
                               keep_days=keep_days, clock=clock, retry_min_s=retry_min_s,
                               retry_max_s=retry_max_s, max_event_bytes=max_event_bytes)
        return cls(path=opened.path, lock=opened.lock, writer=opened.writer,
                   recovery=opened.recovery, clock=clock, sync=sync)

    @classmethod
    def from_config(cls, data_dir: str | os.PathLike[str], config: JournalConfig, *,
                    clock: Clock | None = None) -> Journal:
        return cls.open(data_dir, sync=config.sync, keep_events=config.keep_events,
                        keep_days=config.keep_days, clock=clock,
                        max_event_bytes=config.max_event_bytes)

    # -- writing ------------------------------------------------------------------------------

    def start(self, *, on_commit: Callable[[int], None],
              on_error: Callable[[BaseException], None],
              on_still_failing: Callable[[BaseException], None] | None = None,
              on_recovered_write: Callable[[], None] = _ignore,
              give_way: Callable[[int, float], None] | None = None,
              stop_giving_way: Callable[[], None] | None = None,
              on_packed: Callable[[list[Chunk]], None] | None = None) -> None:
        """Start the writer thread. Appends made before this are written first.
        `give_way(committed_seq, max_s)` is called before each take (a halt's priority),
        `stop_giving_way()` once close() begins (a give_way under way returns at once);
        `on_packed(chunks)` after each commit, before `on_commit`, with its events' payloads.
        `on_error` is called when writes start failing, `on_still_failing` on each retry
        that fails again, `on_recovered_write` once one succeeds."""
        with self._state_lock:
            if self._closed:
                raise JournalClosed("the journal is closed")
            if self._started:
                raise RuntimeError("the journal is already started")
            writer = self._writer
            checkpointer = self._checkpointer

            def committed(seq: int) -> None:
                checkpointer.nudge()
                on_commit(seq)

            writer.on_commit, writer.on_error = committed, on_error
            if on_still_failing is not None:
                writer.on_still_failing = on_still_failing
            writer.on_recovered_write = on_recovered_write
            writer.on_packed = on_packed
            if give_way is not None:
                writer.give_way = give_way
            if stop_giving_way is not None:
                writer.stop_giving_way = stop_giving_way
            writer.after_commit = lambda: checkpointer.rewind_if_due(writer.conn)

            def damaged(why: str) -> None:
                if writer.unusable is None:
                    writer.unusable = (f"{writer.path} is damaged ({why}): it was changed "
                                       "under the daemon; stop it and restore the file "
                                       "from a backup")
                    self.barrier()  # a commit to fail now (HALT), not at the next event

            checkpointer.on_damage = damaged
            self._started = True
            writer.conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            checkpointer.start()
            writer.start()

    def append(self, events: list[Event]) -> None:
        """Queue a batch of sequenced events. Called under the engine's sequencing lock:
        enqueues and nothing else. `events` must not be mutated afterwards."""
        if events:
            self._queue.append(events)
            self._appended_seq = events[-1]["seq"]
            if not self._wake.is_set():
                self._wake.set()

    def _submit(self, record: Record) -> Ticket:
        # Looked at and queued in one step: a record queued just after close() took the
        # leftover tickets would keep a ticket nobody finishes.
        with self._state_lock:
            if not self._closed:
                self._enqueue_locked(record)
                return record.ticket
        # a failed ticket, not an exception: callers are often hot paths
        record.ticket._finish(JournalClosed("the journal is closed"))
        return record.ticket

    def _enqueue_locked(self, record: Record) -> None:
        self._queue.append(record)
        self._wake.set()

    def record_submitted(self, execution_id: str, workflow_id: str, inputs: Mapping[str, Any],
                         bot_id: str | None, strategy_id: str | None, priority: int,
                         submitted_at: str | None, *,
                         refused: tuple[str, str] | None = None) -> Ticket:
        """An execution was accepted (status "queued"), or refused at the door (`refused`:
        its error and error_type; status "refused")."""
        return self._submit(Submitted(
            execution_id=execution_id, workflow_id=workflow_id, inputs=inputs, bot_id=bot_id,
            strategy_id=strategy_id, priority=priority, submitted_at=submitted_at,
            refused=refused, seq_at=self._appended_seq if refused else None))

    def record_intent(self, execution_id: str, node_id: str, idempotency_key: str,
                      attempt: int, started_at: str | None) -> Ticket:
        """An action is about to be called; it waits for this ticket."""
        return self._submit(Intent(
            execution_id=execution_id, node_id=node_id, idempotency_key=idempotency_key,
            attempt=attempt, started_at=started_at, seq_at=self._appended_seq))

    def record_intent_outcome(self, idempotency_key: str, outcome: str | None,
                              note: str | None = None, detail: Any = None) -> Ticket:
        """What became of an action. outcome None records `detail` (e.g. a timed-out
        action's late result, {"late": "late_ok", ...}) and leaves it for an operator."""
        return self._submit(IntentOutcome(
            idempotency_key=idempotency_key, outcome=outcome, note=note, detail=detail,
            resolved_at=iso_utc(self._clock.time()) if outcome is not None else None))

    def save_emergency(self, snapshot: Mapping[str, Any]) -> Ticket:
        """The kill switch's snapshot (state, reason, source, limits, ...), kept as given."""
        return self._submit(SaveState(name="emergency", value=dict(snapshot)))

    def save_breakers(self, states: Mapping[str, Any]) -> Ticket:
        return self._submit(SaveState(name="breakers", value=dict(states)))

    def save_execution_ids(self, state: Mapping[str, Any]) -> Ticket:
        """The execution ids' reservation (actors/execution_ids.py); queued, not waited for."""
        return self._submit(SaveState(name="execution_ids", value=dict(state)))

    def register_cursor(self, name: str, seq: int) -> None:
        """A reader (a webhook) has passed `seq`: retention keeps every event after it.
        Kept across restarts (`recovery.cursors`)."""
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise TypeError(f"seq must be an int, not {type(seq).__name__}")
        self._writer.cursors[name] = seq  # at once: a prune may run before the commit
        self._submit(Cursor(name=name, seq=seq))

    def unregister_cursor(self, name: str) -> None:
        self._submit(Cursor(name=name, seq=None))

    def record_webhook(self, record: WebhookRecord) -> Ticket:
        """A webhook's dead letter, letter state or delivery log line (actors/webhook_store.py)."""
        return self._submit(record)

    def wait_committed(self, seq: int, timeout: float) -> bool:
        """True once every event up to `seq` is committed."""
        writer = self._writer
        with writer.committed:
            return writer.committed.wait_for(lambda: writer.committed_seq >= seq, timeout)

    def barrier(self) -> Ticket:
        """A ticket done once everything queued before this call is committed."""
        return self._submit(Barrier())

    def clear_write_failed_mark(self) -> None:
        """Remove data_dir's write-failed mark once everything queued now is committed."""
        self.barrier().add_done_callback(self._writer.clear_mark_if_done)

    def flush(self, timeout: float) -> bool:
        """True once everything queued before this call is committed."""
        return self.barrier().wait(timeout)

    def prune(self, timeout: float = 10.0) -> bool:
        """Run retention now, until nothing more may go (normally it runs by itself)."""
        return self._write_and_wait(Prune(), timeout)

    def mark_interrupted(self, execution_ids: Iterable[str], timeout: float = 10.0) -> None:
        """Recovery: these queued/running executions died with the last process. Durable
        when it returns; the engine publishes their events."""
        ids = tuple(execution_ids)
        if ids:
            self._write_and_wait(Interrupted(execution_ids=ids,
                                             ended_at=iso_utc(self._clock.time())), timeout)

    def resolve_intent(self, idempotency_key: str, outcome: str, note: str | None = None,
                       timeout: float = 10.0) -> dict[str, Any]:
        """An operator's reconciliation of an action intent; durable when it returns.

        An intent that had an outcome already (the engine's, or an earlier resolution: an
        operator correcting an `unknown`) gets this one in its place; what it replaced goes
        to a warning log line (`intent_resolution_replaced`), so the earlier record is
        never lost without a word. (The result stays the control op's documented shape.)"""
        if not isinstance(idempotency_key, str):  # (123 read "no action intent with key 123")
            raise TypeError(f"idempotency_key must be a str, not {type(idempotency_key).__name__}")
        if outcome not in RESOLUTIONS:
            raise ValueError(f"outcome must be one of {sorted(RESOLUTIONS)}, not {outcome!r}")
        if note is not None and not isinstance(note, str):
            raise TypeError("note must be a str")
        known = self._reader.intent(idempotency_key)
        if known is None:
            self.flush(timeout)  # it may have been recorded a moment ago
            known = self._reader.intent(idempotency_key)
            if known is None:
                raise NotFound(f"no action intent with idempotency key {idempotency_key!r}")
        self._write_and_wait(IntentOutcome(
            idempotency_key=idempotency_key, outcome=outcome, note=note,
            resolved_at=iso_utc(self._clock.time())), timeout)
        previous = known["outcome"]
        # (the same answer again, a retry after a lost reply, replaces nothing)
        if previous is not None and (previous, known["note"]) != (outcome, note):
            log.warning("intent_resolution_replaced", idempotency_key=idempotency_key,
                        outcome=outcome, previous_outcome=previous,
                        previous_note=known["note"], previous_resolved_at=known["resolved_at"])
        return {"idempotency_key": idempotency_key, "outcome": outcome}

    def _write_and_wait(self, record: Record, timeout: float) -> bool:
        with self._state_lock:
            if self._closed:
                raise JournalClosed("the journal is closed")
            if not self._started:  # recovery, before the writer runs: write it here
                self._writer.write_now([record])
                return True
            self._enqueue_locked(record)
        if not record.ticket.wait(timeout):
            raise JournalWriteFailed(f"journal write not committed within {timeout} s "
                                     f"({self._writer.last_error or 'writer busy'})")
        return True

    def _testing_fail_commits(self, count: int) -> None:
        """Test hook: the next `count` commits fail like an I/O error would."""
        self._writer.fail_commits = count

    def _testing_before_commit(self, hook: Callable[[], None] | None) -> None:
        """Test hook: `hook()` runs in the writer before each COMMIT (a slow or held
        disk: everything queued meanwhile waits for the next commit)."""
        self._writer.before_commit = hook

    # -- reading ------------------------------------------------------------------------------

    def last_committed_seq(self) -> int:
        return self._writer.committed_seq

    def first_seq(self) -> int:
        """The oldest seq still kept (last committed + 1 when none is)."""
        return self._reader.first_seq()

    def replay(self, since_seq: int, limit: int = 1000, topic_prefix: str = "") -> dict[str, Any]:
        """{"events", "next_seq", "last_seq", "first_seq"}: committed events from since_seq."""
        return self._reader.replay(since_seq, limit, topic_prefix)

    def read_events(self, since_seq: int, limit: int = 1000,
                    topic_prefix: str = "") -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self._reader.replay(since_seq, limit,
                                                           topic_prefix)["events"]
        return events

    def execution(self, execution_id: str,
                  node_ids: NodeIds | None = None) -> dict[str, Any] | None:
        return self._reader.execution(execution_id, node_ids)

    def executions(self, workflow: str | None = None, status: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        return self._reader.executions(workflow, status, limit)

    def open_node_states(self, started: dict[str, int]) -> dict[str, dict[str, Any]]:
        return self._reader.open_node_states(started)

    def has_execution(self, execution_id: str) -> bool:
        return self._reader.has_execution(execution_id)

    def intents(self, unresolved: bool = True) -> list[dict[str, Any]]:
        return self._reader.intents(unresolved)

    def intent(self, idempotency_key: str) -> dict[str, Any] | None:
        return self._reader.intent(idempotency_key)

    def emergency_history(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._reader.emergency_history(limit)

    def write_error(self) -> str | None:
        """The last write's error while writes are failing; None while they succeed."""
        writer = self._writer
        return writer.last_error if writer.failing else None

    def stats(self) -> dict[str, Any]:
        stats = self._writer.stats() | self._checkpointer.stats()
        stats["appended_seq"] = self._appended_seq
        stats["lag"] = self._appended_seq - stats["committed_seq"]
        return stats

    # -- closing ------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is queued (unless writes are failing), stop the writer, release
        data_dir. Records never written get JournalClosed on their tickets."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        writer = self._writer
        stopped = writer.stop(timeout)
        self._checkpointer.stop(timeout)
        if not stopped:
            # The thread is stuck in I/O: keep the lock (process exit frees it) rather than
            # let another process write beside it.
            self._reader.close()
            return
        if not self._started and writer.queue:
            # Appended but never started: keep what we were given (or fail its tickets).
            with contextlib.suppress(JournalWriteFailed):
                writer.write_now([])
        for ticket in writer.leftover_tickets():
            ticket._finish(JournalClosed("the journal closed before this record was written"))
        self._reader.close()
        writer.conn.close()
        self._lock.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
