"""The event publisher: a cursor over the committed event log, sending it on an XPUB socket.

One thread owns the socket. It waits on the `EventSource` for newly committed events and
sends each as two frames, `[topic, msgpack payload]`, in seq order; it never blocks the
engine (it only reads what is committed, and every send is `NOBLOCK`). It also sends
`system/heartbeat` every `heartbeat_s` and at once when a subscription arrives (`XPUB_VERBOSER`
hands it every subscribe and unsubscribe message, a closed connection's included), so a
subscriber knows when it is live without sleeping:

    {"v": 1, "type": "heartbeat", "last_seq": <last seq sent>, "epoch": "<16 hex>",
     "timestamp": "...Z", "state": "NORMAL"}

`last_seq` is the last seq this publisher has sent (always a committed seq): every event up to
it was sent before the heartbeat, on the same connection, so a subscriber that has not seen it
lost something. `epoch` is a random 16-hex-digit string drawn at each start: a subscriber that
sees it change knows the daemon restarted (seq continues; it replays what it missed).

Slow subscribers: by default the socket drops messages for a subscriber whose queue
(`sndhwm`, 100,000 messages) is full, silently and for that subscriber only; it sees a jump in
`seq` and replays. With `nodrop=True` (`ZMQ_XPUB_NODROP`) a full queue makes the send fail
instead: the event then goes to no subscriber of its topic and `stats()["dropped"]` counts it.

Subscriptions: a message over `MAX_SUBSCRIPTION_BYTES` (512 bytes; clients keep prefixes to
`MAX_PREFIX_BYTES`, 200, above the longest topic) drops its connection. How many
subscriptions a connection holds is not bounded here (libzmq has no limit of its own, and
`ZMQ_XPUB_MANUAL` does not help: libzmq then still stores every subscription it is sent).
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import zmq

from actors.events import iso_utc, topic_of
from actors.logs import get_logger
from transport._zmq_direct import FrameSender, frame_sender
from transport.codec import encode
from transport.security import CurveServer
from transport.server_thread import ServerThread

log = get_logger("tradeloom.transport.publisher")

HEARTBEAT_TOPIC = b"system/heartbeat"
DEFAULT_SNDHWM = 100_000
#: The largest message a subscriber may send (a subscription: one byte, then the prefix). A
#: larger message drops that connection. libzmq keeps every subscription of a connection in
#: a trie, at about 50 bytes per prefix byte, until it unsubscribes or closes: one 50 MB
#: subscription cost the daemon 2.5 GB, and 20,000 distinct 999-byte subscriptions (under
#: the former 1024-byte cap) 1 GB. The cap applies to every frame a peer sends, the CURVE
#: handshake's INITIATE command included (about 300 bytes with pyzmq's metadata: 256 locked
#: CURVE clients out), hence 512, not just above the longest topic.
MAX_SUBSCRIPTION_BYTES = 512
#: The longest prefix the clients take: a whole topic and room to spare (the longest is
#: `workflow/` + a 128-character id + `/` + `execution_completed`, 157 bytes), well within
#: the cap with the 10 bytes of a ZeroMQ 3.1 SUBSCRIBE command and CURVE's 34 of a box.
MAX_PREFIX_BYTES = 200


class EventSource(Protocol):
    """The committed event log the publisher follows (the journal, or an in-memory log).

    Every method is called from the publisher's thread only and must be thread-safe against
    the engine's writers."""

    def committed_seq(self) -> int:
        """The last committed seq (0 when nothing is committed)."""
        ...

    def wait_committed(self, after_seq: int, timeout: float) -> int:
        """Block until `committed_seq() > after_seq` or `timeout` seconds pass; return
        `committed_seq()`."""
        ...

    def read(self, since_seq: int, limit: int) -> list[dict[str, Any]]:
        """Committed events with `seq >= since_seq`, ascending, at most `limit` (fewer at the
        end of the log; the first may be later than `since_seq` if older ones were pruned)."""
        ...


@runtime_checkable
class PackedEventSource(EventSource, Protocol):
    """An `EventSource` that can hand out events already packed (the journal's bytes):
    `(seq, topic, msgpack payload)`; the publisher then sends the bytes as they are."""

    def read_packed(self, since_seq: int, limit: int) -> list[tuple[int, str, bytes]]: ...


class Publisher(ServerThread):
    """Publishes the committed log on `endpoint` (XPUB). `start()` binds or raises
    `TransportError`; `stop()` closes the socket. `publish(event)` sends a non-journaled
    `system/` event (no seq) from any thread."""

    socket_type = zmq.XPUB
    role = "publisher"

    def __init__(self, endpoint: str, source: EventSource, *, heartbeat_s: float = 1.0,
                 state_fn: Callable[[], str] = lambda: "NORMAL",
                 start_seq: int | None = None, batch: int = 1000, poll_s: float = 0.01,
                 sndhwm: int = DEFAULT_SNDHWM, nodrop: bool = False,
                 context: zmq.Context[Any] | None = None, curve: CurveServer | None = None,
                 insecure: bool = False,
                 options: Mapping[int, int | bytes] | None = None) -> None:
        """`start_seq`: the first seq to publish (default: the one after what is committed
        at start). `poll_s`: the longest a new subscription waits for its heartbeat."""
        super().__init__(endpoint, context=context, curve=curve, insecure=insecure,
                         options=options)
        if heartbeat_s <= 0 or poll_s <= 0 or batch < 1:
            raise ValueError("heartbeat_s and poll_s must be > 0 and batch >= 1")
        self._source = source
        self._packed = source.read_packed if isinstance(source, PackedEventSource) else None
        self.heartbeat_s = heartbeat_s
        self._state_fn = state_fn
        self._start_seq = start_seq
        self._batch = batch
        self._poll_s = poll_s
        self._sndhwm = sndhwm
        self._nodrop = nodrop
        #: Drawn per start: changes when the daemon restarts.
        self.epoch = secrets.token_hex(8)
        self._system: collections.deque[dict[str, Any]] = collections.deque()
        self.sent_seq = 0
        self._sent = threading.Condition()
        #: Sends on the socket (made in its thread, in `_serve`): see transport/_zmq_direct.py.
        self._frames: FrameSender | None = None
        self._counts = {"sent": 0, "dropped": 0, "heartbeats": 0, "subscriptions": 0,
                        "unsubscriptions": 0, "system": 0, "unsendable": 0, "notices_dropped": 0}

    def stats(self) -> dict[str, int]:
        """Counters: events `sent`, `dropped` (refused sends: `nodrop` only), `heartbeats`,
        `notices_dropped` (heartbeats and system notices refused: `nodrop` only),
        `subscriptions` / `unsubscriptions` seen, `system` events sent, `unsendable` events
        (could not be encoded: logged and skipped) and `last_seq` sent."""
        return {**self._counts, "last_seq": self.sent_seq}

    def wait_sent(self, seq: int, timeout: float) -> bool:
        """Wait until every event up to `seq` has been handed to the socket (sent or
        dropped); False on timeout. E.g. at shutdown: `wait_sent(source.committed_seq(), 1)`
        before `stop()`, so live subscribers get the last events without a replay."""
        with self._sent:
            return self._sent.wait_for(lambda: self.sent_seq >= seq, timeout)

    def publish(self, event: Mapping[str, Any]) -> None:
        """Queue a non-journaled event (e.g. a `system/` notice); it is sent without a seq,
        between two batches of the log, within `poll_s`."""
        payload = dict(event)
        payload.setdefault("v", 1)
        payload.setdefault("timestamp", iso_utc(time.time()))
        if "type" not in payload:
            raise ValueError("an event needs a type")
        self._system.append(payload)

    def _setup(self, socket: zmq.Socket[Any]) -> None:
        socket.setsockopt(zmq.SNDHWM, self._sndhwm)
        socket.setsockopt(zmq.RCVHWM, 10_000)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        # VERBOSER, not VERBOSE: VERBOSE passes every subscribe but an unsubscribe only when
        # a topic's last subscriber goes, so the subscriptions gauge would only grow.
        socket.setsockopt(zmq.XPUB_VERBOSER, 1)
        if self._nodrop:
            socket.setsockopt(zmq.XPUB_NODROP, 1)

    def _serve(self, socket: zmq.Socket[Any]) -> None:
        self._frames = frame_sender(socket)
        source = self._source
        first = self._start_seq if self._start_seq is not None else source.committed_seq() + 1
        self.sent_seq = first - 1
        next_beat = 0.0  # a heartbeat at once: nobody is subscribed yet, it costs nothing
        while not self._stopping.is_set():
            try:
                if self._take_subscriptions(socket):
                    next_beat = 0.0
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + self.heartbeat_s
                if self._system:
                    self._send_system()
                wait = min(self._poll_s, max(0.0, next_beat - time.monotonic()))
                committed = source.wait_committed(self.sent_seq, wait)
                if committed > self.sent_seq:
                    self._send_committed(socket, committed)
            except zmq.ContextTerminated:
                return
            except Exception:
                # The stream must outlive a failing source (a journal read error): log, pause
                # a little, try again from the same seq.
                log.exception("publisher_turn_failed", last_seq=self.sent_seq)
                self._stopping.wait(max(self._poll_s, 0.1))

    def _send_committed(self, socket: zmq.Socket[Any], committed: int) -> None:
        # A bounded number of batches per turn, so heartbeats and new subscriptions are
        # served while a long backlog streams out.
        for _ in range(16):
            if self.sent_seq >= committed or self._stopping.is_set():
                return
            if self._packed is not None:
                sent = self._send_packed(self._packed(self.sent_seq + 1, self._batch))
            else:
                sent = self._send_events(self._source.read(self.sent_seq + 1, self._batch))
            if not sent:
                # Committed but not readable: pruned under us. Skip rather than spin.
                log.warning("publisher_skipped_unreadable", since_seq=self.sent_seq + 1,
                            committed_seq=committed)
                self.sent_seq = committed
            with self._sent:
                self._sent.notify_all()
            if not sent:
                return
            if self._take_subscriptions(socket):
                self._heartbeat()

    def _send_events(self, events: list[dict[str, Any]]) -> int:
        for event in events:
            try:
                seq = int(event["seq"])
                topic, payload = topic_of(event).encode(), encode(event)
            except Exception:
                log.exception("event_unsendable", seq=event.get("seq"))
                self._counts["unsendable"] += 1
                bad_seq = event.get("seq")
                self.sent_seq = (bad_seq if isinstance(bad_seq, int) and bad_seq > self.sent_seq
                                 else self.sent_seq + 1)
                continue
            self._send(seq, topic, payload)
        return len(events)

    def _send_packed(self, rows: list[tuple[int, str, bytes]]) -> int:
        for seq, topic, payload in rows:
            self._send(seq, topic.encode(), payload)
        return len(rows)

    def _send(self, seq: int, topic: bytes, payload: bytes) -> None:
        if seq <= self.sent_seq:
            return  # a source that repeats itself must not make us send a seq twice
        assert self._frames is not None
        if self._frames((topic, payload)):
            self._counts["sent"] += 1
        else:
            self._counts["dropped"] += 1
        self.sent_seq = seq

    def _take_subscriptions(self, socket: zmq.Socket[Any]) -> bool:
        """Read every pending (un)subscribe message; True if any subscription arrived."""
        subscribed = False
        while True:
            try:
                message = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return subscribed
            if message[:1] == b"\x01":
                subscribed = True
                self._counts["subscriptions"] += 1
            elif message[:1] == b"\x00":
                self._counts["unsubscriptions"] += 1

    def _heartbeat(self) -> None:
        try:
            state = str(self._state_fn())
        except Exception:
            log.exception("heartbeat_state_failed")
            state = "UNKNOWN"
        beat = {"v": 1, "type": "heartbeat", "last_seq": self.sent_seq, "epoch": self.epoch,
                "timestamp": iso_utc(time.time()), "state": state}
        assert self._frames is not None
        if self._frames((HEARTBEAT_TOPIC, encode(beat))):
            self._counts["heartbeats"] += 1
        else:
            self._counts["notices_dropped"] += 1

    def _send_system(self) -> None:
        while self._system:
            event = self._system.popleft()
            assert self._frames is not None
            try:
                sent = self._frames((topic_of(event).encode(), encode(event)))
            except Exception:
                log.exception("system_event_unsendable", event_type=event.get("type"))
                self._counts["unsendable"] += 1
                continue
            self._counts["system" if sent else "notices_dropped"] += 1
