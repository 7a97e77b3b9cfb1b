"""Retention: the journal keeps the newest `keep_events` events and/or `keep_days` of them.

It runs in the writer's thread, on the writer's connection, between commits: a pass at most
every PRUNE_INTERVAL_S (back to back while a pass found more to delete), and all of it for
an explicit `Journal.prune()`. A pass deletes at most PRUNE_ROWS_PER_PASS of the oldest
batch rows in one short transaction, never past a registered cursor's unread events, an
unresolved intent's `seq_at` event, or the newest batch row (it carries `last_seq` across
restarts); then the executions and resolved intents whose events are all gone, and the
emergency history beyond its newest HISTORY_KEPT rows. Freed pages are reused by later
commits, so the file stays bounded. `keep_days` reads each row's `written_at`; rows a wall
clock stamped ahead before it was set back take the next commit's time (see
`restamp_if_set_back`), and a wall clock stepped ahead while the journal is open does not
age rows faster than time passes (see `judged_time`).
"""

from __future__ import annotations

import sqlite3
import time

from actors.clock import Clock
from actors.journal_records import log

#: Retention deletes at most this many batch rows per pass (a pass is one short transaction).
PRUNE_ROWS_PER_PASS = 100
#: Executions and resolved intents deleted per pass, once their events are gone.
PRUNE_RECORDS_PER_PASS = 500
#: Emergency history rows kept (state changes are rare; this is years of them).
HISTORY_KEPT = 1000
#: Seconds between retention passes while nothing is left over from the last one.
PRUNE_INTERVAL_S = 0.25
#: While retention is held (events due to go that an unresolved intent or a cursor keeps),
#: `journal_retention_held` is logged at most this often.
HELD_WARN_EVERY_S = 300.0
#: How far the wall clock may run ahead of elapsed (monotonic) time between two passes
#: before `keep_days` stops believing it: more than NTP's slewing or a small step, far less
#: than a clock stepped a day or years ahead by mistake.
WALL_STEP_SLACK_S = 60.0


class Retention:
    """What the writer may delete, and the passes that delete it (writer thread only)."""

    def __init__(self, *, keep_events: int | None, keep_days: float | None, clock: Clock,
                 cursors: dict[str, int]) -> None:
        self.keep_events = keep_events
        self.keep_days = keep_days
        self.clock = clock
        #: Registered cursors, name -> the last seq read: the writer's own dict, kept current.
        self.cursors = cursors
        self.enabled = keep_events is not None or keep_days is not None
        self.pruned_rows = 0
        self._last_pass = 0.0
        self._more = False
        #: The first kept seq for which no execution or intent was left to prune.
        self._records_pruned_for = -1
        #: The newest `written_at` of the rows (None: not read from the file yet).
        self._newest_stamp: float | None = None
        #: (wall, monotonic) at the last reading `judged_time` believed.
        self._believed: tuple[float, float] | None = None
        #: The wall clock is ahead of what `judged_time` believes (logged once per step).
        self.clock_ahead_s = 0.0
        #: What keeps events retention would delete ("unresolved intent <key>", "cursor
        #: <name>"), or None; and how many are kept so (due by keep_events or keep_days),
        #: at the last pass.
        self.held_by: str | None = None
        self.held_events = 0
        self._held_logged_at: float | None = None

    def idle_s(self) -> float | None:
        """How long the idle writer may sleep: until the next pass is due."""
        return PRUNE_INTERVAL_S if self.enabled else None

    def when_due(self, conn: sqlite3.Connection, committed_seq: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self._more and now - self._last_pass < PRUNE_INTERVAL_S:
            return
        self._last_pass = now
        self._more = self.prune_pass(conn, committed_seq) > 0

    def restamp_if_set_back(self, conn: sqlite3.Connection,
                            batches: list[tuple[int, int, float, bytes]]) -> None:
        """Before `batches` are inserted (in the writer's transaction): rows stamped later
        than them were stamped by a wall clock that ran ahead and has been set back; they
        take the new rows' time. Age is judged in seq order, so one row stamped years
        ahead would otherwise hold every later row back for years. The rows stamped
        ahead are the newest ones, so this reads back from the end only as far as them."""
        if self.keep_days is None or not batches:
            return
        stamp = min(b[2] for b in batches)
        if self._newest_stamp is None:
            newest = conn.execute("SELECT written_at FROM event_batches "
                                  "ORDER BY first_seq DESC LIMIT 1").fetchone()
            self._newest_stamp = newest[0] if newest else stamp
        if stamp < self._newest_stamp:
            conn.execute(
                "UPDATE event_batches SET written_at = ? WHERE first_seq > coalesce((SELECT "
                "first_seq FROM event_batches WHERE written_at <= ? ORDER BY first_seq DESC "
                "LIMIT 1), -1)", (stamp, stamp))
            self._newest_stamp = stamp
        self._newest_stamp = max(self._newest_stamp, *(b[2] for b in batches))

    def rolled_back(self) -> None:
        """The write was rolled back, a restamp with it: read the newest stamp again."""
        self._newest_stamp = None

    def prune_all(self, conn: sqlite3.Connection, committed_seq: int) -> None:
        for _ in range(100_000):
            if self.prune_pass(conn, committed_seq) == 0:
                return

    def prune_pass(self, conn: sqlite3.Connection, committed_seq: int) -> int:
        """Delete up to PRUNE_ROWS_PER_PASS of the oldest batch rows that retention lets go,
        then the executions and resolved intents whose events are all gone. Returns the
        rows deleted (0: nothing more may go now)."""
        if not self.enabled:
            return 0
        try:
            hold, holder = self._hold_seq(conn, committed_seq)
            rows = conn.execute("SELECT first_seq, last_seq, written_at FROM event_batches "
                                "ORDER BY first_seq LIMIT ?", (PRUNE_ROWS_PER_PASS,)).fetchall()
            cut: tuple[int, int] | None = None
            count = 0
            old_seq = committed_seq - self.keep_events if self.keep_events is not None else -1
            old_wall = (self.judged_time() - self.keep_days * 86400.0
                        if self.keep_days is not None else None)
            held = False
            for first, last, written_at in rows:
                due = last <= old_seq or (old_wall is not None and written_at < old_wall)
                if last > hold or not due:
                    held = due and holder is not None
                    break
                cut = (first, last)
                count += 1
            due_to = old_seq
            if held and old_wall is not None:  # due by age too: how far
                aged = conn.execute("SELECT max(last_seq) FROM event_batches WHERE "
                                    "written_at < ?", (old_wall,)).fetchone()[0]
                due_to = max(due_to, int(aged or 0))
            self._note_held(holder if held else None, max(0, due_to - hold))
            first_kept = cut[1] + 1 if cut is not None else (
                rows[0][0] if rows else committed_seq + 1)
            refused = self._prune_refused(conn)
            if cut is None and first_kept == self._records_pruned_for:
                return refused  # nothing else new may go: no transaction at all
            conn.execute("BEGIN")
            if cut is not None:
                conn.execute("DELETE FROM event_batches WHERE first_seq <= ?", (cut[0],))
            # The oldest rows (rowid order) are the ones whose events go first; looking
            # at a bounded window keeps a pass short without an index on ended_seq.
            gone = conn.execute(
                "DELETE FROM executions WHERE rowid IN (SELECT rowid FROM (SELECT rowid, "
                "ended_seq FROM executions ORDER BY rowid LIMIT ?) WHERE ended_seq < ?)",
                (PRUNE_RECORDS_PER_PASS, first_kept)).rowcount
            gone += conn.execute(
                "DELETE FROM intents WHERE rowid IN (SELECT rowid FROM (SELECT rowid, seq_at, "
                "outcome FROM intents ORDER BY rowid LIMIT ?) WHERE seq_at < ? "
                "AND outcome IS NOT NULL)", (PRUNE_RECORDS_PER_PASS, first_kept - 1)).rowcount
            conn.execute("DELETE FROM emergency_history WHERE seq < (SELECT seq FROM "
                         "emergency_history ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                         (HISTORY_KEPT - 1,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(conn)
            log.warning("journal_prune_failed", error=str(exc))
            return 0
        if gone == 0:
            self._records_pruned_for = first_kept
        self.pruned_rows += count
        return count + gone + refused

    def _prune_refused(self, conn: sqlite3.Connection) -> int:
        """Delete the oldest refused executions past the newest `keep_events` executions
        rows. They have no events, so no event's going lets one go: a HALT with interval
        triggers added one per trigger per period and none was pruned until a resume
        (a weekend's HALT at 0.1 s: 1.7 million rows). One statement (autocommit), an
        index range: O(log n) when nothing may go."""
        if self.keep_events is None:
            return 0
        return conn.execute(
            "DELETE FROM executions WHERE rowid IN (SELECT rowid FROM executions "
            "WHERE status = 'refused' AND rowid < (SELECT max(rowid) FROM executions) - ? "
            "ORDER BY rowid LIMIT ?)", (self.keep_events, PRUNE_RECORDS_PER_PASS)).rowcount

    def judged_time(self) -> float:
        """The wall time `keep_days` judges ages by. A wall clock that jumped ahead of the
        time that passed (an NTP step, an operator's typo) would make fresh rows look
        old: one stepped years ahead would prune the whole history at once. So a reading
        more than WALL_STEP_SLACK_S ahead of the last believed one plus the monotonic
        time since is not believed; ages go on from the last believed reading at the
        monotonic clock's pace until the wall clock is back in line (set back, or time
        catches up). A restart believes the clock it starts with."""
        wall, mono = self.clock.time(), self.clock.monotonic()
        believed = self._believed
        if believed is not None:
            expected = believed[0] + max(0.0, mono - believed[1])
            if wall > expected + WALL_STEP_SLACK_S:
                if not self.clock_ahead_s:
                    log.warning("journal_clock_stepped_ahead", ahead_s=round(wall - expected),
                                note="keep_days ages rows by the time that passed, not by "
                                     "this clock, until it is set back or the daemon "
                                     "restarts")
                self.clock_ahead_s = wall - expected
                return expected
        if self.clock_ahead_s:
            log.warning("journal_clock_in_line_again")
            self.clock_ahead_s = 0.0
        self._believed = (wall, mono)
        return wall

    def _note_held(self, holder: str | None, kept: int) -> None:
        """Retention is held by `holder` (None: not held): the file grows past keep_events
        until it lets go, so say so (status, metrics, a warning now and then)."""
        self.held_by, self.held_events = holder, kept if holder is not None else 0
        if holder is None:  # (the time of the last line is kept: a hold that comes and
            return          # goes with a cursor's lag is told every 5 minutes, no more)
        now = time.monotonic()
        if self._held_logged_at is None or now - self._held_logged_at >= HELD_WARN_EVERY_S:
            self._held_logged_at = now
            log.warning("journal_retention_held", held_by=holder, held_events=self.held_events,
                        note="retention keeps these events until it lets go: resolve the "
                             "intent, or mend or remove the webhook endpoint")

    def _hold_seq(self, conn: sqlite3.Connection, committed_seq: int) -> tuple[int, str | None]:
        """Rows whose last_seq is above this stay: the newest row (it carries last_seq
        across restarts), a registered cursor's unread events, an unresolved intent's.
        Also what holds them there, if a cursor or an intent does."""
        newest = conn.execute(
            "SELECT first_seq FROM event_batches ORDER BY first_seq DESC LIMIT 1").fetchone()
        hold = (newest[0] - 1) if newest else committed_seq
        holder: str | None = None
        for name, seq in self.cursors.items():
            if seq < hold:
                hold, holder = seq, f"cursor {name}"
        oldest = conn.execute("SELECT seq_at, idempotency_key FROM intents WHERE outcome IS "
                              "NULL ORDER BY seq_at LIMIT 1").fetchone()
        if oldest is not None and int(oldest[0]) - 1 < hold:
            # its seq_at event stays, and everything after it
            hold, holder = int(oldest[0]) - 1, f"unresolved intent {oldest[1]}"
        return int(hold), holder


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already (a full disk)."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite may have rolled back itself; nothing else to undo
