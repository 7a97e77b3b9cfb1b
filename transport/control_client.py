"""The control client for other Python processes (import it from `transport.client`).

    from transport.client import ControlClient
    with ControlClient("tcp://127.0.0.1:7451", timeout=5.0) as control:
        execution_id = control.submit("arb_btc", inputs={"threshold": 10.0})["execution_id"]
        control.halt("manual")

Each method sends one request and waits up to `timeout` seconds for its reply. An error reply
raises the `ControlError` subclass of its code (`NotFoundError`, `HaltedError`, ...). No reply
in time raises `DaemonUnreachable`, and the client then drops its socket (closed with linger
0, so the unanswered request is discarded) and opens a fresh one on the next call: the
"lazy pirate" pattern, so one lost reply never wedges the client. A timed-out request is not
sent again by the client (a `submit` might run twice); whether to retry is the caller's call.
A request over the daemon's 1 MiB limit raises `BadRequestError` at once, unsent.

Thread safety: a client may be shared between threads; its calls are serialized by a lock
(one request in flight at a time). For parallel requests give each thread its own client.
A call made while the same thread is waiting for a reply (from a signal handler: a SIGTERM
handler that halts the daemon) goes through a socket of its own: the shared one is busy,
and with a plain lock it would have waited for ever on its own thread.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any, get_args

import msgpack
import zmq

from actors.event_types import EmergencyStateName
from transport.codec import MAX_MESSAGE_BYTES, MAX_RECEIVED_FRAME_BYTES, encode
from transport.errors import DaemonUnreachable, TransportError, error_for
from transport.security import ClientKeys, uses_ipv6


class ControlClient:
    """A REQ client of the control socket at `endpoint`; see the module docstring."""

    def __init__(self, endpoint: str, *, timeout: float = 5.0, keys: ClientKeys | None = None,
                 context: zmq.Context[Any] | None = None) -> None:
        _check_timeout(timeout)
        self.endpoint = endpoint
        self.timeout = timeout
        self._keys = keys
        self._context = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = None
        self._lock = threading.RLock()  # re-entered only by a signal handler
        #: Between a send and its reply on the shared socket (read under `_lock`).
        self._in_flight = False
        self._closed = False

    # -- plumbing --------------------------------------------------------------------------

    def request(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """Send `{"v": 1, "op": op, **args}` (None-valued args left out); return `result`."""
        message = {"v": 1, "op": op, **{k: v for k, v in args.items() if v is not None}}
        try:
            data = msgpack.packb(message, use_bin_type=True)
        except OverflowError:
            # An integer past 64 bits: `encode` would send its text (a `since_seq` of 10**30
            # refused as "not an integer", an input of 10**30 run as a string). Never sent.
            raise error_for("bad_request", f"{op}: an integer beyond 64 bits in its "
                                           "arguments (msgpack has no form for it)") from None
        except Exception:  # noqa: BLE001 - what msgpack refuses, packed as its plain form
            data = encode(message)
        wait = self.timeout if timeout is None else _check_timeout(timeout)
        if len(data) > MAX_MESSAGE_BYTES:
            # The daemon refuses it unread (and past 16 MiB drops the connection with no
            # reply at all: a submit would look as if it may have run). Never sent.
            raise error_for("bad_request", f"message of {len(data)} bytes is over the "
                                           f"{MAX_MESSAGE_BYTES} byte limit")
        with self._lock:
            if self._closed:
                raise TransportError("the control client is closed")
            if self._in_flight:  # this thread, from inside a request: a signal handler
                return self._result(self._nested(data, op, wait), op)
            socket = self._open()
            self._in_flight = True
            try:
                socket.send(data)
                frames = _receive(socket, wait)
                if frames is None:
                    self._reset()
                    raise self._no_reply(op, wait)
            except zmq.ZMQError as exc:
                self._reset()
                if self._closed:  # by a signal handler, during this request
                    raise TransportError(f"the control client was closed during {op}") from None
                raise DaemonUnreachable(f"{self.endpoint}: {exc.strerror} ({op})") from None
            except BaseException:
                # Interrupted between send and reply (a signal handler's exception, Ctrl-C):
                # a REQ socket still waiting for that reply could never send again.
                self._reset()
                raise
            finally:
                self._in_flight = False
        return self._result(frames, op)

    def _nested(self, data: bytes, op: str, wait: float) -> list[bytes]:
        """One request on a socket of its own, for a call from inside another (see the
        module docstring); the socket is closed after it."""
        socket = self._connect()
        try:
            socket.send(data)
            frames = _receive(socket, wait)
            if frames is None:
                raise self._no_reply(op, wait)
            return frames
        except zmq.ZMQError as exc:
            raise DaemonUnreachable(f"{self.endpoint}: {exc.strerror} ({op})") from None
        finally:
            socket.close(linger=0)

    def _no_reply(self, op: str, wait: float) -> DaemonUnreachable:
        if op == "submit":  # sent, so it may have run: a blind retry could run it twice
            return DaemonUnreachable(
                f"no reply from {self.endpoint} within {wait:g} s (submit: the daemon may "
                "have accepted it; list its executions before submitting again)")
        return DaemonUnreachable(f"no reply from {self.endpoint} within {wait:g} s ({op})")

    def _result(self, frames: list[bytes], op: str) -> Any:
        if len(frames) != 1:
            # (Reading only the first frame once took a reply with extra frames as good.)
            raise TransportError(f"{self.endpoint}: a reply to {op} is not one frame "
                                 f"({len(frames)} frames)")
        try:
            reply = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
        except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types
            raise TransportError(f"{self.endpoint}: a reply to {op} is not msgpack: "
                                 f"{exc}") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise TransportError(f"{self.endpoint}: a reply to {op} is not a reply map")
        version = reply.get("v")
        if type(version) is not int or version != 1:  # (True == 1: the type first)
            # A peer on another protocol version means other shapes: read as ours, a
            # `{"v": 2, "ok": true}` made `halt` report success on a daemon it never reached.
            raise TransportError(f"{self.endpoint}: a reply to {op} is not protocol version "
                                 f"1 (v={version!r})")
        if reply["ok"]:
            return reply.get("result")
        error = reply.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            # Every error the daemon sends has a code: a missing one read as `internal`
            # (exit 1, "the daemon failed") for what is a peer outside the protocol.
            raise TransportError(f"{self.endpoint}: an error reply to {op} has no error "
                                 "map with a code")
        raise error_for(error["code"], str(error.get("message", "")))

    def _open(self) -> zmq.Socket[Any]:
        if self._socket is None:
            self._socket = self._connect()
        return self._socket

    def _connect(self) -> zmq.Socket[Any]:
        """A new REQ socket to the daemon (CURVE keys applied), linger 0."""
        socket: zmq.Socket[Any] = self._context.socket(zmq.REQ)
        socket.linger = 0
        socket.ipv6 = uses_ipv6(self.endpoint)
        # A request id in the envelope (the daemon echoes the envelope): a second reply to
        # an earlier request is dropped, not taken as the answer to the next one.
        socket.setsockopt(zmq.REQ_CORRELATE, 1)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_RECEIVED_FRAME_BYTES)
        try:
            if self._keys is not None:
                self._keys.apply(socket)
            socket.connect(self.endpoint)
        except BaseException:
            socket.close(linger=0)
            raise
        return socket

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._reset()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one method per op -----------------------------------------------------------------
    # Each checks its result's shape: a peer that is not the daemon would otherwise hand
    # the caller a None or a list where it reads a map (an AttributeError far from here).

    def ping(self) -> dict[str, Any]:
        result = _a_map(self.request("ping"), "ping")
        if result.get("pong") is not True:
            raise TransportError(f"the result of ping has no pong: {sorted(map(str, result))}")
        return result

    def status(self) -> dict[str, Any]:
        return _a_state(_a_map(self.request("status"), "status"), "status", ("state",))

    def submit(self, workflow: str, inputs: Mapping[str, Any] | None = None, *,
               bot_id: str | None = None, strategy_id: str | None = None,
               priority: int = 0, timeout: float | None = None) -> dict[str, Any]:
        """`{"execution_id"}`; the reply comes after the execution's record is committed,
        which on a slow disk can take the daemon up to 10 s (`transport.ops`,
        `SUBMIT_RECORD_TIMEOUT_S`).
        `timeout` (default: the client's) bounds the wait for that reply; the CLI pings
        first with its `--timeout`, then waits that long for the submit's reply."""
        result = _a_map(self.request(
            "submit", timeout, workflow=workflow,
            inputs=dict(inputs) if inputs is not None else None,
            bot_id=bot_id, strategy_id=strategy_id, priority=priority), "submit")
        execution_id = result.get("execution_id")
        if not isinstance(execution_id, str) or not _EXECUTION_ID.fullmatch(execution_id):
            # Checked, not only typed: it is printed, and shown in the messages that tell
            # how to follow it up (`tradeloom show ID`).
            raise TransportError(f"{self.endpoint}: a reply to submit has no execution_id "
                                 "of the form exec_<workflow_id>_<hex> (the daemon may have "
                                 "accepted it)")
        return result

    def execution(self, execution_id: str) -> dict[str, Any]:
        return _a_map(self.request("execution", execution_id=execution_id), "execution")

    def executions(self, *, workflow: str | None = None, status: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        return _a_list(self.request("executions", workflow=workflow, status=status,
                                    limit=limit), "executions")

    def cancel(self, execution_id: str) -> dict[str, Any]:
        return _a_map(self.request("cancel", execution_id=execution_id), "cancel")

    # The state changes: `{"state", "previous_state"}`, both state names, checked. The
    # kill switch's callers (a script's `tradeloom halt && ...`) act on the success.

    def halt(self, reason: str, *, origin: str | None = None) -> dict[str, Any]:
        result = _a_state(_a_map(self.request("halt", reason=reason, origin=origin), "halt"),
                          "halt", _STATE_CHANGE)
        if result["state"] != "HALT":
            raise TransportError(f"the result of halt is state {result['state']}, not HALT")
        return result

    def alert(self, reason: str, force: bool = False, *,
              origin: str | None = None) -> dict[str, Any]:
        return _a_state(_a_map(self.request("alert", reason=reason, force=force,
                                            origin=origin), "alert"), "alert", _STATE_CHANGE)

    def reduce_only(self, reason: str, *, origin: str | None = None) -> dict[str, Any]:
        return _a_state(_a_map(self.request("reduce_only", reason=reason, origin=origin),
                               "reduce_only"), "reduce_only", _STATE_CHANGE)

    def resume(self, reason: str | None = None, force: bool = False, *,
               origin: str | None = None) -> dict[str, Any]:
        return _a_state(_a_map(self.request("resume", reason=reason, force=force,
                                            origin=origin), "resume"), "resume", _STATE_CHANGE)

    def intents(self, unresolved: bool = True) -> list[dict[str, Any]]:
        return _a_list(self.request("intents", unresolved=unresolved), "intents")

    def resolve_intent(self, idempotency_key: str, outcome: str,
                       note: str | None = None) -> dict[str, Any]:
        return _a_map(self.request("resolve_intent", idempotency_key=idempotency_key,
                                   outcome=outcome, note=note), "resolve_intent")

    def risk_update(self, limit: str, value: float | None = None,
                    delta: float | None = None) -> dict[str, Any]:
        return _a_map(self.request("risk_update", limit=limit, value=value, delta=delta),
                      "risk_update")

    def webhooks_failed(self, name: str | None = None,
                        limit: int = 100) -> list[dict[str, Any]]:
        """Dead letters, oldest first (docs/protocol.md, the webhook ops)."""
        return _a_list(self.request("webhooks_failed", name=name, limit=limit),
                       "webhooks_failed")

    def webhooks_retry(self, name: str | None = None,
                       ids: list[int] | None = None) -> dict[str, Any]:
        """`{"requeued", "count"}`: those dead letters (None: all) are sent again. An empty
        `ids` is refused (`BadRequestError`), never read as all."""
        return _a_map(self.request("webhooks_retry", name=name,
                                   ids=None if ids is None else list(ids)), "webhooks_retry")

    def webhooks_delete(self, name: str | None = None,
                        ids: list[int] | None = None) -> dict[str, Any]:
        """`{"deleted", "count"}`: one endpoint's dead letters (`name`), or those `ids` (an
        empty one is refused, as for `webhooks_retry`)."""
        return _a_map(self.request("webhooks_delete", name=name,
                                   ids=None if ids is None else list(ids)), "webhooks_delete")

    def webhooks_log(self, name: str | None = None, limit: int = 100) -> dict[str, Any]:
        """`{"endpoints", "deliveries"}`: each endpoint's state, its deliveries newest first."""
        return _a_map(self.request("webhooks_log", name=name, limit=limit), "webhooks_log")

    def replay(self, since_seq: int, limit: int = 1000,
               topic_prefix: str = "") -> dict[str, Any]:
        """`{"events", "next_seq", "last_seq", "first_seq"}`: committed events from
        `since_seq`, seq ascending, at most `limit`; continue from `next_seq`."""
        return _a_map(self.request("replay", since_seq=since_seq, limit=limit,
                                   topic_prefix=topic_prefix), "replay")


def _a_map(result: Any, op: str) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise TransportError(f"the result of {op} is not a map: {type(result).__name__}")
    return result


#: The emergency states, as their names travel.
_STATES = frozenset(get_args(EmergencyStateName))
_STATE_CHANGE = ("state", "previous_state")


def _a_state(result: dict[str, Any], op: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """`result`, once each of `keys` holds an emergency state's name."""
    for key in keys:
        if not isinstance(result.get(key), str) or result[key] not in _STATES:
            raise TransportError(f"the result of {op} has no {key} among "
                                 f"{', '.join(sorted(_STATES))}")
    return result


def _a_list(result: Any, op: str) -> list[dict[str, Any]]:
    if not isinstance(result, list) or not all(isinstance(row, dict) for row in result):
        raise TransportError(f"the result of {op} is not a list of maps")
    return result


#: An execution id as the daemon makes them, `exec_<workflow_id>_<8 hex>` (workflow ids
#: are `[A-Za-z0-9_.-]{1,128}`), with room for a longer counter.
_EXECUTION_ID = re.compile(r"exec_[A-Za-z0-9_.-]{1,128}_[0-9a-f]{8,16}")

#: The longest single poll while a reply is awaited (`_receive`).
POLL_SLICE_S = 0.1

#: Longer waits than this (about 24 days) wait for ever: zmq's poll takes a C int of ms.
_FOREVER_MS = 2**31 - 1


def _check_timeout(timeout: float) -> float:
    """`timeout` if it is a number > 0 (`math.inf`: wait for ever), else `ValueError`."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
    return timeout


def _receive(socket: zmq.Socket[Any], wait: float) -> list[bytes] | None:
    """The reply's frames within `wait` seconds, or None. A stale reply (to an earlier
    request) makes the socket readable and is then dropped inside recv (REQ_CORRELATE): a
    blocking recv would wait for the right one without bound, so each read is non-blocking
    and the poll goes on for what is left of `wait`. It polls in slices of POLL_SLICE_S: a
    signal that lands just before the poll's system call starts interrupts nothing, and its
    Python handler (a SIGTERM handler that halts through this client) would wait for the
    whole reply wait; between slices it runs."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if not socket.poll(_poll_ms(min(left, POLL_SLICE_S)), zmq.POLLIN):
            continue
        try:
            return [bytes(frame) for frame in socket.recv_multipart(zmq.NOBLOCK)]
        except zmq.Again:
            continue


def _poll_ms(wait: float) -> int | None:
    ms = wait * 1000
    return None if ms >= _FOREVER_MS else int(ms)
