"""`tradeloom submit`: one submit (`send_submit`); with `--wait`, then follow the event stream
to the execution's end.

`--timeout` bounds reaching the daemon: a `ping` first. The submit's reply is then waited for
as long as the daemon may hold it for its record's commit (a slow disk), so a reply that is
only late is not reported as an unreachable daemon, and the submit is not repeated by hand.

The subscription is live (its first heartbeat is in) before the submit is sent, so every
event of the execution comes after the point the subscriber starts from; the `Subscriber`
replays whatever the stream drops, and carries on across a daemon restart (an execution the
daemon died under ends `interrupted`, and that terminal event is replayed too). `--timeout`
bounds reaching the daemon (the first heartbeat, the submit); the wait for the end is bounded
only by `--wait-timeout`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from actors.cli_entry import EXIT_INTERRUPTED  # (Ctrl-C while waiting: the execution goes on)
from transport.cli_options import EXIT_FAILED, EXIT_OK, Connection, fail, print_json
from transport.cli_output import compact, duration, printable
from transport.ops import SUBMIT_RECORD_TIMEOUT_S

if TYPE_CHECKING:
    from transport.control_client import ControlClient
    from transport.subscriber import Subscriber

TERMINAL_TYPES = frozenset({"execution_completed", "execution_failed", "execution_halted",
                            "execution_cancelled"})
#: How often the wait loop looks at its deadline while no event comes.
POLL_S = 0.5
#: How long a submit's reply is waited for once the daemon answered a ping: the longest it
#: holds a reply for the record's commit, and some slack for the network.
SUBMIT_REPLY_S = SUBMIT_RECORD_TIMEOUT_S + 2.0


def send_submit(control: ControlClient, conn: Connection, args: argparse.Namespace,
                inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Ping within `--timeout`, then submit and wait for its reply (see the docstring)."""
    from transport.errors import DaemonUnreachable

    try:
        control.ping()
    except DaemonUnreachable as exc:  # (safe to run again: say so)
        raise DaemonUnreachable(f"{exc}; the submit was not sent") from None
    return control.submit(args.workflow, inputs, bot_id=args.bot_id,
                          strategy_id=args.strategy_id, priority=args.priority,
                          timeout=max(conn.timeout, SUBMIT_REPLY_S))


def submit_and_wait(conn: Connection, args: argparse.Namespace,
                    inputs: Mapping[str, Any]) -> int:
    from transport.subscriber import Subscriber

    execution_id: str | None = None
    with Subscriber(conn.events, conn.control, topics=(f"workflow/{args.workflow}/",),
                    keys=conn.keys, timeout=conn.timeout) as stream:
        try:
            stream.wait_live(conn.timeout)
            with conn.control_client() as control:
                execution_id = str(send_submit(control, conn, args, inputs)["execution_id"])
                if not args.json:
                    print(execution_id, flush=True)
                heartbeat_s = _heartbeat_s(control)
            return _wait(stream, execution_id, args, heartbeat_s)
        except KeyboardInterrupt:  # Ctrl-C: never exit 0 without the result
            fail(f"stopped waiting for {execution_id} (it goes on: `tradeloom show "
                 f"{execution_id}` tells how it ends)" if execution_id is not None else
                 "interrupted before the daemon answered the submit (`tradeloom executions` "
                 "tells whether it was accepted)")
            return EXIT_INTERRUPTED


def _heartbeat_s(control: ControlClient) -> object:
    """The stream's heartbeat period from `status` (None if it does not say)."""
    from actors.errors import TradeloomError

    try:
        return control.status().get("heartbeat_s")
    except TradeloomError:  # the submit is in: waiting for its end matters more
        return None


def _wait(stream: Subscriber, execution_id: str, args: argparse.Namespace,
          heartbeat_s: object = None) -> int:
    from transport.errors import DaemonUnreachable
    from transport.tail import OutageNotes

    # A daemon gone for good would look like a slow execution: say so on stderr (once,
    # and again when it is back), and go on waiting, as the execution may still end.
    notes = OutageNotes(stream, heartbeat_s=heartbeat_s, who="tradeloom submit",
                        waiting=f"still waiting for {execution_id} (Ctrl-C stops waiting)")
    deadline = None if args.wait_timeout is None else time.monotonic() + args.wait_timeout
    while True:
        remaining = POLL_S if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            fail(f"{execution_id} has not ended within {args.wait_timeout:g} s (it goes "
                 f"on: `tradeloom show {execution_id}` tells how it ends)")
            return EXIT_FAILED
        try:
            event = stream.next(min(remaining, POLL_S))
        except DaemonUnreachable:
            notes.check(unreachable=True)
            continue  # a replay got no answer (a restart?): the subscriber tries again
        notes.check(read=event is not None)
        if (event is not None and event.get("execution_id") == execution_id
                and event.get("type") in TERMINAL_TYPES):
            return report(event, as_json=args.json)


def report(event: Mapping[str, Any], *, as_json: bool) -> int:
    """Print an execution's terminal event as its result; exit 0 only if it completed."""
    status = event.get("status")
    summary = {"execution_id": event.get("execution_id"), "status": status,
               "duration_ms": event.get("duration_ms"), "results": event.get("results") or {}}
    if status != "completed":
        summary.update(error=event.get("error"), error_type=event.get("error_type"))
    if as_json:
        print_json(summary)
    else:
        took = duration(event.get("duration_ms"))
        if status == "completed":
            print(f"completed in {took}", flush=True)
        else:
            print(printable(f"{status} after {took}: {event.get('error_type')}: "
                            f"{event.get('error')}"), flush=True)
        results = summary["results"]
        if isinstance(results, Mapping):
            for node_id, output in results.items():
                print(f"  {node_id}: {compact(output)}", flush=True)
        else:  # cut whole by the journal (max_event_bytes): a note of its size
            print(printable(f"  results: {results}"), flush=True)
    return EXIT_OK if status == "completed" else EXIT_FAILED
