"""`Subscriber`: follows the daemon's event stream with no gap and no duplicate.

    with Subscriber(events, control, topics=("workflow/arb_btc/",), since_seq=42) as sub:
        for event in sub:             # seq strictly increasing, losses replayed
            ...

The algorithm (also in docs/protocol.md):

1. Connect a SUB socket, subscribe to each topic prefix and to `system/heartbeat`.
2. Wait for the first heartbeat (it comes at once on subscribing): the stream is live. Events
   that arrive before it are held back. `last_seq` becomes `since_seq - 1` when given, else
   one before the first held-back event, else the heartbeat's `last_seq`.
3. Each event with seq `s`: `s <= last_seq` is a duplicate and dropped. `s == last_seq + 1`
   is delivered. `s > last_seq + 1` is a jump: the seqs `[last_seq + 1, s - 1]` are replayed
   through the control socket (`replay` with the topic prefix, page by page, from `next_seq`),
   the matching ones delivered, then `s`. Unfiltered (`topics=("",)`) a jump always means a
   loss. Filtered, the seqs in between are usually other topics' events, so each jump costs
   one small replay; with exactly one whole-workflow filter (`workflow/<id>/`) a jump whose
   `wseq` is the workflow's previous `wseq + 1` proves nothing was lost and costs nothing.
4. Each heartbeat with `last_seq` L > `last_seq`: everything up to L was sent before it, so
   `[last_seq + 1, L]` is replayed the same way (unfiltered: a lost tail; filtered: a check
   that costs one replay per heartbeat while other topics have traffic).
5. A heartbeat with a new `epoch`: the daemon restarted. The SUB socket reconnects by itself
   and seq continues, so step 4 fetches whatever was published while we were away. (A new
   epoch whose `last_seq` is below ours means a new journal: `last_seq` restarts from it.)

So events come out in strictly increasing seq, each once. Resume after your own restart by
saving the last seq you processed and passing `since_seq=saved + 1`. Seq-less events (the
heartbeat aside, non-journaled `system/` notices) are delivered as they come.

Not thread-safe: use a Subscriber from one thread (the one that created it).
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from actors.events import topic_of
from actors.logs import get_logger
from actors.packing import unpack_lenient
from transport.control_client import POLL_SLICE_S, ControlClient
from transport.errors import DaemonUnreachable, TransportError
from transport.ops import MAX_LIMIT
from transport.publisher import MAX_PREFIX_BYTES
from transport.security import ClientKeys, uses_ipv6

log = get_logger("tradeloom.transport.subscriber")

Event = dict[str, Any]
HEARTBEAT_TOPIC = "system/heartbeat"
_WHOLE_WORKFLOW = re.compile(r"^workflow/[A-Za-z0-9_.-]{1,128}/$")


@dataclass(frozen=True, slots=True)
class _TailCheck:
    """A point in the inbox: every event up to `last_seq` has been sent before it."""

    last_seq: int
    initial: bool = False


#: Between replay tries while the control socket does not answer (`__iter__`).
UNREACHABLE_PAUSE_S = 0.2
#: How often `__iter__` says again that the control socket does not answer.
UNREACHABLE_WARN_EVERY_S = 30.0


class Subscriber:
    """Follows `events_endpoint` (the daemon's PUB) and fills gaps through `control_endpoint`.

    `topics`: topic prefixes (`""` = everything). `since_seq`: the first seq wanted (replayed
    from the journal, then live); None starts live. `timeout`: for each control request.
    Counters: `gaps_filled` (losses repaired), `replayed` (events delivered from replay,
    catch-up included), `duplicates`, `lost` (seqs the journal no longer had), `restarts`
    (new epochs seen), `heartbeats`, `malformed`."""

    def __init__(self, events_endpoint: str, control_endpoint: str, *,
                 topics: Sequence[str] = ("",), since_seq: int | None = None,
                 keys: ClientKeys | None = None, timeout: float = 5.0,
                 rcvhwm: int = 100_000, page: int = 1000,
                 context: zmq.Context[Any] | None = None) -> None:
        if isinstance(topics, str) or not all(isinstance(t, str) for t in topics):
            raise TypeError("topics must be a sequence of topic prefix strings")
        if since_seq is not None and (isinstance(since_seq, bool)
                                      or not isinstance(since_seq, int)):
            raise TypeError("since_seq must be an int or None")
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_LIMIT:
            # The daemon answers a replay limit past MAX_LIMIT with bad_request: every
            # gap fill would fail.
            raise ValueError(f"page must be an int from 1 to {MAX_LIMIT}")
        if any(len(t.encode()) > MAX_PREFIX_BYTES for t in topics):
            # The daemon would drop the connection: never live, with no word why.
            raise ValueError(f"a topic prefix must be at most {MAX_PREFIX_BYTES} bytes")
        self.filters = tuple(dict.fromkeys(topics)) or ("",)
        self._everything = "" in self.filters
        self._prefix = "" if self._everything else _common_prefix(self.filters)
        self._one_workflow = (len(self.filters) == 1
                              and _WHOLE_WORKFLOW.match(self.filters[0]) is not None)
        self.events_endpoint = events_endpoint
        self._page = page
        self._control = ControlClient(control_endpoint, timeout=timeout, keys=keys,
                                      context=context)
        ctx = context if context is not None else zmq.Context.instance()
        self._sub: zmq.Socket[Any] = ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = rcvhwm
        # No ZMQ_MAXMSGSIZE here, unlike the control client: a frame over it is a protocol
        # error, after which libzmq ends that connection for good (no reconnect), and this
        # subscriber would wait for ever, deaf. The control client starts a fresh socket.
        self._sub.ipv6 = uses_ipv6(events_endpoint)
        if keys is not None:
            keys.apply(self._sub)
        for prefix in self.filters:
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        if not any(HEARTBEAT_TOPIC.startswith(p) for p in self.filters):
            self._sub.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC.encode())
        self._sub.connect(events_endpoint)

        self.last_seq: int | None = max(since_seq, 1) - 1 if since_seq is not None else None
        self.epoch: str | int | None = None
        self.live = False
        self.last_heartbeat: Event | None = None
        self._last_wseq: int | None = None
        self._caught_up = False
        self._ready: collections.deque[Event] = collections.deque()
        self._inbox: collections.deque[Event | _TailCheck] = collections.deque()
        self._early: list[Event] = []
        self._gap: tuple[int, int] | None = None
        self._held: Event | None = None
        self._gap_recovered = 0
        self._gap_is_loss = False
        self.gaps_filled = self.replayed = self.duplicates = self.lost = 0
        self.restarts = self.heartbeats = self.malformed = 0

    # -- public ----------------------------------------------------------------------------

    def wait_live(self, timeout: float = 5.0) -> None:
        """Return once the first heartbeat is in; `DaemonUnreachable` if none in `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.live:
            remaining = deadline - time.monotonic()
            if (remaining <= 0 or not self._receive(remaining)) and not self.live:
                raise DaemonUnreachable(
                    f"no heartbeat from {self.events_endpoint} within {timeout:g} s")

    def next(self, timeout: float | None = None) -> Event | None:
        """The next event in seq order, or None when none is ready within `timeout` seconds
        (None: wait for ever). Replays run here, in the caller's thread, one page per step:
        a page already asked for is waited for (up to the control `timeout`) even past this
        call's own `timeout`. A replay that gets no answer raises `DaemonUnreachable` and is
        tried again by the next call."""
        if self._sub.closed:  # else a bare ZMQError ("Operation not supported")
            raise TransportError("the subscriber is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._gap is not None:
                self._fill_step()
                if (self._gap is not None and not self._ready and deadline is not None
                        and time.monotonic() >= deadline):
                    return None  # a long fill goes on at the next call, not past this one's
                continue
            if self._inbox:
                self._process(self._inbox.popleft())
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                # Out of time, but what has already arrived is still taken (`next(0)`
                # once returned None for ever, however many events were waiting).
                if not self._receive(0):
                    return None
                continue
            self._receive(remaining)

    def __iter__(self) -> Iterator[Event]:
        """Every event, for ever: across daemon restarts and outages (a replay that gets no
        answer is tried again, a warning logged once per outage); ends when `close()` is
        called (from a signal handler, say). A subscriber closed already is refused."""
        if self._sub.closed:
            raise TransportError("the subscriber is closed")
        unreachable_since: float | None = None
        warned_at = 0.0
        while not self._sub.closed:
            try:
                event = self.next(None)
            except DaemonUnreachable as exc:
                now = time.monotonic()
                if unreachable_since is None or now - warned_at >= UNREACHABLE_WARN_EVERY_S:
                    # Again now and then: a control endpoint that never answers (a typo)
                    # is not left to one line at the start.
                    log.warning("subscriber_replay_unreachable", error=str(exc),
                                for_s=0.0 if unreachable_since is None
                                else round(now - unreachable_since, 1))
                    warned_at = now
                if unreachable_since is None:
                    unreachable_since = now
                time.sleep(UNREACHABLE_PAUSE_S)  # (most tries waited the control timeout)
                continue
            except TransportError:
                if self._sub.closed:
                    return
                raise
            if unreachable_since is not None:
                log.info("subscriber_replay_reachable",
                         after_s=round(time.monotonic() - unreachable_since, 3))
                unreachable_since = None
            if event is not None:
                yield event

    def events(self, timeout: float) -> Iterator[Event]:
        """Events until none comes for `timeout` seconds."""
        while (event := self.next(timeout)) is not None:
            yield event

    def close(self) -> None:
        self._sub.close(linger=0)
        self._control.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receiving -------------------------------------------------------------------------

    def _receive(self, timeout: float | None) -> bool:
        """Read one message into the inbox (or the early list); False on timeout. A wait
        for ever polls in slices of POLL_SLICE_S: a signal landing just before the poll's
        system call interrupts nothing, so its handler's `close()` (the way to end
        `__iter__`) would otherwise wait for the next message, for ever from a dead daemon."""
        ms = None if timeout is None else 0 if timeout <= 0 else max(1, int(timeout * 1000))
        try:
            if ms is None:
                while not self._sub.poll(int(POLL_SLICE_S * 1000), zmq.POLLIN):
                    pass
            elif not self._sub.poll(ms, zmq.POLLIN):
                return False
            frames = self._sub.recv_multipart(zmq.NOBLOCK)
        except zmq.ZMQError:
            if self._sub.closed:  # by `close()` from a signal handler or another thread
                raise TransportError("the subscriber was closed") from None
            raise
        try:
            if len(frames) != 2:
                raise ValueError(f"{len(frames)} frames")
            item = unpack_lenient(frames[1])  # (a tuple key in a node's output reads too)
            if not isinstance(item, dict):
                raise ValueError("not a map")
            problem = _malformed(item, notice=frames[0].startswith(b"system/"))
            if problem is None and item.get("seq") is not None and not self._matches(item):
                problem = "its payload is not of the topics subscribed to"
            if problem is not None:
                raise ValueError(problem)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the stream
            self.malformed += 1
            log.warning("stream_message_malformed", error=str(exc) or type(exc).__name__)
            return True
        if not self.live:
            self._process(item)
        else:
            self._inbox.append(item)
        return True

    def _process(self, item: Event | _TailCheck) -> None:
        if isinstance(item, _TailCheck):
            self._tail_check(item.last_seq)
            if item.initial:
                self._caught_up = True  # gaps from here on are losses, not catch-up
            return
        seq = item.get("seq")
        if item.get("type") == "heartbeat" and seq is None:
            self._on_heartbeat(item)
        elif not self.live:
            self._early.append(item)
        elif not isinstance(seq, int) or isinstance(seq, bool):
            self._ready.append(item)  # a non-journaled notice: no place in the seq order
        else:
            self._on_event(item, seq)

    def _on_heartbeat(self, beat: Event) -> None:
        last = beat.get("last_seq")
        if not isinstance(last, int) or isinstance(last, bool) or last < 0:
            self.malformed += 1
            return
        self.heartbeats += 1
        self.last_heartbeat = beat
        epoch = beat.get("epoch")
        if not self.live:
            self.live, self.epoch = True, epoch
            early, self._early = self._early, []
            if self.last_seq is None:
                first = next((e["seq"] for e in early if isinstance(e.get("seq"), int)), None)
                self.last_seq = first - 1 if first is not None else last
            self._inbox.extendleft(reversed([*early, _TailCheck(last, initial=True)]))
            return
        assert self.last_seq is not None
        if epoch != self.epoch:
            self.restarts += 1
            self.epoch = epoch
            log.info("daemon_restarted", epoch=epoch, last_seq=last, our_last_seq=self.last_seq)
            if last < self.last_seq:
                log.warning("journal_reset", daemon_last_seq=last, our_last_seq=self.last_seq)
                self.last_seq, self._last_wseq = last, None
                return
        self._tail_check(last)

    def _tail_check(self, last: int) -> None:
        assert self.last_seq is not None
        if last > self.last_seq:
            self._start_gap(self.last_seq + 1, last, held=None)

    def _on_event(self, event: Event, seq: int) -> None:
        assert self.last_seq is not None
        if seq <= self.last_seq:
            self.duplicates += 1
            return
        if seq > self.last_seq + 1 and not self._proven_contiguous(event):
            self._start_gap(self.last_seq + 1, seq - 1, held=event)
            return
        self._deliver(event, seq)

    def _proven_contiguous(self, event: Event) -> bool:
        wseq = event.get("wseq")
        return (self._one_workflow and self._last_wseq is not None
                and isinstance(wseq, int) and wseq == self._last_wseq + 1)

    def _deliver(self, event: Event, seq: int) -> None:
        self._ready.append(event)
        self.last_seq = seq
        if self._one_workflow:
            wseq = event.get("wseq")
            self._last_wseq = wseq if isinstance(wseq, int) else None

    # -- replay ----------------------------------------------------------------------------

    def _start_gap(self, first: int, last: int, *, held: Event | None) -> None:
        self._gap, self._held, self._gap_recovered = (first, last), held, 0
        self._gap_is_loss = self._caught_up

    def _fill_step(self) -> None:
        """One replay page of the pending gap; finishes it when the range is covered."""
        assert self._gap is not None and self.last_seq is not None
        first, last = self._gap
        reply = self._control.replay(first, limit=min(self._page, last - first + 1),
                                     topic_prefix=self._prefix)
        if not isinstance(reply, dict) or not isinstance(reply.get("events", []), list):
            # Not the protocol: one clear error (the gap stays, so a later call asks again)
            # rather than an AttributeError or TypeError from reading it.
            raise TransportError(f"{self._control.endpoint}: a replay reply is not a map "
                                 "with a list of events")
        events = reply.get("events") or []
        oldest = reply.get("first_seq")
        if isinstance(oldest, int) and oldest > first:
            missing = min(oldest - 1, last) - first + 1
            self.lost += missing
            log.warning("replay_pruned", first_wanted=first, first_kept=oldest)
        next_seq = reply.get("next_seq")
        for event in events:
            if not isinstance(event, dict) or _malformed(event, notice=False) is not None:
                self.malformed += 1
                log.warning("replay_event_malformed", since_seq=first)
                continue
            seq = event["seq"]
            next_seq = max(next_seq if isinstance(next_seq, int) else 0, seq + 1)
            if seq > last:
                break
            if seq <= self.last_seq or not self._matches(event):
                continue
            self._deliver(event, seq)
            self._gap_recovered += 1
            self.replayed += 1
        committed = reply.get("last_seq")
        if isinstance(committed, int) and not isinstance(committed, bool) and committed < last:
            # The event or heartbeat that opened this gap claimed seqs the journal does not
            # have (each is committed before it is sent): taking the claim would make every
            # real event to come look like a duplicate.
            log.warning("seq_past_the_journal", claimed=last, journal_last_seq=committed)
            if self._held is not None:
                self.malformed += 1
                self._held = None
            last = max(self.last_seq, committed)
        if (not isinstance(next_seq, int) or next_seq > last or next_seq <= first
                or (isinstance(committed, int) and next_seq > committed)):
            if self._everything and isinstance(next_seq, int) and next_seq <= first <= last:
                # The journal holds these seqs yet the replay made no progress: they are
                # lost to us (unfiltered, every seq is ours).
                self.lost += last - max(first, self.last_seq + 1) + 1
                log.warning("replay_stalled", first_missing=first, last_missing=last)
            self._finish_gap(last)
        else:
            self._gap = (next_seq, last)

    def _finish_gap(self, last: int) -> None:
        assert self.last_seq is not None
        self.last_seq = max(self.last_seq, last)
        if self._gap_recovered and self._gap_is_loss:
            self.gaps_filled += 1
        self._gap = None
        if self._held is not None:
            self._inbox.appendleft(self._held)
            self._held = None

    def _matches(self, event: Event) -> bool:
        if self._everything:
            return True
        try:
            topic = topic_of(event)
        except (KeyError, TypeError):  # no `type`, or one that is not hashable
            return False
        return topic.startswith(self.filters)


#: The largest seq msgpack carries; the journal's seqs start at 1.
_MAX_SEQ = 2**64 - 1


def _malformed(event: Event, *, notice: bool) -> str | None:
    """Why `event` is not an event of the protocol, or None. A `seq` must be an int >= 1
    (a bool is not one); only a `system/` notice (`notice`) may come without one."""
    if not isinstance(event.get("type"), str):
        return "no type"
    seq = event.get("seq")
    if seq is None:
        return None if notice else "no seq"
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= _MAX_SEQ:
        return f"seq {seq!r} is not an int >= 1"
    return None


def _common_prefix(texts: Sequence[str]) -> str:
    """The longest string every one of `texts` starts with (character by character: topic
    prefixes are not paths)."""
    first, last = min(texts), max(texts)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]
