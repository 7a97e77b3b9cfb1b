"""The journal's writer: one thread, one sqlite3 connection, group commit, retention, retries.

Everything queued since the last commit (event lists appended by the ordered log, records
with tickets) is turned into rows (`Group`) and written in ONE transaction. Events become
one `event_batches` row per commit (split at MAX_ROW_EVENTS), packed here, never under the
engine's lock; executions, intents and the emergency history are derived from the events
by their `type` alone. After the commit: the committed seq is published (`on_commit`),
then tickets complete.

A failed commit keeps its group: nothing of it is reported, `on_error` is called once per
failure episode, and the writer retries (backoff doubling from retry_min_s to retry_max_s)
with the group plus whatever queued meanwhile, so commits resume in order with no gap; the
first success calls `on_recovered_write`. While writes fail, data_dir holds a mark
(actors/journal_failure_mark.py) until everything queued by the last failure, the HALT
it caused included, is committed: a restart before then comes back halted. A file removed,
replaced (actors/journal_files.py) or found damaged by a checkpoint fails writes for good.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.clock import Clock
from actors.errors import JournalError, JournalWriteFailed
from actors.journal_caps import DEFAULT_MAX_EVENT_BYTES
from actors.journal_failure_mark import clear_mark, set_mark
from actors.journal_files import JournalFiles
from actors.journal_group import Group, GroupBuilder
from actors.journal_records import Ticket, log
from actors.journal_retention import Retention, rollback
from actors.journal_sql import SQL_BATCH, SQL_EXECUTION, SQL_HISTORY, SQL_WORKFLOW
from actors.wire_ring import Chunk

#: A commit takes at most about this many events: a state change queued behind a group
#: waits for that group's commit, so a group is kept to a few milliseconds of work.
GROUP_EVENTS_MAX = 2048
#: How long after a halt began the writer gives way to it, at most (actors/interpreter.py,
#: `HaltPriority`).
HALT_GIVE_WAY_S = 0.1

CommitCallback = Callable[[int], None]
ErrorCallback = Callable[[BaseException], None]


class JournalWriter:
    """The writer thread's state. Fields below `stats` are read by other threads unlocked
    (single int/float/bool stores are atomic under the GIL)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, clock: Clock, last_seq: int,
                 keep_events: int | None, keep_days: float | None,
                 open_intents: set[str], cursors: dict[str, int],
                 retry_min_s: float, retry_max_s: float,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.conn = conn
        self.path = path
        self.clock = clock
        self.cursors = dict(cursors)
        self.retention = Retention(keep_events=keep_events, keep_days=keep_days, clock=clock,
                                   cursors=self.cursors)
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.queue: deque[Any] = deque()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.builder = GroupBuilder(next_seq=last_seq + 1, open_intents=open_intents,
                                    clock=clock, max_event_bytes=max_event_bytes)
        self.committed_seq = last_seq
        self.committed = threading.Condition()
        self.on_commit: CommitCallback = lambda seq: None
        #: After a commit, before `on_commit`: its events' packed payloads, for the
        #: publisher (actors/wire_ring.py); None: nobody wants them.
        self.on_packed: Callable[[list[Chunk]], None] | None = None
        self.on_error: ErrorCallback = lambda exc: None
        #: Called on each later failure of the same episode (each retry that fails).
        self.on_still_failing: ErrorCallback = lambda exc: None
        self.on_recovered_write: Callable[[], None] = lambda: None
        #: Between two transactions, once a commit's tickets are released (the checkpointer's
        #: WAL rewind): nobody waiting on this commit waits for it.
        self.after_commit: Callable[[], None] = lambda: None
        #: Before taking work, with the committed seq: waits while a halt should have the
        #: interpreter (`HaltPriority.give_way`).
        self.give_way: Callable[[int, float], None] = lambda seq, max_s: None
        #: Called once `stop` begins: a give_way under way returns (a closing journal
        #: commits what is queued and ends; it does not wait on a halt).
        self.stop_giving_way: Callable[[], None] = lambda: None
        self.thread: threading.Thread | None = None
        self.pending: Group | None = None
        #: journal.db and its WAL as opened, checked after each commit.
        self.files = JournalFiles(path)
        self._failure_streak = 0
        #: Test hook: this many commits fail (inside the transaction, before COMMIT).
        self.fail_commits = 0
        #: Why journal.db can no longer be written (a checkpoint found it damaged, it was
        #: removed or replaced), or None: from then on every write fails, before anything
        #: more goes into it.
        self.unusable: str | None = None
        #: journal.db was removed or replaced: copy what the open file holds, once.
        self._rescue_due = False
        #: Test hook: called before each COMMIT (a slow or held disk).
        self.before_commit: Callable[[], None] | None = None
        # stats
        self.commits = 0
        self.events_committed = 0
        self.records_committed = 0
        self.batch_last = 0
        self.batch_max = 0
        self.commit_ms_last = 0.0
        self.commit_ms_max = 0.0
        self.commit_ms_total = 0.0
        self.failures = 0
        self.failing = False
        #: The seq to commit past before data_dir's write-failed mark goes (None: no mark).
        self.mark_until: int | None = None
        self._mark_made = False
        self.last_error: str | None = None

    # -- thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="tradeloom-journal", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a dead writer must be loud, not silent
            self.failing = True
            self.last_error = f"writer stopped: {type(exc).__name__}: {exc}"
            log.exception("journal_writer_crashed")
            error = JournalError(f"journal writer stopped: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._hold_mark()
            _call(self.on_error, error)
            self._hold_mark()

    def _loop(self) -> None:
        idle_s = self.retention.idle_s()
        while True:
            if self.pending is None and not self.queue:  # (a take may leave some queued)
                self.wake.wait(idle_s)
            self.wake.clear()  # before taking: an append after this sets it again
            self.give_way(self.committed_seq, HALT_GIVE_WAY_S)
            self._take()
            if self.pending is not None and not self._commit_pending():
                if self.stopping.is_set():
                    return  # give up: close() fails the tickets left
                self.stopping.wait(self._backoff())
                continue
            if self.stopping.is_set() and not self.queue:
                return
            self._housekeeping()

    def _take(self) -> None:
        queue = self.queue
        if not queue:
            return
        items = []
        events = 0
        while queue and events < GROUP_EVENTS_MAX:
            item = queue.popleft()
            items.append(item)
            if type(item) is list:
                events += len(item)
                if item[-1].get("type") == "emergency_state_changed":
                    # A state change's reply waits for its own event's commit: commit it
                    # without what queued up behind it (a halt ends every execution).
                    break
        group = self.builder.build(items)
        if self.pending is None:
            self.pending = group
        else:
            self.pending.merge(group)

    def write_now(self, items: list[Any]) -> None:
        """Write `items` in the caller's thread (before start(): recovery's own writes)."""
        self.queue.extend(items)
        while self.queue:  # a take stops after a state change or GROUP_EVENTS_MAX events
            self._take()
            if self.pending is not None and not self._commit_pending():
                raise JournalWriteFailed(f"journal write failed: {self.last_error}")
        self._housekeeping()

    # -- commit -------------------------------------------------------------------------------

    def _commit_pending(self) -> bool:
        group = self.pending
        assert group is not None
        started = time.perf_counter()
        try:
            self._write(group)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the data, halt, retry
            self._rollback()
            self._failed(exc)
            if self._rescue_due:  # (after the HALT: a big file's copy must not delay it)
                self._rescue_due = False
                self.files.rescue_db(self.conn)
            return False
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.pending = None
        recovered, self.failing = self.failing, False
        self._failure_streak = 0
        self.commits += 1
        n = group.event_count
        self.events_committed += n
        self.records_committed += len(group.tickets)
        self.batch_last = n
        self.batch_max = max(self.batch_max, n)
        self.commit_ms_last = elapsed_ms
        self.commit_ms_max = max(self.commit_ms_max, elapsed_ms)
        self.commit_ms_total += elapsed_ms
        self.cursors.update(group.cursor_seqs)
        for name in group.cursors_removed:
            self.cursors.pop(name, None)
        if group.wire and self.on_packed is not None:
            _call(self.on_packed, group.wire)  # before the committed mark: see wire_ring.py
        if group.last_seq > self.committed_seq:
            with self.committed:
                self.committed_seq = group.last_seq
                self.committed.notify_all()
            _call(self.on_commit, group.last_seq)
        if self.mark_until is not None and self.committed_seq >= self.mark_until:
            clear_mark(self.path.parent)
            self.mark_until = None
            self._mark_made = False
        for ticket in group.tickets:
            ticket._finish()
        if recovered:
            log.warning("journal_write_recovered", failures=self.failures)
            _call(self.on_recovered_write)
        if group.prune_tickets:
            self.retention.prune_all(self.conn, self.committed_seq)
            for ticket in group.prune_tickets:
                ticket._finish()
        _call(self.after_commit)
        return True

    def _write(self, group: Group) -> None:
        if self.unusable is not None:
            raise JournalWriteFailed(self.unusable)
        conn = self.conn
        conn.execute("BEGIN")
        if group.batches:
            self.retention.restamp_if_set_back(conn, group.batches)
            conn.executemany(SQL_BATCH, group.batches)
        if group.executions:
            conn.executemany(SQL_EXECUTION, group.executions.values())
        if group.history:
            conn.executemany(SQL_HISTORY, group.history)
        for sql, params in group.ops:
            conn.executemany(sql, params)
        if group.wseq:
            conn.executemany(SQL_WORKFLOW, list(group.wseq.items()))
        if self.before_commit is not None:
            self.before_commit()
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise sqlite3.OperationalError("disk I/O error (injected by a test)")
        conn.execute("COMMIT")
        self._check_files()

    def _check_files(self) -> None:
        try:
            self.files.check(self.conn)
        except JournalWriteFailed as exc:
            if self.files.db_gone:  # for good: nothing more goes into the removed file
                self.unusable = str(exc)
                self._rescue_due = True
            raise

    def _rollback(self) -> None:
        rollback(self.conn)
        self.retention.rolled_back()

    def _housekeeping(self) -> None:
        if not self.failing:  # (a failing disk is retried first; pruning can wait)
            self.retention.when_due(self.conn, self.committed_seq)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._failure_streak += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failing:
            _call(self.on_still_failing, exc)
            self._hold_mark()
            return
        self.failing = True
        self._hold_mark()  # before the HALT is in force: a kill right after still finds it
        log.error("journal_write_failed", error=self.last_error, path=str(self.path),
                  pending_events=self.pending.event_count if self.pending else 0)
        error = exc if isinstance(exc, JournalError) else JournalWriteFailed(
            f"journal write failed: {self.last_error}")
        if error is not exc:
            error.__cause__ = exc
        _call(self.on_error, error)
        self._hold_mark()

    def clear_mark_if_done(self, ticket: Ticket) -> None:
        """A ticket's callback, in this thread after its commit: the mark goes, unless
        writes failed in this process since (then it goes once they are committed)."""
        if ticket.done and self.mark_until is None:
            clear_mark(self.path.parent)

    def _hold_mark(self) -> None:
        """The mark is made (if it is not there) and stays until everything queued now is
        committed: called again after the failure's callback queued its HALT."""
        until = self.committed_seq
        if self.pending is not None:
            until = max(until, self.pending.last_seq)
        for item in reversed(list(self.queue)):  # (a copy: other threads append)
            if type(item) is list and item:
                until = max(until, item[-1]["seq"])
                break
        if not self._mark_made:  # (again at the next failure if the disk refused it)
            self._mark_made = set_mark(self.path.parent, self.last_error or "journal "
                                       "write failed")
        self.mark_until = max(self.mark_until or 0, until)

    def _backoff(self) -> float:
        streak = min(self._failure_streak, 30)
        return float(min(self.retry_min_s * (2 ** max(streak - 1, 0)), self.retry_max_s))

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float) -> bool:
        """Stop the thread (it commits what is queued unless failing). True if it ended."""
        self.stopping.set()
        _call(self.stop_giving_way)
        self.wake.set()
        if self.thread is None:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def leftover_tickets(self) -> list[Ticket]:
        """Tickets of records never written (after stop)."""
        pending = self.pending
        tickets = [*pending.tickets, *pending.prune_tickets] if pending is not None else []
        tickets += [item.ticket for item in self.queue if not isinstance(item, list)]
        return tickets

    def stats(self) -> dict[str, Any]:
        commits = self.commits
        pending = 0
        for item in list(self.queue):
            pending += len(item) if isinstance(item, list) else 1
        group = self.pending  # read once: the writer may clear it meanwhile
        if group is not None:
            pending += group.event_count + len(group.tickets)
        return {
            "commits": commits,
            "events_committed": self.events_committed,
            "records_committed": self.records_committed,
            "batch_last": self.batch_last,
            "batch_avg": round(self.events_committed / commits, 2) if commits else 0.0,
            "batch_max": self.batch_max,
            "commit_ms_last": round(self.commit_ms_last, 3),
            "commit_ms_avg": round(self.commit_ms_total / commits, 3) if commits else 0.0,
            "commit_ms_max": round(self.commit_ms_max, 3),
            "commit_ms_total": round(self.commit_ms_total, 3),
            "pending": pending,
            "failures": self.failures,
            "failing": self.failing,
            "last_error": self.last_error,
            "committed_seq": self.committed_seq,
            "pruned_rows": self.retention.pruned_rows,
            "clock_ahead_s": round(self.retention.clock_ahead_s, 3),
            "retention_held_by": self.retention.held_by,
            "retention_held_events": self.retention.held_events,
            "events_cut": self.builder.codec.events_cut,
        }


def _call(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the engine's callback must not stop the writer
        log.exception("journal_callback_failed", callback=repr(fn))
