"""Reading the journal: replay, executions, intents, and what recovery needs at open.

Readers use their own read-only connection, one per thread (WAL lets them read while the
writer commits), and see committed rows only; `replay` also stops at the seq the writer
has reported committed, so nothing is read before the ordered log would release it.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from actors.errors import JournalClosed
from actors.events import topic_of
from actors.journal_records import unpack, unpack_events_sized
from actors.journal_schema import connect_reader

#: `replay` scans at most this many events per call when filtering by topic; the reply's
#: `next_seq` says where to continue.
MAX_SCAN_EVENTS = 200_000
#: `replay` returns fewer than `limit` events once their packed payloads pass this many
#: bytes (at least one event): 10,000 events with 1 MB outputs would otherwise be a 10 GB
#: reply, built in the daemon's memory. Normal events are a few hundred bytes each.
MAX_REPLY_BYTES = 16 * 1024 * 1024
#: `execution(id)` of an execution whose terminal event has no `nodes` map rebuilds them
#: from at most this many events after its start.
MAX_NODE_SCAN_EVENTS = 200_000

OPEN_STATUSES = ("queued", "running")

_EXECUTION_COLUMNS = ("execution_id, workflow_id, status, bot_id, strategy_id, priority, "
                      "inputs, submitted_at, started_at, ended_at, duration_ms, results, "
                      "error, error_type, nodes, started_seq, ended_seq")
_SUMMARY_COLUMNS = ("execution_id, workflow_id, status, started_at, ended_at, duration_ms, "
                    "bot_id, strategy_id, submitted_at")
_INTENT_COLUMNS = ("execution_id, node_id, idempotency_key, attempt, outcome, started_at, "
                   "note, detail, resolved_at, seq_at")


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the journal knew when it was opened, read before anything runs.

    last_seq: the last committed event seq (0 for a new journal): the log continues at +1.
    wseq: workflow_id -> its last wseq. emergency / breakers: the last saved snapshots (the
    dicts given to save_emergency / save_breakers), or None. open_executions: executions
    that were queued or running (execution dicts with their `started_seq`, oldest
    first). unresolved_intents: action intents without an outcome (intent dicts, oldest
    first). cursors: registered cursor name -> seq. execution_ids: the id reservation's
    state (actors/execution_ids.py) or None; legacy_ids: None of it was kept, yet
    executions were (an older journal).
    write_failed_mark: see below.
    """

    last_seq: int
    wseq: dict[str, int]
    emergency: dict[str, Any] | None
    breakers: dict[str, Any] | None
    open_executions: list[dict[str, Any]]
    unresolved_intents: list[dict[str, Any]]
    cursors: dict[str, int]
    execution_ids: dict[str, Any] | None = None
    legacy_ids: bool = False
    #: The reason in data_dir's write-failed mark ("" if none was written), or None
    #: without one: the last process ended while its writes failed
    #: (actors/journal_failure_mark.py).
    write_failed_mark: str | None = None


def load_recovery(conn: sqlite3.Connection) -> Recovery:
    row = conn.execute(
        "SELECT last_seq FROM event_batches ORDER BY first_seq DESC LIMIT 1").fetchone()
    states = {name: unpack(value) for name, value in
              conn.execute("SELECT name, value FROM state")}
    marks = ",".join("?" * len(OPEN_STATUSES))
    open_rows = conn.execute(f"SELECT {_EXECUTION_COLUMNS} FROM executions "
                             f"WHERE status IN ({marks}) ORDER BY rowid", OPEN_STATUSES)
    return Recovery(
        last_seq=int(row[0]) if row else 0,
        wseq={wf: int(n) for wf, n in conn.execute("SELECT workflow_id, last_wseq FROM workflows")},
        emergency=states.get("emergency"),
        breakers=states.get("breakers"),
        open_executions=[{**_execution(r, nodes={}), "started_seq": r[15]} for r in open_rows],
        unresolved_intents=query_intents(conn, unresolved=True, limit=None),
        cursors={name: int(seq) for name, seq in conn.execute("SELECT name, seq FROM cursors")},
        execution_ids=states.get("execution_ids"),
        legacy_ids="execution_ids" not in states and conn.execute(
            "SELECT 1 FROM executions LIMIT 1").fetchone() is not None,
    )


def query_intents(conn: sqlite3.Connection, *, unresolved: bool,
                  limit: int | None) -> list[dict[str, Any]]:
    where = "WHERE outcome IS NULL " if unresolved else ""
    rows = conn.execute(f"SELECT {_INTENT_COLUMNS} FROM intents {where}"
                        "ORDER BY seq_at, rowid LIMIT ?", (-1 if limit is None else limit,))
    return [_intent(r) for r in rows]


def _intent(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"execution_id": r[0], "node_id": r[1], "idempotency_key": r[2], "attempt": r[3],
            "outcome": r[4], "started_at": r[5], "note": r[6], "detail": unpack(r[7]),
            "resolved_at": r[8], "seq_at": r[9]}


def _execution(r: tuple[Any, ...], *, nodes: dict[str, Any]) -> dict[str, Any]:
    return {"execution_id": r[0], "workflow_id": r[1], "status": r[2], "nodes": nodes,
            "results": unpack(r[11]) or {}, "started_at": r[8], "ended_at": r[9],
            "inputs": unpack(r[6]) or {}, "bot_id": r[3], "strategy_id": r[4],
            "priority": r[5], "submitted_at": r[7], "duration_ms": r[10], "error": r[12],
            "error_type": r[13]}


#: `node_ids(workflow_id)`: the node ids of the workflow under that id, or None.
NodeIds = Callable[[str], Sequence[str] | None]
#: The status given to a node with no events yet, by its execution's status; the journal's
#: map is rebuilt from events only for these (and after an internal error: not filled).
_UNSTARTED = {"queued": "pending", "running": "pending", "interrupted": "skipped"}


def with_unstarted(nodes: dict[str, dict[str, Any]], ids: Sequence[str] | None,
                    status: str) -> dict[str, dict[str, Any]]:
    """`nodes` with the workflow's other nodes as `status`, in the workflow's order;
    unchanged when the workflow under that id has other nodes (redefined: rather than
    guess)."""
    if ids is None or len(nodes) == len(ids) or not nodes.keys() <= set(ids):
        return nodes
    return {i: nodes.get(i) or {"status": status, "attempts": 0} for i in ids}


@dataclass
class _Scan:
    """One execution's node states as its events tell them."""

    nodes: dict[str, dict[str, Any]]
    started: bool = False  # its execution_started was read
    ended: bool = False  # and its terminal event


def _scan(events: Iterator[tuple[dict[str, Any], int]], ids: set[str]) -> dict[str, _Scan]:
    scans = {i: _Scan({}) for i in ids}
    for e, _ in events:
        scan = scans.get(e.get("execution_id", ""))
        if scan is None:
            continue
        kind, node_id = e["type"], e.get("node_id")
        if node_id is None:
            scan.started = scan.started or kind == "execution_started"
            scan.ended = scan.ended or (kind.startswith("execution_")
                                        and kind != "execution_started")
            continue
        entry = scan.nodes.setdefault(node_id, {"status": "pending", "attempts": 0})
        if kind == "node_started":
            entry.update(status="running", attempts=e.get("attempt", 1))
        elif kind == "node_completed":
            entry.update(status="completed", attempts=e.get("attempt", 1),
                         outputs=e.get("outputs"))
        elif kind == "node_failed":
            entry.update(status="failed" if e.get("final", True) else "pending",
                         attempts=e.get("attempt", 1), error=e.get("error"),
                         error_type=e.get("error_type"))
        elif kind == "node_skipped":
            entry["status"] = "skipped"
    return scans


def close_nodes(nodes: dict[str, dict[str, Any]]) -> None:
    """The node states of an execution that ended under them, as the engine closes one:
    a running node `cancelled`, one waiting to retry `skipped`."""
    for entry in nodes.values():
        if entry["status"] == "running":
            entry["status"] = "cancelled"
        elif entry["status"] == "pending":
            entry["status"] = "skipped"


class _ThreadConnection:
    """A reading thread's connection, held in its thread-local storage: when the thread
    ends the holder goes, and closes the connection (sqlite3 connections cannot be weakly
    referenced; the holder can)."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        # Closed now, not whenever the cyclic GC gets to it (a connection is in reference
        # cycles of its own): one left open past its journal's close kept SQLite's
        # per-file lock state, and a journal reopened in this process then ran without
        # its lock, so an outside `sqlite3 .backup` deleted the WAL under it.
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reading(method: Callable[Concatenate[JournalReader, _P], _R]
             ) -> Callable[Concatenate[JournalReader, _P], _R]:
    """A read the journal's close cut short (its connection closed under it: a stop while
    a control worker replays) raises JournalClosed, the stop's own error, not sqlite3's."""
    def read(self: JournalReader, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            if self._closed:
                raise JournalClosed("the journal was closed during the read") from None
            raise
    return functools.update_wrapper(read, method)  # type: ignore[return-value]


class JournalReader:
    """Queries from any thread. `committed()` is the seq the writer has reported."""

    def __init__(self, path: Path, committed: Callable[[], int]) -> None:
        self._path = path
        self._committed = committed
        self._local = threading.local()
        self._lock = threading.Lock()
        self._holders: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._closed = False

    def _conn(self) -> sqlite3.Connection:
        holder: _ThreadConnection | None = getattr(self._local, "holder", None)
        if holder is None:
            with self._lock:
                if self._closed:
                    raise JournalClosed("the journal is closed")
                holder = _ThreadConnection(connect_reader(self._path))
                self._holders.add(holder)
            self._local.holder = holder
        elif self._closed:
            raise JournalClosed("the journal is closed")
        return holder.conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            holders = list(self._holders)
        for holder in holders:
            holder.conn.close()

    # -- events -------------------------------------------------------------------------------

    @_reading
    def first_seq(self) -> int:
        row = self._conn().execute("SELECT min(first_seq) FROM event_batches").fetchone()
        return int(row[0]) if row[0] is not None else self._committed() + 1

    def _events_from(self, since_seq: int, upto: int
                     ) -> Iterator[tuple[dict[str, Any], int]]:
        """Committed events with since_seq <= seq <= upto, seq ascending, each with its
        packed size in bytes."""
        rows = self._conn().execute(
            "SELECT first_seq, events FROM event_batches WHERE first_seq >= coalesce("
            "(SELECT max(first_seq) FROM event_batches WHERE first_seq <= ?), 0) "
            "AND first_seq <= ? ORDER BY first_seq", (since_seq, upto))
        for _first, blob in rows:
            for event, nbytes in unpack_events_sized(blob):
                seq = event["seq"]
                if seq > upto:
                    return
                if seq >= since_seq:
                    yield event, nbytes

    @_reading
    def replay(self, since_seq: int, limit: int = 1000,
               topic_prefix: str = "") -> dict[str, Any]:
        """The `replay` op: {"events", "next_seq", "last_seq", "first_seq"}."""
        _check_int("since_seq", since_seq, 0)
        _check_int("limit", limit, 1)
        if not isinstance(topic_prefix, str):
            raise TypeError(f"topic_prefix must be a str, not {type(topic_prefix).__name__}")
        last = self._committed()
        first = self.first_seq()
        start = max(since_seq, 1)
        events: list[dict[str, Any]] = []
        size = 0
        next_seq = max(start, last + 1)  # when everything committed gets scanned
        for scanned, (event, nbytes) in enumerate(self._events_from(start, last), 1):
            if not topic_prefix or topic_of(event).startswith(topic_prefix):
                events.append(event)
                size += nbytes
            if len(events) >= limit or scanned >= MAX_SCAN_EVENTS or size >= MAX_REPLY_BYTES:
                next_seq = event["seq"] + 1
                break
        return {"events": events, "next_seq": next_seq, "last_seq": last, "first_seq": first}

    # -- executions ---------------------------------------------------------------------------

    @_reading
    def execution(self, execution_id: str, node_ids: NodeIds | None = None
                  ) -> dict[str, Any] | None:
        """`node_ids(workflow_id)`: the node ids of the workflow under that id now (None if
        none). With it, a map rebuilt from events gets the nodes that have none: `pending`
        in a live execution, `skipped` in an interrupted one (as a halt at that point
        would end them); only when every event of the execution is still kept, else a
        node that ran would read as one that never started."""
        row = self._conn().execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?",
            (execution_id,)).fetchone()
        if row is None:
            return None
        result = _execution(row, nodes={})
        stored = unpack(row[14])
        if isinstance(stored, dict):
            nodes = {str(k): dict(v) if isinstance(v, dict) else {"status": v}
                     for k, v in stored.items()}
            if result["status"] == "interrupted" and node_ids is not None:
                # Recovery wrote it from every event (or none); a workflow registered
                # only after the start names the nodes that never ran.
                nodes = with_unstarted(nodes, node_ids(result["workflow_id"]), "skipped")
        else:
            nodes, whole = self._nodes_from_events(execution_id, row[15], row[16])
            fill = _UNSTARTED.get(result["status"])
            if whole and fill is not None and node_ids is not None:
                nodes = with_unstarted(nodes, node_ids(result["workflow_id"]), fill)
        outputs = result["results"]
        if not isinstance(outputs, dict):  # the journal cut them whole: a note, not a map
            outputs = {}
        for node_id, entry in nodes.items():
            if entry.get("status") == "completed" and node_id in outputs:
                entry.setdefault("outputs", outputs[node_id])
        result["nodes"] = nodes
        return result

    def _nodes_from_events(self, execution_id: str, started_seq: int | None,
                           ended_seq: int | None) -> tuple[dict[str, dict[str, Any]], bool]:
        """Node states from the execution's events still kept (empty once pruned), and
        whether those are all of them: its `execution_started` was read (not pruned) and
        the scan was not cut at MAX_NODE_SCAN_EVENTS. (No start: none to read.)"""
        if started_seq is None:
            return {}, True
        end = ended_seq if ended_seq is not None else self._committed()
        upto = min(end, started_seq + MAX_NODE_SCAN_EVENTS)
        scan = _scan(self._events_from(started_seq, upto), {execution_id})[execution_id]
        if scan.ended or ended_seq is not None:
            close_nodes(scan.nodes)
        return scan.nodes, scan.started and upto == end

    @_reading
    def open_node_states(self, started: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Recovery: the node states (as `execution`'s map, before any ending) of these
        open executions (id -> their `started_seq`), in one pass over the events from the
        earliest start to the end, at most MAX_NODE_SCAN_EVENTS; only those whose every
        event was read (their `execution_started` included)."""
        if not started:
            return {}
        end = self._committed()
        since = max(min(started.values()), end - MAX_NODE_SCAN_EVENTS)
        scans = _scan(self._events_from(since, end), set(started))
        return {i: scan.nodes for i, scan in scans.items() if scan.started}

    @_reading
    def executions(self, workflow: str | None = None, status: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        """docs/protocol.md (control ops) `executions`, newest (last submitted) first."""
        _check_int("limit", limit, 1)
        clauses, params = [], []
        for column, value in (("workflow_id", workflow), ("status", status)):
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{column.split('_')[0]} must be a str")
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        rows = self._conn().execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM executions {where}"
            "ORDER BY rowid DESC LIMIT ?", (*params, limit))
        keys = [c.strip() for c in _SUMMARY_COLUMNS.split(",")]
        return [dict(zip(keys, r, strict=True)) for r in rows]

    @_reading
    def has_execution(self, execution_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM executions WHERE execution_id = ?",
                                    (execution_id,)).fetchone() is not None

    # -- intents, emergency -------------------------------------------------------------------

    @_reading
    def intents(self, unresolved: bool = True, limit: int | None = None) -> list[dict[str, Any]]:
        return query_intents(self._conn(), unresolved=unresolved, limit=limit)

    @_reading
    def intent(self, idempotency_key: str) -> dict[str, Any] | None:
        row = self._conn().execute(f"SELECT {_INTENT_COLUMNS} FROM intents "
                                   "WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        return _intent(row) if row is not None else None

    @_reading
    def emergency_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """State changes, newest first: {seq, timestamp, state, previous_state, reason,
        source, origin}."""
        _check_int("limit", limit, 1)
        rows = self._conn().execute(
            "SELECT seq, timestamp, state, previous_state, reason, source, origin "
            "FROM emergency_history ORDER BY seq DESC LIMIT ?", (limit,))
        keys = ("seq", "timestamp", "state", "previous_state", "reason", "source", "origin")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    if value >= 2**63:  # SQLite's INTEGER: past it the query raised a bare OverflowError
        raise ValueError(f"{name} must be < 2**63")
