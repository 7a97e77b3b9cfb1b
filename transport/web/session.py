"""One dashboard client: its hello, its cursor over the ordered log, its control requests.

A session runs in the connection's own thread (the websockets threaded server gives each
one). After the hello it starts a sender thread that owns a `LogReader` (a cursor over the
committed log: the in-memory ring, or the journal for older events) and streams, in seq
order, every event whose topic starts with one of the client's topic prefixes. The
connection's thread meanwhile answers the client's requests (control actions and queries).

Nothing a client does reaches the engine's threads: the cursor only reads what is
committed, and a client that reads slowly only stalls its own sender in a blocking send.
The buffering per client is bounded: one read in hand (sized to about one message,
MESSAGE_CHARS_MAX, see FIRST_READ) plus the socket's buffers; no queue grows. A client is
lagging when, past the replay it asked for (the seqs committed before its hello), it is
more than `max_lag` events behind the log *and* its last send stalled for
`STALL_S` or more (the socket's buffers were full: it was not reading). A burst of events
to a client that reads is not a lag; a client that stopped reading is. It gets a `lagged`
message (with the seq to resume from: every event before it was sent) and the connection
is closed; it may reconnect with that `since_seq`. The wire format is in
docs/protocol.md, "WebSocket gateway".
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.sync.server import ServerConnection

from actors.engine import Engine
from actors.events import iso_utc, topic_of
from actors.json_text import json_text
from actors.logs import get_logger
from actors.subscription import LogReader
from actors.topics import prefix_problem
from transport.web.actions import WebActions
from transport.web.auth import token_matches
from transport.web.refusals import RefusalLog, shown

log = get_logger("tradeloom.transport.web")

#: A client must send its hello within this many seconds of its upgrade (else it is closed
#: with 4400: a connection that never authenticates does not hold its threads).
HELLO_S = 5.0
#: Most events in one `events` message.
BATCH = 500
#: A message longer than this goes in fragments of this many characters, so that the
#: stall rule (nothing taken for `send_timeout_s`) judges progress, not a whole message's
#: time: a page reading a 4 MB message at 100 KB/s is slow, not stalled.
FRAGMENT_CHARS = 64 * 1024
#: The first read of a stream takes this many events; each next read doubles it, up to
#: BATCH, while a read's JSON stays within MESSAGE_CHARS_MAX, and shrinks to fit when it
#: does not: a client replaying big events (1 MB outputs) holds about one message's worth
#: in memory, not BATCH of them (500 MB).
FIRST_READ = 16
#: An `events` message longer than this (JSON characters) is split into messages that are
#: not, so a page never gets hundreds of big events (a node output up to the journal's
#: `max_event_bytes` each) in one message; an event bigger alone goes as it is.
MESSAGE_CHARS_MAX = 4 * 1024 * 1024
#: A caught-up client that falls this many events behind the log is told it lagged.
DEFAULT_MAX_LAG = 20_000
#: ... and its last send waited this long for room in the socket (it was not reading).
STALL_S = 1.0
#: A stream send that waits this long for room in the socket (the client reads nothing,
#: not even the pings' close) ends the connection by cutting it: no close frame could pass.
SEND_TIMEOUT_S = 20.0
#: How often the connection's thread looks at a stalled send (between client messages).
WATCH_S = 0.5
#: A heartbeat at least this often, so an idle page knows it is live (and the state).
HEARTBEAT_S = 1.0
#: Most topic prefixes in a hello.
MAX_TOPICS = 64
#: The largest `since_seq` (a seq is an SQLite integer, as the control socket's `replay`).
MAX_SEQ = 2**63 - 1
#: Close codes (4000-4999 are the application's own).
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_HELLO = 4400
CLOSE_LAGGED = 4408
CLOSE_GOING_AWAY = 1001


class HelloError(Exception):
    """A hello the session refuses: `code` is the wire code, `close_code` the close frame's."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Hello:
    """A client's first message, checked: where its stream starts and what it wants."""

    since_seq: int | None
    topics: tuple[str, ...]


def parse_hello(text: str | bytes, token: str) -> Hello:
    """The checked hello, or `HelloError` (`unauthorized` for a missing or wrong token)."""
    try:
        hello = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        raise HelloError("bad_request", "the hello is not JSON", CLOSE_BAD_HELLO) from None
    if not isinstance(hello, dict):
        raise HelloError("bad_request", "the hello must be a JSON object", CLOSE_BAD_HELLO)
    if not token_matches(token, hello.get("token")):
        raise HelloError("unauthorized", "missing or wrong token", CLOSE_UNAUTHORIZED)
    since = hello.get("since_seq")
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_SEQ):
        raise HelloError("bad_request", f"since_seq must be an integer 0 to {MAX_SEQ} or null",
                         CLOSE_BAD_HELLO)
    topics = hello.get("topics", [""])
    if topics is None:
        topics = [""]
    if (not isinstance(topics, list) or len(topics) > MAX_TOPICS
            or not all(isinstance(t, str) and len(t) <= 256 for t in topics)):
        raise HelloError("bad_request", f"topics must be a list of at most {MAX_TOPICS} "
                         "topic prefixes (strings)", CLOSE_BAD_HELLO)
    for prefix in topics:  # as a webhook's `events`: a prefix no topic has is a typo
        problem = prefix_problem(prefix)
        if problem is not None:
            raise HelloError("bad_request", problem[:300], CLOSE_BAD_HELLO)
    return Hello(since_seq=since, topics=tuple(topics) or ("",))


def dumps(message: dict[str, Any]) -> str:
    """JSON for the wire (strict: a page's JSON.parse takes it); a value JSON has no form
    for (bytes, sets, NaN) goes as its repr (`actors.json_text`)."""
    return json_text(message, default=repr)


class ClientSession:
    """The life of one connection; `run()` returns when it is over."""

    def __init__(self, connection: ServerConnection, engine: Engine, *, token: str,
                 actions: WebActions, info: Callable[[], dict[str, Any]],
                 stopping: threading.Event, refusals: RefusalLog,
                 max_lag: int = DEFAULT_MAX_LAG,
                 send_timeout_s: float = SEND_TIMEOUT_S,
                 hello_timeout_s: float = HELLO_S) -> None:
        self.connection = connection
        self._engine = engine
        self._token = token
        self._actions = actions
        self._info = info
        self._stopping = stopping
        self._refusals = refusals
        #: Cut by the watchdog for a stalled send (`cut_if_stalled`).
        self._cut = False
        self.max_lag = max_lag
        self.send_timeout_s = send_timeout_s
        self.hello_timeout_s = hello_timeout_s
        self._send_lock = threading.Lock()
        self._done = threading.Event()
        self.sent_events = 0
        #: How long the stream's last send took (a stalled client: seconds).
        self.last_stall_s = 0.0
        self._sending_since: float | None = None

    def run(self) -> None:
        peer = _peer(self.connection)
        try:
            hello = parse_hello(self.connection.recv(timeout=self.hello_timeout_s),
                                self._token)
        except TimeoutError:
            self._refuse("bad_request", f"no hello within {self.hello_timeout_s:g} s",
                         CLOSE_BAD_HELLO)
            return
        except HelloError as exc:
            self._refusals.refused("web_client_refused", exc.code, peer=peer,
                                   reason=shown(str(exc)))
            self._refuse(exc.code, str(exc), exc.close_code)
            return
        except ConnectionClosed:
            return
        committed = self._engine.sink.log.committed_seq
        start = committed + 1 if hello.since_seq is None else max(1, hello.since_seq)
        reader = self._engine.sink.log.reader(start)
        log.info("web_client_connected", peer=peer, since_seq=start, topics=list(hello.topics))
        try:
            self._send({"msg": "welcome", "next_seq": start, "last_seq": committed,
                        **self._info()})
            sender = threading.Thread(target=self._stream,
                                      args=(reader, start, hello.topics, committed),
                                      name="tradeloom-web-sender", daemon=True)
            sender.start()
            try:
                self._serve_requests()
            finally:
                self._done.set()
                sender.join(2.0)
        except ConnectionClosed:
            pass
        finally:
            self._done.set()
            reader.close()
            log.info("web_client_gone", peer=peer, events_sent=self.sent_events)

    # -- the stream (sender thread) ----------------------------------------------------------

    def _stream(self, reader: LogReader, cursor: int, topics: tuple[str, ...],
                replay_to: int) -> None:
        every = topics == ("",)
        next_beat = 0.0
        limit = FIRST_READ
        try:
            while not (self._done.is_set() or self._stopping.is_set()):
                committed = reader.wait_committed(cursor - 1, 0.2)
                if time.monotonic() >= next_beat:
                    self._heartbeat(committed, cursor)
                    next_beat = time.monotonic() + HEARTBEAT_S
                if committed < cursor:
                    continue
                if cursor > replay_to and self._lagging(cursor, committed):
                    self._lagged(cursor, committed)
                    return
                events = reader.read(cursor, limit)
                if not events or events[0]["seq"] > cursor:
                    gone_to = events[0]["seq"] - 1 if events else committed
                    self._send({"msg": "gap", "first_missing_seq": cursor,
                                "last_missing_seq": gone_to})
                    if not events:
                        cursor = committed + 1
                        continue
                matching = events if every else [
                    e for e in events if topic_of(e).startswith(topics)]
                cursor = events[-1]["seq"] + 1
                read = len(events)
                del events  # (what is not sent yet is held once: as `matching`)
                chars = self._send_events(matching, cursor) if matching else 0
                limit = _next_limit(limit, read, chars)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("web_stream_failed", peer=_peer(self.connection), next_seq=cursor)
            self.connection.close(1011, "internal error")

    def _send_events(self, events: list[dict[str, Any]], next_seq: int) -> int:
        """Send `events` in messages of at most MESSAGE_CHARS_MAX characters (one bigger
        event alone goes as it is), each event serialised once and let go as it is; the
        characters sent."""
        parts: list[str] = []
        size = total = 0
        after_last = next_seq  # the seq after the last event in `parts`
        for i in range(len(events)):
            part = dumps(events[i])
            if parts and size + len(part) > MESSAGE_CHARS_MAX:
                self._send_parts(parts, after_last)  # every event before it was sent
                parts, size = [], 0
            after_last = events[i]["seq"] + 1
            events[i] = _SENT  # (its dict may go: it is text now)
            parts.append(part)
            size += len(part) + 1
            total += len(part)
        self._send_parts(parts, next_seq)
        return total

    def _send_parts(self, parts: list[str], next_seq: int) -> None:
        """An `events` message of events already JSON, as `dumps` would write it."""
        self._send_text(f'{{"msg":"events","events":[{",".join(parts)}],'
                        f'"next_seq":{next_seq}}}', events=True)
        self.sent_events += len(parts)

    def _lagging(self, cursor: int, committed: int) -> bool:
        return committed - cursor + 1 > self.max_lag and self.last_stall_s >= STALL_S

    def stalled_s(self) -> float:
        """How long the stream's current send has been waiting for the client (0: none)."""
        since = self._sending_since
        return 0.0 if since is None else time.monotonic() - since

    def _heartbeat(self, committed: int, cursor: int) -> None:
        self._send({"msg": "heartbeat", "last_seq": committed, "next_seq": cursor,
                    "state": self._engine.state.value, "timestamp": iso_utc(time.time())})

    def _lagged(self, cursor: int, committed: int) -> None:
        log.warning("web_client_lagged", peer=_peer(self.connection), resume_seq=cursor,
                    last_seq=committed, max_lag=self.max_lag)
        self._send({"msg": "lagged", "resume_seq": cursor, "last_seq": committed,
                    "max_lag": self.max_lag})
        self.connection.close(CLOSE_LAGGED, "lagged")

    # -- requests (connection thread) --------------------------------------------------------

    def _serve_requests(self) -> None:
        while True:
            try:
                message = self.connection.recv(timeout=WATCH_S)
            except TimeoutError:
                if self._cut:  # (by the gateway's watchdog: cut_if_stalled)
                    return
                continue
            except ConnectionClosedOK:
                return
            try:
                request = json.loads(message)
            except (ValueError, UnicodeDecodeError, RecursionError):
                request = None
            if not isinstance(request, dict):
                self._send({"msg": "reply", "id": None, "ok": False, "error": {
                    "code": "bad_request", "message": "a request must be a JSON object"}})
                continue
            self._send({"msg": "reply", "id": request.get("id"),
                        **self._actions.answer(request)})

    # -- sending -----------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        self._send_text(dumps(message))

    def _send_text(self, text: str, *, events: bool = False) -> None:
        """Every send is watched (heartbeats and replies too: any of them may be the one
        that finds the socket full, see `stalled_s`); how long an `events` send waited is
        what the lag rule looks at (`last_stall_s`)."""
        with self._send_lock:  # two threads send: the stream and the replies
            started = self._sending_since = time.monotonic()
            try:
                if len(text) > FRAGMENT_CHARS:
                    self.connection.send(self._fragments(text))
                else:
                    self.connection.send(text)
            finally:
                self._sending_since = None
                if events:
                    self.last_stall_s = time.monotonic() - started

    def _fragments(self, text: str) -> Iterator[str]:
        """A big message as fragments of FRAGMENT_CHARS; each one handed out restarts the
        stall clock (the socket took the one before: a slow reader is making progress)."""
        for start in range(0, len(text), FRAGMENT_CHARS):
            self._sending_since = time.monotonic()
            yield text[start:start + FRAGMENT_CHARS]

    def cut_if_stalled(self) -> bool:
        """Cut the connection if a send has waited `send_timeout_s` for room in its socket
        (the gateway's watchdog asks every WATCH_S); True if it was cut now."""
        stalled = self.stalled_s()
        if self._cut or stalled < self.send_timeout_s:
            return False
        self._cut = True
        log.warning("web_client_stalled", peer=_peer(self.connection),
                    stalled_s=round(stalled, 1))
        self.abort()
        return True

    def abort(self) -> None:
        """Cut the TCP connection: for a client whose socket takes nothing, where a close
        frame would wait behind the stalled send. The blocked send and recv then fail."""
        with contextlib.suppress(OSError):
            self.connection.socket.shutdown(socket.SHUT_RDWR)

    def _refuse(self, code: str, message: str, close_code: int) -> None:
        try:
            self._send({"msg": "error", "error": {"code": code, "message": message}})
            self.connection.close(close_code, code)
        except ConnectionClosed:
            pass


_SENT: dict[str, Any] = {}


def _next_limit(limit: int, read: int, chars: int) -> int:
    """How many events the next read takes (see FIRST_READ)."""
    if chars > MESSAGE_CHARS_MAX:
        return max(1, read * MESSAGE_CHARS_MAX // chars)
    return min(BATCH, limit * 2) if read >= limit else limit


def _peer(connection: ServerConnection) -> str:
    try:
        address = connection.remote_address
    except OSError:
        return "?"
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
