"""The journal's files: the data_dir lock, journal.db's identity checks, schema and migrations.

`journal.db` is a SQLite database marked with `PRAGMA application_id = APPLICATION_ID` and
versioned with `PRAGMA user_version`. A new journal is built complete in `journal.db.new`
(rollback-journal mode, so its header is final on disk) and renamed into place: a
`journal.db` either does not exist or is a whole tradeloom journal. Anything else under that
name (garbage, another application's database, a newer schema) is refused and left as it is:
the identity check reads the file's 100-byte header with plain file I/O before SQLite opens
it, because opening can write (a hot WAL is replayed on open).

Schema (version 1):

    event_batches(first_seq PK, last_seq, written_at REAL, events BLOB)
        one row per commit (split at MAX_ROW_EVENTS): the events' msgpack maps, concatenated
    executions(rowid, execution_id UNIQUE, workflow_id, status, bot_id, strategy_id,
               priority, inputs BLOB, submitted_at, started_at, ended_at, duration_ms,
               results BLOB, error, error_type, nodes BLOB, started_seq, ended_seq)
        rowid order is first-sight order: "newest first" is rowid descending; retention
        walks it from the oldest (no index on ended_seq: one less per execution)
    intents(idempotency_key PK, execution_id, node_id, attempt, started_at, outcome,
            note, detail BLOB, resolved_at, seq_at)
        outcome NULL = unresolved; seq_at holds retention back while unresolved
    workflows(workflow_id PK, last_wseq)          survives event retention
    state(name PK, value BLOB, saved_at REAL)     "emergency" and "breakers" snapshots
    emergency_history(seq PK, timestamp, state, previous_state, reason, source, origin)
    cursors(name PK, seq)                         registered readers (webhooks)

Version 2 (webhooks, actors/webhook_store.py):

    webhook_dead_letters(id PK, endpoint, seq, event_type, event BLOB, attempts,
                         http_status, error, failed_at, state, retried_at)
        state: "dead", "queued" (an operator's retry), "delivered"
    webhook_deliveries(id PK, endpoint, delivery_id, first_seq, last_seq, event_type,
                       outcome, attempts, http_status, latency_ms, error, at)
        the delivery log, the newest LOG_KEPT rows per endpoint

BLOB columns hold msgpack (see actors/journal_records.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import weakref
from pathlib import Path

from actors.errors import JournalCorrupt, JournalLocked, JournalTooNew, NotAJournal
from actors.journal_checkpointer import WAL_SIZE_LIMIT

#: "TLJ1" as a big-endian int: marks journal.db as a tradeloom journal.
APPLICATION_ID = 0x544C4A31
SQLITE_MAGIC = b"SQLite format 3\x00"
DB_NAME = "journal.db"
LOCK_NAME = "journal.lock"

#: version -> the statements that bring a journal from version - 1 to it. Append only.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (1, (
        """CREATE TABLE event_batches (
            first_seq INTEGER PRIMARY KEY,
            last_seq INTEGER NOT NULL,
            written_at REAL NOT NULL,
            events BLOB NOT NULL)""",
        """CREATE TABLE executions (
            execution_id TEXT NOT NULL UNIQUE,
            workflow_id TEXT NOT NULL,
            status TEXT NOT NULL,
            bot_id TEXT, strategy_id TEXT, priority INTEGER,
            inputs BLOB,
            submitted_at TEXT, started_at TEXT, ended_at TEXT,
            duration_ms REAL,
            results BLOB, error TEXT, error_type TEXT, nodes BLOB,
            started_seq INTEGER, ended_seq INTEGER)""",
        "CREATE INDEX executions_by_workflow ON executions(workflow_id)",
        """CREATE INDEX executions_open ON executions(status)
            WHERE status IN ('queued', 'running')""",
        """CREATE TABLE intents (
            idempotency_key TEXT PRIMARY KEY,
            execution_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            started_at TEXT,
            outcome TEXT, note TEXT, detail BLOB, resolved_at TEXT,
            seq_at INTEGER NOT NULL)""",
        "CREATE INDEX intents_unresolved ON intents(seq_at) WHERE outcome IS NULL",
        """CREATE TABLE workflows (
            workflow_id TEXT PRIMARY KEY, last_wseq INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE state (
            name TEXT PRIMARY KEY, value BLOB NOT NULL, saved_at REAL NOT NULL)""",
        """CREATE TABLE emergency_history (
            seq INTEGER PRIMARY KEY, timestamp TEXT, state TEXT, previous_state TEXT,
            reason TEXT, source TEXT, origin TEXT)""",
        "CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
    )),
    (2, (
        """CREATE TABLE webhook_dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            endpoint TEXT NOT NULL, seq INTEGER NOT NULL, event_type TEXT,
            event BLOB NOT NULL, attempts INTEGER NOT NULL, http_status INTEGER,
            error TEXT, failed_at TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'dead',
            retried_at TEXT)""",
        "CREATE INDEX webhook_dead_letters_by_state ON webhook_dead_letters(endpoint, state)",
        """CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            endpoint TEXT NOT NULL, delivery_id TEXT NOT NULL,
            first_seq INTEGER, last_seq INTEGER, event_type TEXT, outcome TEXT NOT NULL,
            attempts INTEGER NOT NULL, http_status INTEGER, latency_ms REAL, error TEXT,
            at TEXT NOT NULL)""",
        "CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries(endpoint, id)",
    )),
    (3, (
        # Refused submits have no events, so retention finds the oldest of them by this
        # (actors/journal_retention.py), not by their events going.
        "CREATE INDEX executions_refused ON executions(status) WHERE status = 'refused'",
    )),
]


def schema_version() -> int:
    """The newest schema this code writes (the last migration's version)."""
    return MIGRATIONS[-1][0]


class DataDirLock:
    """An exclusive `flock` on data_dir itself and on data_dir/journal.lock (which holds
    our pid, for the refusal's message).

    flock locks belong to an open file description, so a second open in the same process
    is refused just like one from another process; the kernel drops the lock when the
    holder dies (kill -9 included), so a stale lock file never blocks a restart. The lock
    on the directory is what guards: journal.lock looks like a pid file an operator may
    delete as stale, and a lock on a deleted file guards nothing (a second daemon would
    lock a new one and both would write one journal, their seqs colliding).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _lock_or_refuse(dir_fd, data_dir, self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except BaseException:
            os.close(dir_fd)
            raise
        try:
            _lock_or_refuse(fd, data_dir, self.path)
        except BaseException:
            os.close(fd)
            os.close(dir_fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fds: tuple[int, ...] = (fd, dir_fd)
        _HELD.add(self)

    def release(self) -> None:
        fds, self._fds = self._fds, ()
        _HELD.discard(self)
        for fd in fds:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _forget_in_child(self) -> None:
        """Close this process's copies without unlocking (see `_close_held_in_child`)."""
        fds, self._fds = self._fds, ()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


#: The locks this process holds, for `_close_held_in_child`.
_HELD: weakref.WeakSet[DataDirLock] = weakref.WeakSet()


def _close_held_in_child() -> None:
    """After a fork without exec (user code's os.fork() in a node): the child's copies of
    the lock descriptors share the parent's open file descriptions, so the flock outlived a
    killed daemon for as long as the child lived, and a restart was refused. The child
    closes them; it never unlocks (LOCK_UN would unlock the parent's lock too). O_CLOEXEC
    covers only exec."""
    for lock in list(_HELD):
        lock._forget_in_child()
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _lock_or_refuse(fd: int, data_dir: Path, pid_file: Path) -> None:
    """flock `fd`, or JournalLocked naming the holder's pid (from `pid_file`)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        pid = _read_pid(pid_file)
        # This process's own lock (flock is per open file: a second engine here is refused);
        # not by the pid alone: two containers' daemons may both be pid 1.
        if pid == os.getpid() and any(lock.path == pid_file for lock in list(_HELD)):
            raise JournalLocked(f"data_dir {data_dir} is in use by another engine in this "
                                f"process (pid {pid}): stop it first", pid=pid) from None
        who = f"pid {pid}" if pid is not None else "pid unknown"
        raise JournalLocked(f"data_dir {data_dir} is in use by another tradeloom process "
                            f"({who})", pid=pid) from None


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def check_identity(path: Path) -> None:
    """Refuse `path` unless it is a tradeloom journal, reading only its header."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise NotAJournal(f"{path} cannot be read: {exc.strerror or exc}") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise NotAJournal(f"{path} is not a tradeloom journal (not a SQLite database); "
                          "move it away or choose another data_dir")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id != APPLICATION_ID:
        raise NotAJournal(f"{path} is a SQLite database of another application "
                          f"(application_id {app_id:#x}), not a tradeloom journal; "
                          "move it away or choose another data_dir")


def connect_writer(path: Path, *, sync: str) -> sqlite3.Connection:
    """Open (creating or migrating) the journal for writing; checks come first."""
    if not path.exists():
        refuse_orphaned_wal(path)
        _create(path)
    check_identity(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        ours = schema_version()
        if version > ours:
            raise JournalTooNew(f"{path} has journal schema version {version}, newer than this "
                                f"tradeloom understands ({ours}); upgrade tradeloom")
        if version < 1:
            raise NotAJournal(f"{path} has no journal schema version; not a tradeloom journal")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        # A burst or a reader pinning an old snapshot can make the WAL grow past a
        # checkpoint; this truncates its file back once it rewinds (no growth in a soak).
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA busy_timeout=5000")
        if version < ours:
            migrate(conn, version)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Apply every migration after `version`, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for target, statements in MIGRATIONS:
            if target <= version:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def refuse_orphaned_wal(path: Path) -> None:
    """Refuse to create `path` next to a non-empty WAL: that WAL belongs to a journal.db
    that was removed (under a running daemon, say). SQLite cannot tell whose WAL it is and
    would replay it onto the new, empty journal: a mix of both, damaged or silently wrong.
    It holds the lost journal's last commits, so it is left alone for the operator."""
    wal = path.with_name(path.name + "-wal")
    try:
        size = wal.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NotAJournal(f"{wal} cannot be read: {exc.strerror or exc}") from None
    if size > 0:
        raise JournalCorrupt(f"{path} is missing but {wal.name} ({size} bytes) is there, the "
                             "write-ahead log of a journal that was removed; restore "
                             f"{path.name} from a backup, or move {wal.name} and "
                             f"{path.name}-shm away to start a new journal")


def _create(path: Path) -> None:
    """Build a complete journal next to `path`, then rename it into place."""
    staging = path.with_name(path.name + ".new")
    staging.unlink(missing_ok=True)
    conn = sqlite3.connect(staging, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        migrate(conn, 0)
    finally:
        conn.close()
    fd = os.open(staging, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(staging, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection (one per reading thread; WAL lets them read while we write)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn
