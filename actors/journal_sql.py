"""The journal's write statements, one per kind of change, and the executions row layout
(`EXECUTION_COLUMNS`): what `GroupBuilder` (actors/journal_group.py) fills and the
writer (actors/journal_writer.py) runs. Reads are in actors/journal_reads.py."""

from __future__ import annotations

#: OR REPLACE: a COMMIT that reported an error may still have reached the disk (an fsync
#: failing after the write); the retry then rewrites the same rows instead of failing on
#: them forever. Every other statement is an upsert or an update already.
SQL_BATCH = ("INSERT OR REPLACE INTO event_batches(first_seq, last_seq, written_at, events)"
             " VALUES (?,?,?,?)")
#: The executions columns, in the order of an execution row list (`Group.executions`).
EXECUTION_COLUMNS = ("execution_id", "workflow_id", "status", "bot_id", "strategy_id",
                     "priority", "inputs", "submitted_at", "started_at", "ended_at",
                     "duration_ms", "results", "error", "error_type", "nodes", "started_seq",
                     "ended_seq")
#: Where `status` sits in such a row.
STATUS_INDEX = 2
#: One statement for every execution change: a row seen first in this commit is inserted
#: whole (submitted, started and ended in one commit cost one insert); a known one gets
#: the columns this commit learnt (NULL: unchanged). Status only moves forward.
SQL_EXECUTION = (
    f"INSERT INTO executions({', '.join(EXECUTION_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(EXECUTION_COLUMNS))}) ON CONFLICT(execution_id) DO UPDATE"
    " SET status=CASE WHEN excluded.status='queued' THEN status"
    " WHEN excluded.status='running' AND status<>'queued' THEN status"
    " ELSE excluded.status END, "
    + ", ".join(f"{c}=coalesce(excluded.{c}, {c})" for c in EXECUTION_COLUMNS[3:]))
SQL_INTERRUPT = ("UPDATE executions SET status='interrupted', ended_at=coalesce(ended_at, ?)"
                 " WHERE execution_id=? AND status IN ('queued', 'running')")
SQL_HISTORY = ("INSERT OR REPLACE INTO emergency_history(seq, timestamp, state, previous_state,"
               " reason, source, origin) VALUES (?,?,?,?,?,?,?)")
SQL_WORKFLOW = ("INSERT INTO workflows(workflow_id, last_wseq) VALUES (?,?)"
                " ON CONFLICT(workflow_id) DO UPDATE SET"
                " last_wseq=max(last_wseq, excluded.last_wseq)")
#: A later attempt under the same key (an idempotent action's retry) opens the intent
#: again; if an earlier attempt left it open (timed out or cancelled: it may have filled),
#: the row stays that attempt's: its number, start and seq (retention keeps the events from
#: there), its late result (`detail`) and note. SET reads the row as it was before.
SQL_INTENT = (
    "INSERT INTO intents(idempotency_key, execution_id, node_id, attempt, started_at, seq_at)"
    " VALUES (?,?,?,?,?,?) ON CONFLICT(idempotency_key) DO UPDATE SET"
    " execution_id=excluded.execution_id, node_id=excluded.node_id,"
    " attempt=CASE WHEN outcome IS NULL THEN attempt ELSE excluded.attempt END,"
    " started_at=CASE WHEN outcome IS NULL THEN started_at ELSE excluded.started_at END,"
    " seq_at=CASE WHEN outcome IS NULL THEN seq_at ELSE excluded.seq_at END,"
    " note=CASE WHEN outcome IS NULL THEN note END,"
    " detail=CASE WHEN outcome IS NULL THEN detail END, outcome=NULL, resolved_at=NULL")
SQL_INTENT_RESOLVE = ("UPDATE intents SET outcome=?, note=?, detail=coalesce(?, detail),"
                      " resolved_at=? WHERE idempotency_key=?")
SQL_INTENT_DETAIL = ("UPDATE intents SET detail=?, note=coalesce(?, note)"
                     " WHERE idempotency_key=?")
SQL_STATE = ("INSERT INTO state(name, value, saved_at) VALUES (?,?,?) ON CONFLICT(name)"
             " DO UPDATE SET value=excluded.value, saved_at=excluded.saved_at")
SQL_CURSOR = ("INSERT INTO cursors(name, seq) VALUES (?,?) ON CONFLICT(name)"
              " DO UPDATE SET seq=excluded.seq")
SQL_CURSOR_DELETE = "DELETE FROM cursors WHERE name=?"
#: Webhooks (schema version 2): dead letters, their state changes, the delivery log.
WEBHOOK_LOG_KEPT = 1000
SQL_DEAD_LETTER = ("INSERT INTO webhook_dead_letters(endpoint, seq, event_type, event, attempts,"
                   " http_status, error, failed_at) VALUES (?,?,?,?,?,?,?,?)")
#: The endpoint's oldest "dead" letters, as many as given (O(that many), through the
#: (endpoint, state) index; an OFFSET-by-the-cap query would walk all the cap holds).
SQL_DEAD_LETTER_DROP = ("DELETE FROM webhook_dead_letters WHERE id IN (SELECT id FROM"
                        " webhook_dead_letters WHERE endpoint=? AND state='dead' ORDER BY id"
                        " LIMIT ?)")
_SQL_LETTER_SET = ("UPDATE webhook_dead_letters SET state=?, attempts=attempts+?,"
                   " http_status=coalesce(?, http_status), error=coalesce(?, error),"
                   " retried_at=CASE WHEN ?='queued' THEN ? ELSE retried_at END")
SQL_LETTER_BY_ID = _SQL_LETTER_SET + " WHERE id=?"
SQL_LETTERS_REQUEUE = (_SQL_LETTER_SET + " WHERE state='dead'"
                       " AND (? IS NULL OR endpoint=?)")
SQL_LETTER_DELETE = "DELETE FROM webhook_dead_letters WHERE id=? AND state='dead'"
SQL_DELIVERY = ("INSERT INTO webhook_deliveries(endpoint, delivery_id, first_seq, last_seq,"
                " event_type, outcome, attempts, http_status, latency_ms, error, at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)")
SQL_DELIVERY_TRIM = ("DELETE FROM webhook_deliveries WHERE endpoint=? AND id <= (SELECT id"
                     " FROM webhook_deliveries WHERE endpoint=? ORDER BY id DESC"
                     f" LIMIT 1 OFFSET {WEBHOOK_LOG_KEPT})")
