"""`tradeloom tail`: the live view of the daemon's event stream.

    tradeloom tail                              # everything, from now on
    tradeloom tail --workflow arb_btc --type execution_failed --type node_failed
    tradeloom tail --since 1 --json             # the whole journal, then live; for machines

Events come from a `Subscriber` (transport/subscriber.py): seq strictly increasing, gaps
filled by replay, `--since` replayed first then followed with no gap and no duplicate, and a
daemon restart (a new heartbeat epoch) continues with the next seq. On a terminal a status
header (state, running, queued, open breakers, limit utilisation) stays at the bottom,
refreshed from `status` every second and at once by emergency events; without one, plain
lines and no header. `--json` prints each event as one JSON object per line. Runs until
Ctrl-C (or SIGTERM), or until stdout's reader leaves (`tail | head -1`), then exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from actors.config_ranges import HEARTBEAT_S_RANGE
from actors.json_text import json_text
from actors.workflow import ID_PATTERN
from transport.cli_options import (
    EXIT_OK,
    EXIT_USAGE,
    Connection,
    ExampleFormatter,
    add_client_options,
    client_command,
    connection,
    fail,
    int_in_range,
)

if TYPE_CHECKING:
    from transport.subscriber import Subscriber
    from transport.tail_view import StatusHeader

#: How often the header asks the daemon for its status.
STATUS_EVERY_S = 1.0
#: How long `next()` waits before the loop looks around (signals are handled between).
NEXT_WAIT_S = 0.25
#: Events shown at once at most, and how long to wait for more before showing them.
BATCH = 500
DRAIN_WAIT_S = 0.001
#: Plain and --json tail: a daemon heard of neither by event nor heartbeat for this long
#: gets a line on stderr (five heartbeats at the default heartbeat_s).
SILENT_NOTE_S = 5.0
#: Events after which the header asks for a fresh status at once.
POKE_TYPES = frozenset({"emergency_state_changed", "daemon_started", "circuit_opened",
                        "circuit_closed", "circuit_half_open"})


def register(sub: Any) -> None:
    tail: argparse.ArgumentParser = sub.add_parser(
        "tail", help="follow the live event stream (Ctrl-C stops)",
        description="Follow the daemon's events as they happen, one line each, coloured by "
                    "type, under a status header when stdout is a terminal. --since SEQ "
                    "replays the journal from SEQ first, then follows live with no gap. "
                    "Keeps going across a daemon restart (not on a terminal: a line on "
                    "stderr when the daemon has been silent for 5 s, one when it is back). "
                    "Runs until Ctrl-C (exit 0); "
                    "exit 2 for a --type no event has, 3 when the daemon is unreachable at "
                    "start.",
        epilog="examples:\n  tradeloom tail\n"
               "  tradeloom tail --workflow arb_btc --type node_failed --type "
               "execution_failed\n  tradeloom tail --since 1 --json > events.jsonl",
        formatter_class=ExampleFormatter)
    tail.add_argument("--workflow", type=_workflow_id, metavar="ID",
                      help="only this workflow's events")
    # `--type A B` and `--type A --type B` both (the CLI reference writes `[--type T ...]`)
    tail.add_argument("--type", action="extend", nargs="+", default=[], metavar="T",
                      dest="types", help="only events of these types (one or more; "
                                         "repeatable), e.g. node_failed")
    tail.add_argument("--since", type=_seq, metavar="SEQ",
                      help="replay from this seq (1: the oldest kept), then follow")
    tail.add_argument("--json", action="store_true",
                      help="one JSON object per event and line; no header, no colour")
    add_client_options(tail)
    # Ctrl-C is how a tail ends, at any moment (while it connects too): exit 0.
    tail.set_defaults(handler=client_command(cmd_tail), ctrl_c_ends_it=True)


def _workflow_id(text: str) -> str:
    """A workflow id as `Workflow` takes it: an odd one could match no event, and one
    over 1 KiB was "unexpected ValueError" (the stream refuses such a subscription)."""
    if not ID_PATTERN.fullmatch(text):
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise argparse.ArgumentTypeError(
            f"{shown!r} is not a workflow id ([A-Za-z0-9_.-], 1 to 128)")
    return text


def _seq(text: str) -> int:
    return int_in_range(text, 1, None, what="a seq (an integer >= 1)", bounds="a seq is >= 1")


def cmd_tail(args: argparse.Namespace) -> int:
    from actors.event_types import SEQUENCED_TYPES
    from transport.subscriber import Subscriber

    # An unknown type, or one never sequenced (heartbeat, gap: tail does not print them),
    # would match nothing: a tail that waits for ever, silent.
    unknown = sorted(set(args.types) - SEQUENCED_TYPES)
    if unknown:
        fail(f"unknown event type {', '.join(map(repr, unknown))} (it would match nothing); "
             "known: "
             f"{', '.join(sorted(SEQUENCED_TYPES))}")
        return EXIT_USAGE
    conn = connection(args)
    with conn.control_client() as control:
        first_status = control.status()  # unreachable: exit 3 now, not a silent wait
    workflows = first_status.get("workflows")
    if args.workflow and isinstance(workflows, list) and args.workflow not in workflows:
        print(f"tradeloom tail: no workflow {args.workflow!r} is registered now (registered: "
              f"{', '.join(map(str, workflows)) or 'none'}); waiting for its events",
              file=sys.stderr, flush=True)
    last_seq = first_status.get("last_seq")
    if args.since is not None and isinstance(last_seq, int) and args.since > last_seq + 1:
        # Not an error (the events will come), but after a journal reset it looks like a hang.
        print(f"tradeloom tail: waiting for seq {args.since}: the daemon is at seq "
              f"{last_seq}", file=sys.stderr, flush=True)
    topics = (f"workflow/{args.workflow}/",) if args.workflow else ("",)
    wanted = frozenset(args.types)
    with _stop_on_sigterm(), Subscriber(conn.events, conn.control, topics=topics,
                                        since_seq=args.since, keys=conn.keys,
                                        timeout=conn.timeout) as stream:
        try:
            stream.wait_live(conn.timeout)
            if args.json:
                _follow_json(stream, wanted, first_status)
            else:
                _follow_for_people(stream, wanted, conn, first_status)
        except BrokenPipeError:  # `tradeloom tail | head`: the reader left
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
    return EXIT_OK  # pragma: no cover - _follow only ends by an exception


class OutageNotes:
    """For tail's plain and `--json` outputs (a terminal has its header): one line on
    stderr when the daemon has gone quiet (no heartbeat, no event for SILENT_NOTE_S, or a
    replay with no answer), one when it is heard again. Lines piped to a log said nothing
    of an outage, however long."""

    def __init__(self, stream: Subscriber, clock: Callable[[], float] = time.monotonic, *,
                 heartbeat_s: object = None, who: str = "tradeloom tail",
                 waiting: str = "waiting for it") -> None:
        self._stream = stream
        self._clock = clock
        self._heard = (stream.heartbeats, clock())
        #: The last gap between heartbeats (or an event and a heartbeat): a daemon with a
        #: long `heartbeat_s` is not called silent between two of them. Until one is seen,
        #: the period `status` gave (its `heartbeat_s`), if it did.
        #: (Only a period a daemon could have: a reply's inf would mean never silent.)
        low, high = HEARTBEAT_S_RANGE
        self._beat_gap = (float(heartbeat_s) if isinstance(heartbeat_s, int | float)
                          and not isinstance(heartbeat_s, bool) and low <= heartbeat_s <= high
                          else 0.0)
        self._who = who
        self._waiting = waiting
        self.silent_since: float | None = None

    def _heard_now(self, now: float) -> None:
        self._heard = (self._stream.heartbeats, now)
        if self.silent_since is not None:
            print(f"{self._who}: the daemon answers again (after "
                  f"{now - self.silent_since:.0f} s)", file=sys.stderr, flush=True)
            self.silent_since = None

    def check(self, *, unreachable: bool = False, read: bool = False) -> None:
        """After a wait: `read`, events came in it; `unreachable`, a replay got no answer."""
        beats, at = self._heard
        now = self._clock()
        if self._stream.heartbeats != beats:
            if self.silent_since is None:  # (an outage's length is no heartbeat period)
                self._beat_gap = now - at
            self._heard_now(now)
            return
        if read:  # events: the daemon is there
            self._heard_now(now)
            return
        quiet_for = max(SILENT_NOTE_S, 3 * self._beat_gap)
        if self.silent_since is None and (unreachable or now - at >= quiet_for):
            self.silent_since = at
            print(f"{self._who}: the daemon does not answer (nothing from it for "
                  f"{now - at:.0f} s); {self._waiting}", file=sys.stderr, flush=True)


def _follow(stream: Subscriber, wanted: frozenset[str],
            show: Callable[[list[dict[str, Any]]], None],
            notes: OutageNotes | None = None) -> None:
    """Hand the wanted events to `show` in batches (what has arrived, up to BATCH read: one
    write or one screen update per batch keeps up with thousands of events a second), for
    ever. A replay that gets no answer (the daemon is restarting) is tried again by the
    subscriber's next call."""
    from transport.errors import DaemonUnreachable

    while True:
        batch: list[dict[str, Any]] = []
        wait = NEXT_WAIT_S
        # BATCH events read, wanted or not: counting only the wanted ones, a rare --type in
        # a stream that never pauses (a long replay) was held until the stream paused.
        for read in range(BATCH):
            try:
                event = stream.next(wait)
            except DaemonUnreachable:
                if notes is not None:
                    notes.check(unreachable=True)
                break
            if event is None:
                if notes is not None:
                    notes.check(read=read > 0)
                break
            wait = DRAIN_WAIT_S
            if not wanted or event.get("type") in wanted:
                batch.append(event)
        if batch:
            show(batch)
        elif _reader_gone():
            raise BrokenPipeError("stdout's reader has left")


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (its write end polls POLLERR),
    or a terminal that hung up. Only a write would find out otherwise, and with no event
    to write `tradeloom tail | head -1` would wait for the next event, for ever when the
    daemon is idle."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # None (no fd 1 at start), no descriptor
        return False
    poller = select.poll()
    poller.register(fd, 0)  # no events asked for: only POLLERR, POLLHUP, POLLNVAL come back
    return any(mask & (select.POLLERR | select.POLLHUP) for _fd, mask in poller.poll(0))


class _WholeWrites:
    """Ctrl-C or SIGTERM while a batch of lines is being written lets that write end
    first, then stops `tail`: a reader of `--json` never gets half an object as the last
    line. A second one during the same write stops it at once (a reader that never reads
    again would hold the first for ever). Python retries a write a signal interrupted
    when the handler returns (PEP 475), so nothing of the batch is lost either."""

    def __init__(self) -> None:
        self.writing = False
        self.stop_after = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.writing and not self.stop_after:
            self.stop_after = True
            return
        raise KeyboardInterrupt

    def write(self, text: str) -> None:
        out = sys.stdout
        self.writing = True
        try:
            # To the descriptor, in a loop: a BufferedWriter interrupted by a signal
            # drops what a partial write left (seen with CPython 3.11 on a full pipe).
            out.flush()
            try:
                fd = out.fileno()
            except (AttributeError, OSError, ValueError):  # not a file (a test's capture)
                fd = -1
            if fd < 0:
                out.write(text)
                out.flush()
            else:
                data = memoryview(text.encode(out.encoding or "utf-8",
                                              out.errors or "strict"))
                while data:
                    data = data[os.write(fd, data):]
        finally:
            self.writing = False
        if self.stop_after:
            raise KeyboardInterrupt


_WRITES = _WholeWrites()


def _write_lines(lines: Iterator[str]) -> None:
    _WRITES.write("".join(f"{line}\n" for line in lines))


def _follow_json(stream: Subscriber, wanted: frozenset[str],
                 first_status: dict[str, Any]) -> None:
    _follow(stream, wanted, lambda batch: _write_lines(
        json_text(event) for event in batch),
        OutageNotes(stream, heartbeat_s=first_status.get("heartbeat_s")))


def _follow_for_people(stream: Subscriber, wanted: frozenset[str], conn: Connection,
                       first_status: dict[str, Any]) -> None:
    from rich.console import Console, Group

    from transport.tail_view import StatusHeader, event_line

    if not sys.stdout.isatty():  # a pipe or a file: plain lines, no header, no colour
        _follow(stream, wanted, lambda batch: _write_lines(
            event_line(event).plain for event in batch),
            OutageNotes(stream, heartbeat_s=first_status.get("heartbeat_s")))
        return
    from rich.live import Live

    console = Console(highlight=False)
    header = StatusHeader()
    header.update(first_status)
    poller = StatusPoller(conn, header)
    poller.start()
    try:
        with Live(header, console=console, refresh_per_second=4,
                  redirect_stdout=False, redirect_stderr=False) as live:
            def styled(batch: list[dict[str, Any]]) -> None:
                for event in batch:
                    header.on_event(event)
                if any(e.get("type") in POKE_TYPES for e in batch):
                    poller.poke()
                live.console.print(Group(*(event_line(event) for event in batch)))

            _follow(stream, wanted, styled)
    finally:
        poller.stop()


class StatusPoller(threading.Thread):
    """Asks the daemon for `status` every STATUS_EVERY_S (or at once when poked) and hands
    the reply to the header; a daemon that does not answer marks the header unreachable."""

    def __init__(self, conn: Connection, header: StatusHeader) -> None:
        super().__init__(name="tradeloom-tail-status", daemon=True)
        self._conn = conn
        self._header = header
        self._wake = threading.Event()
        self._stopped = threading.Event()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def run(self) -> None:
        from actors.errors import TradeloomError
        from transport.control_client import ControlClient

        client = ControlClient(self._conn.control, keys=self._conn.keys,
                               timeout=min(self._conn.timeout, 2.0))
        with client:
            while not self._stopped.is_set():
                self._wake.wait(STATUS_EVERY_S)
                self._wake.clear()
                if self._stopped.is_set():
                    break
                try:
                    self._header.update(client.status())
                except TradeloomError:  # no answer, or an error reply: show it as stale
                    self._header.unreachable()


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends `tail` like Ctrl-C: exit 0, no traceback; either waits for a write
    under way to end (`_WholeWrites`)."""
    _WRITES.stop_after = False
    previous = {sig: signal.signal(sig, _WRITES.on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
