"""A subscriber in its own process, on the client library's `Subscriber`, for the daemon
end-to-end tests (tests/daemon_fixture.py drives it).

    python tests/e2e_subscriber.py EVENTS CONTROL [--since SEQ] [--rcvhwm N] [--paused]
        [--topic PREFIX ...] [--secret-key FILE --server-key FILE] [--echo] [--deadline S]

Prints `live {"last_seq", "epoch"}` once the first heartbeat is in, then follows the stream.
Commands on stdin, one per line:

- `notify N`: print `reached N` as soon as every seq up to N has been delivered;
- `resume`: start reading (with `--paused` it waits for this before reading anything, so
  the daemon's send queue for it fills up: a slow subscriber);
- `terminals N`: print `terminals N` once N executions' terminal events have been
  delivered: each is then committed, so the daemon's `status().last_seq` covers them;
- `until N`: finish once every seq up to N has been delivered;
- `stop` (or end of input): finish now.

On finishing it prints `summary {...}`: what it delivered (first/last seq, count, whether
seqs were contiguous, each execution's terminal status, events seen after their
execution's terminal event), the Subscriber's counters (gaps filled, replayed, duplicates,
lost, restarts, heartbeats, malformed), and the heartbeat epochs seen. `--echo` also prints
`event {"seq", "type", "execution_id"}` per event. With `--deadline S` it finishes by itself
after S seconds.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any

from transport.client import ClientKeys, Subscriber

TERMINAL_TYPES = frozenset({"execution_completed", "execution_failed", "execution_halted",
                            "execution_cancelled"})


class Delivered:
    """What the subscriber handed us, checked as it comes."""

    def __init__(self) -> None:
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.count = 0
        self.breaks: list[tuple[int, int]] = []  # (previous seq, seq) where seq != previous + 1
        self.terminals: dict[str, str] = {}
        self.after_terminal = 0
        self.types: dict[str, int] = {}
        self.interrupted: list[str] = []

    def add(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if not isinstance(seq, int):
            return  # a notice outside the seq order
        if self.last_seq is not None and seq != self.last_seq + 1:
            self.breaks.append((self.last_seq, seq))
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
        self.count += 1
        kind = str(event.get("type"))
        self.types[kind] = self.types.get(kind, 0) + 1
        execution_id = event.get("execution_id")
        if isinstance(execution_id, str):
            if execution_id in self.terminals:
                self.after_terminal += 1
            if kind in TERMINAL_TYPES:
                self.terminals[execution_id] = str(event.get("status"))
                if event.get("error_type") == "Interrupted":
                    self.interrupted.append(execution_id)


def read_commands(commands: queue.Queue[str]) -> None:
    for line in sys.stdin:
        commands.put(line.strip())
    commands.put("stop")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("control")
    parser.add_argument("--since", type=int)
    parser.add_argument("--rcvhwm", type=int, default=100_000)
    parser.add_argument("--paused", action="store_true")
    parser.add_argument("--topic", action="append", default=[])
    parser.add_argument("--secret-key")
    parser.add_argument("--server-key")
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    keys = (ClientKeys(args.secret_key, args.server_key)
            if args.secret_key and args.server_key else None)
    commands: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    deadline = time.monotonic() + args.deadline
    delivered = Delivered()
    epochs: list[Any] = []
    notify: list[int] = []
    counted: list[tuple[str, int]] = []
    until: int | None = None
    paused = args.paused
    with Subscriber(args.events, args.control, topics=tuple(args.topic) or ("",),
                    since_seq=args.since, keys=keys, rcvhwm=args.rcvhwm,
                    timeout=5.0) as sub:
        sub.wait_live(30.0)
        assert sub.last_heartbeat is not None
        epochs.append(sub.epoch)
        print("live " + json.dumps({"last_seq": sub.last_heartbeat["last_seq"],
                                    "epoch": sub.epoch}), flush=True)
        while time.monotonic() < deadline:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                command = ""
            verb, _, value = command.partition(" ")
            if verb == "stop":
                break
            if verb == "resume":
                paused = False
            elif verb == "notify":
                notify.append(int(value))
            elif verb == "terminals":
                counted.append((verb, int(value)))
            elif verb == "until":
                until = int(value)
            # What was handed to us (the Subscriber's own last_seq runs ahead of it while
            # replayed events wait in its ready queue).
            done = delivered.last_seq if delivered.last_seq is not None else -1
            for n in [n for n in notify if done >= n]:
                notify.remove(n)
                print(f"reached {n}", flush=True)
            sizes = {"terminals": len(delivered.terminals)}
            for verb_n in [c for c in counted if sizes[c[0]] >= c[1]]:
                counted.remove(verb_n)
                print(f"{verb_n[0]} {verb_n[1]}", flush=True)
            if until is not None and done >= until:
                break
            if paused:
                time.sleep(0.01)  # a subscriber that reads nothing (the test's slow one)
                continue
            event = sub.next(timeout=0.02)
            if sub.epoch not in epochs:
                epochs.append(sub.epoch)
            if event is None:
                continue
            delivered.add(event)
            if args.echo:
                print("event " + json.dumps({"seq": event.get("seq"), "type": event.get("type"),
                                             "execution_id": event.get("execution_id")}),
                      flush=True)
        summary = {
            "first_seq": delivered.first_seq, "last_seq": delivered.last_seq,
            "count": delivered.count, "contiguous": not delivered.breaks,
            "breaks": delivered.breaks[:20], "terminals": delivered.terminals,
            "after_terminal": delivered.after_terminal, "types": delivered.types,
            "interrupted": delivered.interrupted, "epochs": epochs,
            "subscriber_last_seq": sub.last_seq, "gaps_filled": sub.gaps_filled,
            "replayed": sub.replayed, "duplicates": sub.duplicates, "lost": sub.lost,
            "restarts": sub.restarts, "heartbeats": sub.heartbeats,
            "malformed": sub.malformed, "timed_out": time.monotonic() >= deadline}
    print("summary " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
