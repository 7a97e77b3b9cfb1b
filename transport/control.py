"""The control server: a ROUTER socket answering REQ and DEALER clients.

Threads. One thread owns the ROUTER socket: it reads requests, validates them (`ops.py`) and
hands each to a lane, then sends the replies the lanes give back. Quick and urgent ops
(`ops.URGENT_OPS`: ping, status, halt, alert, reduce_only, resume, risk_update) run in order
on one dedicated worker; the rest (execution, executions, cancel, intents, resolve_intent,
replay) on a small pool. So a `halt` never waits behind another client's 10,000-event replay.
Workers never touch the socket: they put the encoded reply on a queue and wake the socket
thread through a socket pair it polls. `submit`, the most frequent op, needs no worker when
the handler offers `submit_nowait` (`control_submits.py`): the execution is started on the
socket thread, which never blocks for it, and the reply is sent when the journal's commit
calls back (or as an `internal` error once the writes fail or the handler's timeout passes).
Replies go out through `_zmq_direct` (no GIL hand-off per frame) when under 64 KiB.

Envelopes (what a reply is routed back with): `envelopes.py`.

Bad input. Not msgpack, not a map, non-string keys, wrong frame count, empty frames, a
request over 1 MiB, a missing or wrong `v`, an unknown op, an ill-typed field: each is
answered with an error reply and nothing else happens. Frames over `max_frame_bytes`
(16 MiB) make libzmq drop that connection (a hard cap on memory); an envelope deeper than
`MAX_ENVELOPE_FRAMES` or a reply that cannot be routed is dropped and counted. When a lane
holds `max_pending` requests in progress, a connection that has some of them waits its
turn, and one with none still gets one through: no client crowds out another, and an
operator's `halt` is never refused (a risk feed's burst once filled the urgent lane's count
and the halt was answered `overloaded`). On each lane one peer's requests go to the
worker(s) `max_peer_pending` at a time, the rest waiting their turn, a bounded number
(`peer_share.py`: a DEALER pipelining 600 replays held everyone's `execution` behind them
for tens of seconds); past that bound that connection alone is answered `overloaded`.
Submits awaiting their commit are counted apart, by the same rule, with a longer wait
(`control_submits.py`). A large reply (a
replay) to a peer that has over `max_peer_unread_bytes` of replies not read yet is replaced
by `overloaded` (`reply_budget.py`): a DEALER that never reads cannot fill this process's
memory.
"""

from __future__ import annotations

import contextlib
import queue
import socket as pysocket
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

from actors.errors import EngineStopped, JournalClosed, NoJournal, describe
from actors.logs import get_logger
from transport._zmq_direct import FrameSender, frame_sender
from transport.codec import MAX_MESSAGE_BYTES, CodecError, decode_map, encode
from transport.control_submits import NowaitSubmits
from transport.envelopes import Envelope, error_reply, request_id_of, split_envelope
from transport.errors import INTERNAL, BadRequest, UnknownOp, code_of
from transport.ops import (
    OPS,
    URGENT_OPS,
    ControlHandler,
    NowaitSubmit,
    parse_request,
)
from transport.peer_share import PeerShare
from transport.reply_budget import ReplyBudget
from transport.security import CurveServer
from transport.server_thread import ServerThread

log = get_logger("tradeloom.transport.control")

MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Requests of one peer (one connection: the envelope's first identity) with a lane's
#: worker(s) at once; its others wait their turn (`PeerShare`).
MAX_PEER_PENDING = 16
#: Bytes of large replies one peer may leave unread in this process (`reply_budget.py`).
MAX_PEER_UNREAD_BYTES = 64 * 1024 * 1024
#: Larger replies (replays) go through pyzmq's zero-copy send instead of a copy under the GIL.
DIRECT_REPLY_BYTES = 65536
_URGENT, _POOL = 0, 1
REFUSED_LOG_S = 60.0  # control_worker_start_failed comes at most this often (seconds)


class ControlServer(ServerThread):
    """Serves `handler` on `endpoint` (ROUTER). `start()` binds or raises `TransportError`;
    `stop()` closes the socket and lets the workers' late results fall away."""

    socket_type = zmq.ROUTER
    role = "control"

    def __init__(self, endpoint: str, handler: ControlHandler, *, workers: int = 4,
                 max_pending: int = 1000, max_peer_pending: int = MAX_PEER_PENDING,
                 max_peer_unread_bytes: int = MAX_PEER_UNREAD_BYTES,
                 max_request_bytes: int = MAX_MESSAGE_BYTES,
                 max_frame_bytes: int = MAX_FRAME_BYTES,
                 context: zmq.Context[Any] | None = None, curve: CurveServer | None = None,
                 insecure: bool = False,
                 options: Mapping[int, int | bytes] | None = None) -> None:
        super().__init__(endpoint, context=context, curve=curve, insecure=insecure,
                         options=options)
        self._handler = handler
        self._workers = workers
        self._max_pending = max_pending
        #: Each lane's share of its worker(s) per connection (`peer_share.py`).
        self._peers = (PeerShare(max_peer_pending), PeerShare(max_peer_pending))
        self._lanes: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        self._unread = ReplyBudget(max_peer_unread_bytes)
        self._max_request = max_request_bytes
        self._max_frame = max_frame_bytes
        #: (lane, envelope, encoded reply, error code or None, request id): to the socket.
        self._replies: queue.SimpleQueue[tuple[int, Envelope, bytes, str | None, Any]] = (
            queue.SimpleQueue())
        #: Workers wake the socket thread through this pair (made in that thread).
        self._wake_r: pysocket.socket | None = None
        self._wake_w: pysocket.socket | None = None
        #: Set by whoever sends a wake-up, cleared by the socket thread before it drains the
        #: queues: one byte on the pair per turn, not one per reply.
        self._woken = False
        self._frames: FrameSender | None = None
        #: Requests in progress: with the urgent lane's worker, and the pool's.
        self._pending = [0, 0]
        self._refused_logged_at = -REFUSED_LOG_S  # control_worker_start_failed, last logged
        self._counts = {"requests": 0, "replies": 0, "errors": 0, "internal": 0,
                        "dropped": 0, "unroutable": 0, "overloaded": 0}
        #: Well-formed requests by op (written by the socket thread only).
        self._ops = dict.fromkeys(OPS, 0)
        #: Submits without a worker, when the handler offers them (the daemon's does).
        self._submits = (NowaitSubmits(handler, max_pending=max_pending, reply=self._reply,
                                       failure=self._failure, counts=self._counts,
                                       wake=self._wake)
                         if isinstance(handler, NowaitSubmit) else None)

    def stats(self) -> dict[str, int]:
        """Counters: `requests` read, `replies` sent, `errors` (error replies of any code),
        `internal` (handler failures), `dropped` (messages that could not be answered),
        `unroutable` (replies whose peer was gone or full), `overloaded`."""
        submits = self._submits
        return {**self._counts, "pending_urgent": self._pending[_URGENT],
                "pending_pool": self._pending[_POOL],
                "pending_submits": submits.pending if submits is not None else 0,
                "parked": sum(share.parked for share in self._peers)
                + (submits.share.parked if submits is not None else 0)}

    def op_counts(self) -> dict[str, int]:
        """Well-formed requests read, by op (every op, 0 included); those answered
        `overloaded` count too."""
        return dict(self._ops)

    def _setup(self, socket: zmq.Socket[Any]) -> None:
        self._wake_r, self._wake_w = pysocket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        socket.setsockopt(zmq.MAXMSGSIZE, self._max_frame)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        socket.setsockopt(zmq.RCVHWM, 10_000)
        socket.setsockopt(zmq.SNDHWM, 10_000)
        # Each lane's first worker now, before start() returns: the kill switch (the urgent
        # lane) never waits for a thread the OS may refuse (can't start new thread).
        self._lanes = lanes = (
            ThreadPoolExecutor(1, thread_name_prefix="tradeloom-control-urgent"),
            ThreadPoolExecutor(self._workers, thread_name_prefix="tradeloom-control"))
        for lane in lanes:
            lane.submit(int).result()

    def _wake(self) -> None:
        if self._woken:
            return
        self._woken = True
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):  # full: a wake-up is already pending
                wake.send(b"\0")

    def _cleanup(self) -> None:
        for lane in self._lanes or ():
            lane.shutdown(wait=False, cancel_futures=True)
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def _serve(self, socket: zmq.Socket[Any]) -> None:
        wake = self._wake_r
        assert wake is not None
        self._frames = frame_sender(socket)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        while not self._stopping.is_set():  # (the lanes are shut down by _cleanup)
            ready = dict(poller.poll(self._submits.poll_ms() if self._submits else 1000))
            if ready.get(wake.fileno()):  # the poller reports plain sockets by fd
                with contextlib.suppress(OSError):
                    wake.recv(4096)
            self._woken = False
            self._send_replies(socket)
            if self._submits is not None:
                self._submits.send_recorded(socket)
                self._submits.expire(socket)
            if ready.get(socket):
                self._read_requests(socket)

    def _read_requests(self, socket: zmq.Socket[Any]) -> None:
        # A bounded number per turn, so replies keep flowing under a flood of requests.
        for _ in range(256):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            self._counts["requests"] += 1
            try:
                self._dispatch(socket, frames)
            except Exception:
                # Nothing a peer sends may stop this thread.
                log.exception("control_dispatch_failed")
                self._counts["dropped"] += 1

    def _dispatch(self, socket: zmq.Socket[Any], frames: list[bytes]) -> None:
        envelope, body = split_envelope(frames)
        if envelope is None:
            self._counts["dropped"] += 1
            return
        request_id = None
        try:
            if len(body) != 1:
                raise BadRequest(f"expected one request frame after the envelope, got "
                                 f"{len(body)}")
            frame = body[0]
            if not frame:
                raise BadRequest("empty request frame")
            try:
                request = decode_map(frame, max_bytes=self._max_request)
            except CodecError as exc:
                raise BadRequest(str(exc)) from None
            request_id = request_id_of(request.get("id"))
            op, kwargs = parse_request(request)
            self._ops[op] += 1
        except (BadRequest, UnknownOp) as exc:
            self._reply(socket, envelope, encode(error_reply(code_of(exc), str(exc),
                                                             request_id)))
            self._counts["errors"] += 1
            return
        peer = envelope[0]
        if op == "submit" and self._submits is not None:  # holds no worker
            if not self._submits.offer(socket, envelope, kwargs, request_id, len(frames[-1])):
                self._overloaded(socket, envelope, request_id,
                                 "too many of this connection's submits waiting; read its "
                                 "replies, then try again")
            return
        lane = _URGENT if op in URGENT_OPS else _POOL
        share = self._peers[lane]
        job = (envelope, op, kwargs, request_id)
        # A connection with nothing in progress on the lane always gets one request
        # through (an operator's halt, another client's query); one with requests in
        # progress waits its turn while its share, or the lane, is full.
        if share.must_wait(peer) or (self._pending[lane] >= self._max_pending
                                     and share.running(peer)):
            if not share.park(peer, job):
                self._overloaded(socket, envelope, request_id,
                                 "too many of this connection's requests waiting; read its "
                                 "replies, then try again")
            return
        self._pending[lane] += 1
        share.start(peer)
        self._hand_over(lane, *job)

    def _overloaded(self, socket: zmq.Socket[Any], envelope: Envelope, request_id: Any,
                    message: str) -> None:
        self._counts["overloaded"] += 1
        self._counts["errors"] += 1
        self._reply(socket, envelope, encode(error_reply("overloaded", message, request_id)))

    def _hand_over(self, lane: int, *request: Any) -> None:
        """The request to a worker of `lane`. A new worker the OS refuses (can't start new
        thread) is logged only: the pool queued the request first; a worker it has takes it."""
        assert self._lanes is not None
        try:
            self._lanes[lane].submit(self._run, lane, *request)
        except RuntimeError as exc:
            now = time.monotonic()
            if now >= self._refused_logged_at + REFUSED_LOG_S:
                self._refused_logged_at = now
                log.error("control_worker_start_failed", error=describe(exc),
                          pending=self._pending[lane])

    def _run(self, lane: int, envelope: Envelope, op: str, kwargs: dict[str, Any],
             request_id: Any) -> None:
        """In a worker: call the handler, encode the reply, hand it to the socket thread."""
        code: str | None = None
        try:
            result = getattr(self._handler, op)(**kwargs)
            reply: dict[str, Any] = {"v": 1, "ok": True, "result": result}
            if request_id is not None:
                reply["id"] = request_id
            data = encode(reply)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a reply
            code = code_of(exc)
            data = encode(self._failure(op, code, exc, request_id))
        self._replies.put((lane, envelope, data, code, request_id))
        self._wake()

    @staticmethod
    def _failure(op: str, code: str, exc: BaseException, request_id: Any) -> dict[str, Any]:
        if isinstance(exc, EngineStopped | JournalClosed):  # a stop under way: expected
            log.warning("control_op_refused_stopping", op=op, error=describe(exc))
            message = f"{op} failed: {type(exc).__name__}: {describe(exc)}"
        elif isinstance(exc, NoJournal):  # an in-process engine without data_dir: no bug
            log.info("control_op_needs_journal", op=op)
            message = f"{op} failed: {type(exc).__name__}: {describe(exc)}"
        elif code == INTERNAL:
            log.error("control_op_failed", op=op, error_type=type(exc).__name__,
                      error=describe(exc),
                      traceback="".join(traceback.format_exception(exc)))
            message = f"{op} failed: {type(exc).__name__}: {describe(exc)}"
        else:
            message = describe(exc)
        return error_reply(code, message, request_id)

    def _send_replies(self, socket: zmq.Socket[Any]) -> None:
        while True:
            try:
                lane, envelope, data, code, request_id = self._replies.get_nowait()
            except queue.Empty:
                return
            self._pending[lane] -= 1
            # Its turn over: the peer's next waiting request goes on, in its place.
            turn = self._peers[lane].done(envelope[0])
            if turn is not None:
                self._pending[lane] += 1
                self._hand_over(lane, *turn)
            if code is not None:
                self._counts["errors"] += 1
                if code == INTERNAL:
                    self._counts["internal"] += 1
            self._reply(socket, envelope, data, request_id)

    def _reply(self, socket: zmq.Socket[Any], envelope: Envelope, data: bytes,
               request_id: Any = None) -> None:
        if len(data) >= DIRECT_REPLY_BYTES and not self._unread.allows(envelope[0], len(data)):
            self._counts["overloaded"] += 1
            self._counts["errors"] += 1
            data = encode(error_reply("overloaded", "too many replies not read yet; read "
                                      "them, then try again", request_id))
        try:
            if len(data) < DIRECT_REPLY_BYTES and self._frames is not None:
                sent = self._frames([*envelope, data])
            else:
                tracker = socket.send_multipart([*envelope, data], zmq.NOBLOCK, copy=False,
                                                track=True)
                if tracker is not None:
                    self._unread.track(envelope[0], tracker, len(data))
                sent = True
        except zmq.ZMQError:
            sent = False  # the peer is gone (ROUTER_MANDATORY: EHOSTUNREACH)
        if sent:
            self._counts["replies"] += 1
        else:  # gone, or its queue is full
            self._counts["unroutable"] += 1
