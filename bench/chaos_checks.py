"""The chaos probe's invariants (bench/chaos.py), read back through the daemon's own control
ops (`replay`, `executions`, `execution`, `intents`, `status`), and its outside subscriber.

`JournalCheck.run` returns one line per broken invariant; an empty list means all held.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transport.client import ControlClient, Subscriber
from transport.errors import ControlError, NotFoundError, TransportError

TERMINAL = frozenset({"execution_completed", "execution_failed", "execution_halted",
                      "execution_cancelled"})
OPEN_STATUSES = frozenset({"queued", "running"})
PAGE = 5000


def read_journal(client: ControlClient) -> tuple[int, list[dict[str, Any]]]:
    """(first_seq, every committed event from seq 1), paged through `replay`."""
    events: list[dict[str, Any]] = []
    since, first_seq = 1, 1
    while True:
        page = client.replay(since, limit=PAGE)
        first_seq = int(page["first_seq"])
        events += page["events"]
        since = int(page["next_seq"])
        if since > int(page["last_seq"]) or not page["events"]:
            return first_seq, events


def execution_violations(events: Iterable[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """Order within each execution: started first, at most one terminal event and nothing
    after it. Also returns the ids with no terminal event yet (open)."""
    problems: list[str] = []
    by_execution: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if "execution_id" in event:
            by_execution.setdefault(str(event["execution_id"]), []).append(event)
    open_ids: set[str] = set()
    for execution_id, own in by_execution.items():
        kinds = [str(e["type"]) for e in own]
        if kinds[0] != "execution_started":
            problems.append(f"{execution_id}: first event {kinds[0]} (seq {own[0]['seq']})")
        ends = [i for i, kind in enumerate(kinds) if kind in TERMINAL]
        if not ends:
            open_ids.add(execution_id)
        elif len(ends) > 1:
            problems.append(f"{execution_id}: {len(ends)} terminal events, seqs "
                            f"{[own[i]['seq'] for i in ends]}")
        elif ends[0] != len(kinds) - 1:
            problems.append(f"{execution_id}: {kinds[ends[0] + 1]} (seq "
                            f"{own[ends[0] + 1]['seq']}) after its terminal event")
    return problems, open_ids


def recovery_violations(events: list[dict[str, Any]]) -> list[str]:
    """Each execution open when a daemon run died must be ended by the next run's recovery,
    which comes before that run's `daemon_started`; and an `interrupted` end comes only
    from a recovery (only other recovery events between it and the `daemon_started`)."""
    problems: list[str] = []
    open_now: dict[str, int] = {}
    first_start = True
    recovering: int | None = None  # the seq of an `interrupted` end, until daemon_started
    for event in events:
        kind = event["type"]
        interrupted = kind in TERMINAL and event.get("status") == "interrupted"
        if interrupted:
            recovering = int(event["seq"])
        elif recovering is not None and kind not in ("execution_started", "daemon_started"):
            problems.append(f"{kind} (seq {event['seq']}) between an interrupted end (seq "
                            f"{recovering}) and the next daemon_started")
            recovering = None
        if kind == "daemon_started":
            recovering = None
            if not first_start:
                for open_id, seq in open_now.items():
                    problems.append(f"{open_id} (started seq {seq}) still open when "
                                    f"a restart's daemon_started (seq {event['seq']}) came")
                open_now.clear()
            first_start = False
            continue
        execution_id = event.get("execution_id")
        if execution_id is None:
            continue
        if kind == "execution_started":
            open_now[str(execution_id)] = int(event["seq"])
        elif kind in TERMINAL:
            open_now.pop(str(execution_id), None)
    return problems


def side_file_keys(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


@dataclass
class Watcher:
    """An outside `Subscriber` in its own thread: connects, follows for a while,
    disconnects, reconnects replaying from its last seq + 1. Keeps what it saw by seq."""

    events_endpoint: str
    control_endpoint: str
    seed: int
    seen: dict[int, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    connects: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        last = 0
        while not self._stop.is_set():
            self.connects += 1
            stint = rng.uniform(0.5, 8.0)
            with Subscriber(self.events_endpoint, self.control_endpoint,
                            since_seq=last + 1, timeout=2.0) as sub:
                ends = threading.Event()
                timer = threading.Timer(stint, ends.set)
                timer.start()
                try:
                    while not ends.is_set() and not self._stop.is_set():
                        try:
                            event = sub.next(0.2)
                        except TransportError:  # the daemon is down: the next call retries
                            continue
                        if event is not None and isinstance(event.get("seq"), int):
                            last = self._take(event, last)
                finally:
                    timer.cancel()
            self._stop.wait(rng.uniform(0.0, 2.0))

    def _take(self, event: dict[str, Any], last: int) -> int:
        seq = int(event["seq"])
        if seq != last + 1:
            self.problems.append(f"subscriber: seq {seq} after {last} (a gap or a repeat)")
        if seq in self.seen and self.seen[seq] != event:
            self.problems.append(f"subscriber: seq {seq} seen twice with different payloads")
        self.seen[seq] = dict(event)
        return max(seq, last)


@dataclass
class JournalCheck:
    """What the probe was told, checked against the journal through the control socket."""

    side_file: Path
    submitted: list[str] = field(default_factory=list)
    confirmed: set[str] = field(default_factory=set)

    def run(self, client: ControlClient, watcher: Watcher, *,
            settled: bool) -> list[str]:
        """`settled`: nothing may be open (checked at the end, once halted and idle)."""
        problems: list[str] = []
        seen = dict(watcher.seen)  # before the journal is read: all of it was committed
        first_seq, events = read_journal(client)
        seqs = [int(e["seq"]) for e in events]
        if first_seq != 1 or seqs != list(range(1, len(seqs) + 1)):
            gaps = [b for a, b in itertools.pairwise(seqs) if b != a + 1][:5]
            problems.append(f"journal seqs not gapless from 1: first_seq {first_seq}, "
                            f"{len(seqs)} events, breaks before {gaps}")
        by_seq = {int(e["seq"]): e for e in events}
        for seq, payload in seen.items():
            if by_seq.get(seq) != payload:
                problems.append(f"seq {seq}: the subscriber saw {payload.get('type')}, the "
                                f"journal has {by_seq.get(seq, {}).get('type', 'nothing')}")
        order, open_ids = execution_violations(events)
        problems += order + recovery_violations(events)
        problems += self._submitted_exist(client)
        problems += self._open_ones(client, open_ids, len(seqs) + 1, settled=settled)
        problems += self._left_over(client, events)
        problems += self._actions(client)
        return problems

    def _submitted_exist(self, client: ControlClient) -> list[str]:
        problems: list[str] = []
        listed = {str(row["execution_id"]) for row in client.executions(limit=10_000)}
        for execution_id in self.submitted:
            if execution_id in self.confirmed or execution_id in listed:
                self.confirmed.add(execution_id)
                continue
            try:
                client.execution(execution_id)
                self.confirmed.add(execution_id)
            except NotFoundError:
                problems.append(f"submitted {execution_id} is not in the journal")
        return problems

    @staticmethod
    def _open_ones(client: ControlClient, open_ids: set[str], next_seq: int, *,
                   settled: bool) -> list[str]:
        """Those with no terminal event in the journal read must be open still (any, when
        `settled`) - or have ended since, their terminal event past `next_seq`."""
        ended: dict[str, str] = {}
        for execution_id in sorted(open_ids):
            try:
                status = str(client.execution(execution_id)["status"])
            except ControlError as exc:
                ended[execution_id] = f"execution op failed: {exc}"
                continue
            if settled or status not in OPEN_STATUSES:
                ended[execution_id] = status
        if ended and not settled:
            page = client.replay(next_seq, limit=10_000)
            for event in page["events"]:
                if event["type"] in TERMINAL:
                    ended.pop(str(event.get("execution_id")), None)
        return [f"{execution_id}: no terminal event, status {status}"
                for execution_id, status in ended.items()]

    @staticmethod
    def _left_over(client: ControlClient, events: list[dict[str, Any]]) -> list[str]:
        """No execution queued or running now may be from before the last daemon start."""
        starts = [e for e in events if e["type"] == "daemon_started"]
        if not starts:
            return []
        since, since_seq = str(starts[-1]["timestamp"]), int(starts[-1]["seq"])
        ended = {str(e["execution_id"]) for e in events if e["type"] in TERMINAL}
        started = {str(e["execution_id"]): int(e["seq"]) for e in events
                   if e["type"] == "execution_started"}
        problems: list[str] = []
        for status in OPEN_STATUSES:
            for row in client.executions(status=status, limit=10_000):
                execution_id = str(row["execution_id"])
                if execution_id in ended:
                    problems.append(f"{execution_id}: status {status} after its terminal "
                                    f"event")
                elif started.get(execution_id, since_seq + 1) < since_seq or (
                        str(row["submitted_at"]) < since):
                    problems.append(f"{execution_id}: still {status} from a daemon run "
                                    f"before the last start (seq {since_seq})")
        return problems

    def _actions(self, client: ControlClient) -> list[str]:
        problems: list[str] = []
        # The side file first: an action that runs after the `intents` query would look
        # like one that ran with no intent.
        ran = Counter(side_file_keys(self.side_file))
        intents = client.intents(unresolved=False)
        keys = Counter(str(i["idempotency_key"]) for i in intents)
        problems += [f"idempotency key {k} has {n} intents" for k, n in keys.items() if n > 1]
        problems += [f"action {k} ran {n} times" for k, n in ran.items() if n > 1]
        problems += [f"action {k} ran with no intent recorded" for k in ran if k not in keys]
        return problems
