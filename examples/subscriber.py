"""Follow the daemon's event stream from another process, with no gap: a late join replays
what came before, a daemon restart is ridden out, and a jump in `seq` is filled from the
journal through the control socket (`transport.client.Subscriber` does all three).

    make run                                            # in one terminal
    .venv/bin/python examples/subscriber.py --since 1   # in another: replay from seq 1, then live
    .venv/bin/python examples/subscriber.py --workflow arb_btc --count 20

Prints one line per event (`seq`, time, type, workflow/execution, detail) and, on Ctrl-C or
after `--count` events, a summary: how many events, whether their seqs were consecutive, how
many were replayed, and how many daemon restarts it rode out. Save the last seq you handled
and pass `--since <it + 1>` to pick up exactly where you left off.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, sys.path[0] is examples/, where this directory's modules would shadow
# others (concurrent.py the standard library's concurrent package): put the repo root there.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import contextlib
import json
from typing import Any

from actors.logs import configure
from transport.client import DaemonUnreachable, Subscriber

#: How long one wait for the next event lasts; between waits the script notices Ctrl-C.
POLL_S = 0.5


def describe(event: dict[str, Any]) -> str:
    """One readable line for an event."""
    kind = event.get("type", "?")
    seq = event.get("seq", "-")
    clock = str(event.get("timestamp", ""))[11:23]
    where = ""
    if "execution_id" in event:
        where = f"{event.get('workflow_id')}/{str(event['execution_id']).rsplit('_', 1)[-1]}"
    if kind == "emergency_state_changed":
        detail = f"{event.get('previous_state')} -> {event.get('state')}: {event.get('reason')}"
    elif kind.startswith("node_"):
        detail = str(event.get("node_id", ""))
        if kind == "node_skipped":
            detail += f" ({event.get('reason')})"
    elif kind.startswith("execution_") and kind != "execution_started":
        detail = f"{event.get('status')} in {event.get('duration_ms', 0):.1f} ms"
    elif kind.startswith("risk_limit_"):
        detail = f"{event.get('limit')} {event.get('value')} of {event.get('threshold')}"
    elif kind.startswith("daemon_"):
        detail = f"version {event.get('version')} pid {event.get('pid')}"
    else:
        detail = ""
    return f"{seq:>7}  {clock}  {kind:<24} {where:<28} {detail}".rstrip()


class Tally:
    """What was delivered: the count, the seq range, and whether nothing was missed: seqs
    consecutive or, following one workflow (`--workflow`), its own `wseq`s (other
    workflows' events take the seqs in between)."""

    def __init__(self, order_key: str) -> None:
        self.order_key = order_key
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self._previous: int | None = None
        self.breaks: list[tuple[int, int]] = []

    def add(self, event: dict[str, Any]) -> None:
        seq, number = event.get("seq"), event.get(self.order_key)
        if not isinstance(seq, int) or not isinstance(number, int):
            return  # a seq-less notice: no place in the order
        if self._previous is not None and number != self._previous + 1:
            self.breaks.append((self._previous, number))
        self.first = seq if self.first is None else self.first
        self.last, self._previous = seq, number
        self.count += 1


def note(args: argparse.Namespace, text: str) -> None:
    """A line about the stream, not an event: on stderr with --json (stdout stays one JSON
    object per line, for `jq`)."""
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def follow(args: argparse.Namespace) -> Tally:
    topics = (f"workflow/{args.workflow}/",) if args.workflow else ("",)
    tally = Tally("wseq" if args.workflow else "seq")
    with Subscriber(args.events, args.control, topics=topics, since_seq=args.since,
                    timeout=args.timeout) as sub:
        sub.wait_live(timeout=args.timeout)
        start = f"from seq {args.since} (replayed first)" if args.since else "live"
        note(args, f"following {args.events} ({', '.join(repr(t) for t in topics)}) {start}")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop here and sum up
            receive(sub, tally, args)
        summary(tally, sub, args)
    return tally


def receive(sub: Subscriber, tally: Tally, args: argparse.Namespace) -> None:
    restarts, unreachable = 0, False
    while args.count is None or tally.count < args.count:
        try:
            event = sub.next(POLL_S)
        except DaemonUnreachable:
            if not unreachable:  # the daemon is away: keep asking, say so once
                note(args, "--- the daemon does not answer; waiting for it")
            unreachable = True
            continue
        unreachable = False
        if sub.restarts != restarts:
            restarts = sub.restarts
            note(args, f"--- the daemon restarted (epoch {sub.epoch}): catching up from the "
                       "journal")
        if event is None:
            continue
        tally.add(event)
        if args.json:
            print(json.dumps(event, default=str), flush=True)
        else:
            print(describe(event), flush=True)


def summary(tally: Tally, sub: Subscriber, args: argparse.Namespace) -> None:
    contiguous = "yes" if not tally.breaks else f"no, breaks {tally.breaks}"
    note(args, f"summary: {tally.count} events, seqs {tally.first}..{tally.last}, "
               f"consecutive {tally.order_key}s: {contiguous}; replayed {sub.replayed}, "
               f"gaps filled {sub.gaps_filled}, daemon restarts {sub.restarts}, "
               f"lost {sub.lost}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="tcp://127.0.0.1:7450", help="the event stream")
    parser.add_argument("--control", default="tcp://127.0.0.1:7451",
                        help="the control socket (replays)")
    parser.add_argument("--since", type=int, default=None,
                        help="first seq wanted: replay from the journal, then live")
    parser.add_argument("--workflow", help="only this workflow's events")
    parser.add_argument("--count", type=int, default=None, help="stop after N events")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="how long to wait for the daemon at start, and per replay")
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    args = parser.parse_args(argv)
    configure(fmt="console", level="error")
    try:
        follow(args)
    except DaemonUnreachable as exc:
        print(f"subscriber: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
