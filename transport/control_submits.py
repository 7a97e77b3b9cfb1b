"""The control server's submits that need no worker (`ops.NowaitSubmit`, the daemon's).

Each is started on the socket thread, which never blocks for it; its reply is sent when the
journal's commit calls back (the writer hands the token over and wakes the socket thread),
or as an `internal` error once the writes fail or the handler's timeout passes (the outcome
is then unknown). A connection's submits past `max_pending` awaiting their commit wait
their turn in its own FIFO (`PeerShare`, bounded in count and bytes) and go on, in order,
as its earlier ones are answered; past that bound it alone is refused `overloaded`.

Used from the control server's socket thread only (but `_on_recorded`, the commit's
callback): no lock.
"""

from __future__ import annotations

import functools
import itertools
import queue
import time
from collections.abc import Callable
from typing import Any

import zmq

from transport.codec import encode
from transport.envelopes import Envelope
from transport.errors import INTERNAL, code_of
from transport.ops import DeferredReply, NowaitSubmit, Recording
from transport.peer_share import PeerShare

__all__ = ["MAX_PARKED_SUBMITS", "NowaitSubmits"]

#: Submits one connection may have waiting for their turn (past `max_pending` awaiting
#: their commit), and all connections' together, with their bytes: as many as the default
#: admission queue holds, so a DEALER pipelining submits is refused only near a full queue.
MAX_PARKED_SUBMITS = 10_000
MAX_PARKED_SUBMITS_TOTAL = 20_000
MAX_PARKED_SUBMIT_BYTES = 256 * 1024 * 1024
#: While submits wait for their records' commit, the journal's writes are looked at this
#: often (ms): one met by a failing disk is answered then (`internal`, outcome unknown),
#: not at its timeout.
WRITES_CHECK_MS = 100

#: (socket, envelope, encoded reply, request id): the server's `_reply`.
Reply = Callable[[zmq.Socket[Any], Envelope, bytes, Any], None]
#: (op, code, exception, request id) -> the error reply map: the server's `_failure`.
Failure = Callable[[str, str, BaseException, Any], dict[str, Any]]
_Job = tuple[Envelope, dict[str, Any], Any]


class NowaitSubmits:
    def __init__(self, handler: NowaitSubmit, *, max_pending: int, reply: Reply,
                 failure: Failure, counts: dict[str, int], wake: Callable[[], None]) -> None:
        self._handler = handler
        self._max_pending = max_pending
        self._reply, self._failure, self._counts, self._wake = reply, failure, counts, wake
        #: Each connection's submits awaiting their commit, and those waiting their turn.
        self.share = PeerShare(max_pending, max_parked=MAX_PARKED_SUBMITS,
                               max_parked_total=MAX_PARKED_SUBMITS_TOTAL,
                               max_parked_bytes=MAX_PARKED_SUBMIT_BYTES)
        #: Submits started and not answered yet.
        self.pending = 0
        #: Deferred submits whose commit called back: (token, committed).
        self._recorded: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        #: Deferred submits waiting, by token, in deadline order: (deadline, envelope,
        #: request id, the reply to send).
        self._awaiting: dict[int, tuple[float, Envelope, Any, DeferredReply]] = {}
        self._tokens = itertools.count()

    def offer(self, socket: zmq.Socket[Any], envelope: Envelope, kwargs: dict[str, Any],
              request_id: Any, size: int) -> bool:
        """Start the submit, or queue it for its connection's turn; False if it may not
        wait either (the caller answers `overloaded`)."""
        peer, share = envelope[0], self.share
        # The lanes' rule: one with submits awaiting their commit waits its turn while
        # `max_pending` do, so a pipelining DEALER is slowed down, not refused.
        if share.must_wait(peer) or (self.pending >= self._max_pending and share.running(peer)):
            return share.park(peer, (envelope, kwargs, request_id), size)
        self.pending += 1
        share.start(peer)
        self._run(socket, (envelope, kwargs, request_id))
        return True

    def send_recorded(self, socket: zmq.Socket[Any]) -> None:
        """Answer the submits whose commit called back."""
        while True:
            try:
                token, committed = self._recorded.get_nowait()
            except queue.Empty:
                return
            found = self._awaiting.pop(token, None)
            if found is None:
                continue  # already answered: its deadline passed first
            _, envelope, request_id, answer = found
            self._run(socket, self._answer(
                socket, envelope, answer.result if committed else answer.failed(), request_id))

    def expire(self, socket: zmq.Socket[Any]) -> None:
        """Answer the submits met by failing writes, or past their deadline."""
        if self._awaiting:  # (one journal behind every deferred reply: ask it once)
            error = next(iter(self._awaiting.values()))[3].write_error()
            if error is not None:
                for token, (_, envelope, request_id, answer) in list(self._awaiting.items()):
                    if not answer.recording.done:  # (one committed is `send_recorded`'s)
                        del self._awaiting[token]
                        self._run(socket, self._answer(
                            socket, envelope, answer.writes_failing(error), request_id))
        now = time.monotonic()
        while self._awaiting:
            token, (deadline, envelope, request_id, answer) = next(iter(self._awaiting.items()))
            if deadline > now:
                return
            del self._awaiting[token]
            self._run(socket, self._answer(socket, envelope, answer.timed_out(), request_id))

    def poll_ms(self) -> int:
        """How long the socket thread may sleep: until the next deadline or writes check."""
        if not self._awaiting:
            return 1000
        deadline = next(iter(self._awaiting.values()))[0]
        return max(0, min(WRITES_CHECK_MS, int((deadline - time.monotonic()) * 1000) + 1))

    def _run(self, socket: zmq.Socket[Any], job: _Job | None) -> None:
        """Submit `job`, then each waiting one of its connection's its answer lets go (a
        loop: a refusal answered at once would otherwise recurse once per waiting submit)."""
        while job is not None:
            job = self._submit(socket, *job)

    def _submit(self, socket: zmq.Socket[Any], envelope: Envelope, kwargs: dict[str, Any],
                request_id: Any) -> _Job | None:
        """Returns the connection's next waiting submit if this one was answered at once."""
        try:
            answer = self._handler.submit_nowait(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
            return self._answer(socket, envelope, exc, request_id)
        if not isinstance(answer, DeferredReply):
            return self._answer(socket, envelope, answer, request_id)
        token = next(self._tokens)
        self._awaiting[token] = (time.monotonic() + answer.timeout_s, envelope, request_id,
                                 answer)
        answer.recording.add_done_callback(functools.partial(self._on_recorded, token))
        return None

    def _on_recorded(self, token: int, recording: Recording) -> None:
        """In the journal writer's thread, after the commit: hand over, wake, return."""
        self._recorded.put((token, recording.done))
        self._wake()

    def _answer(self, socket: zmq.Socket[Any], envelope: Envelope,
                outcome: dict[str, Any] | Exception, request_id: Any) -> _Job | None:
        """Reply to a submit; it leaves the count, or its connection's next waiting submit
        takes its place: returned, for the caller to run (after this reply: the replies
        keep the requests' order)."""
        after: _Job | None = self.share.done(envelope[0])
        if after is None:
            self.pending -= 1
        if isinstance(outcome, Exception):
            code = code_of(outcome)
            self._counts["errors"] += 1
            if code == INTERNAL:
                self._counts["internal"] += 1
            data = encode(self._failure("submit", code, outcome, request_id))
        else:
            reply: dict[str, Any] = {"v": 1, "ok": True, "result": outcome}
            if request_id is not None:
                reply["id"] = request_id
            data = encode(reply)
        self._reply(socket, envelope, data, request_id)
        return after
