"""`tradeloom webhooks {failed,retry,delete,log}`: the dead letters and delivery log of
the daemon's `[[webhooks]]` endpoints, through the control ops `webhooks_failed`,
`webhooks_retry`, `webhooks_delete` and `webhooks_log` (docs/protocol.md).

Exit 0; 1 when the daemon has no such webhook (or none configured) or no such dead
letter; 2 for `delete` with neither --name nor --id; 3 when the daemon is unreachable.
"""

from __future__ import annotations

import argparse
from typing import Any

from transport.cli_options import (
    EXIT_OK,
    EXIT_USAGE,
    ExampleFormatter,
    add_client_options,
    client_command,
    connection,
    fail,
    print_json,
)
from transport.cli_output import maps_in, printable, text


def register(sub: Any) -> None:
    """Add `webhooks` and its subcommands to the `tradeloom` subparsers `sub`."""
    group: argparse.ArgumentParser = sub.add_parser(
        "webhooks", help="outbound webhooks: dead letters, retry, delivery log",
        description="Inspect the daemon's [[webhooks]] endpoints (docs/operations.md, "
                    "Webhooks).", formatter_class=ExampleFormatter,
        epilog="example:\n  tradeloom webhooks failed --name ops-slack")
    commands = group.add_subparsers(dest="webhooks_command", metavar="COMMAND", required=True)
    failed = commands.add_parser(
        "failed", formatter_class=ExampleFormatter,
        epilog="example:\n  tradeloom webhooks failed --name ops-slack",
        help="list dead letters (events an endpoint gave up on)",
        description="List dead letters, oldest first: id, endpoint, seq, type, attempts, "
                    "HTTP status, error; then how many older ones each endpoint deleted "
                    "to keep max_dead_letters. Exit 0; 1 unknown webhook; 3 unreachable.")
    retry = commands.add_parser(
        "retry", formatter_class=ExampleFormatter,
        epilog="example:\n  tradeloom webhooks retry --name ops-slack --id 12",
        help="send dead letters again",
        description="Re-queue dead letters (all, one endpoint's with --name, or --id N "
                    "...); each endpoint sends them again. Exit 0; 1 unknown webhook or "
                    "id; 3 unreachable.")
    retry.add_argument("--id", dest="ids", type=int, action="append", default=[],
                       metavar="N", help="a dead letter's id (repeatable); default: all")
    delete = commands.add_parser(
        "delete", formatter_class=ExampleFormatter,
        epilog="example:\n  tradeloom webhooks delete --name old-slack",
        help="delete dead letters",
        description="Delete dead letters: one endpoint's with --name (one removed from "
                    "the config included: nothing can send its letters), or --id N .... "
                    "Exit 0; 1 unknown webhook or id; 2 neither --name nor --id; 3 "
                    "unreachable.")
    delete.add_argument("--id", dest="ids", type=int, action="append", default=[],
                        metavar="N", help="a dead letter's id (repeatable)")
    log = commands.add_parser(
        "log", formatter_class=ExampleFormatter,
        epilog="example:\n  tradeloom webhooks log --name ops-slack --limit 20",
        help="each endpoint's state and its recent deliveries",
        description="Each endpoint's cursor and breaker, then its deliveries, newest "
                    "first: outcome, attempts, HTTP status, latency. Exit 0; 1 unknown "
                    "webhook; 3 unreachable.")
    for parser in (failed, retry, delete, log):
        parser.add_argument("--name", metavar="WEBHOOK", help="only this endpoint")
        parser.add_argument("--json", action="store_true", help="print the reply as JSON")
        add_client_options(parser)
    for parser in (failed, log):
        parser.add_argument("--limit", type=int, default=100, metavar="N",
                            help="at most N rows (default 100)")
    failed.set_defaults(handler=client_command(cmd_failed))
    retry.set_defaults(handler=client_command(cmd_retry))
    delete.set_defaults(handler=client_command(cmd_delete))
    log.set_defaults(handler=client_command(cmd_log))


def cmd_failed(args: argparse.Namespace) -> int:
    with connection(args).control_client() as control:
        rows = control.webhooks_failed(args.name, args.limit)
        if args.json:
            print_json(rows)
            return EXIT_OK
        endpoints = maps_in(control.webhooks_log(args.name, 1).get("endpoints"))
    if not rows:
        print("no dead letters", flush=True)
    for r in rows:
        # The error text comes from the endpoint's side (its HTTP reply): shown, not obeyed.
        print(printable(f"#{text(r.get('id'))} {text(r.get('endpoint'))} seq "
                        f"{text(r.get('seq'))} {text(r.get('event_type'))}: "
                        f"{text(r.get('attempts'))} attempt(s), {text(r.get('error'))} "
                        f"({text(r.get('failed_at'))})"), flush=True)
    for e in endpoints:  # the list above is not all there was
        if e.get("dropped") and args.name in (None, e.get("name")):
            print(printable(f"{text(e.get('name'))}: {text(e.get('dropped'))} older dead "
                            f"letter(s) deleted to keep max_dead_letters = "
                            f"{text(e.get('max_dead_letters'))}"), flush=True)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    with connection(args).control_client() as control:
        reply = control.webhooks_retry(args.name, args.ids or None)
    if args.json:
        print_json(reply)
    else:
        print(printable(f"re-queued {text(reply.get('count'))} dead letter(s)"), flush=True)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    if args.name is None and not args.ids:  # every endpoint's letters go only by name
        fail("webhooks delete: give --name WEBHOOK or --id N (see --help)")
        return EXIT_USAGE
    with connection(args).control_client() as control:
        reply = control.webhooks_delete(args.name, args.ids or None)
    if args.json:
        print_json(reply)
    else:
        print(printable(f"deleted {text(reply.get('count'))} dead letter(s)"), flush=True)
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    with connection(args).control_client() as control:
        reply = control.webhooks_log(args.name, args.limit)
    if args.json:
        print_json(reply)
        return EXIT_OK
    for e in maps_in(reply.get("endpoints")):
        dropped = (f", {text(e.get('dropped'))} dropped (max_dead_letters = "
                   f"{text(e.get('max_dead_letters'))})" if e.get("dropped") else "")
        print(printable(f"{text(e.get('name'))} {text(e.get('url'))}: next seq "
                        f"{text(e.get('next_seq'))}, breaker {text(e.get('breaker'))}, "
                        f"{text(e.get('delivered'))} delivered, {text(e.get('dead'))} dead"
                        f"{dropped}"), flush=True)
    for r in maps_in(reply.get("deliveries")):
        first, last = r.get("first_seq"), r.get("last_seq")
        seqs = text(first) if first == last else f"{text(first)}-{text(last)}"
        latency = r.get("latency_ms")
        shown = f"{latency:.0f} ms" if isinstance(latency, int | float) else "-"
        error = r.get("error")
        print(printable(
            f"{text(r.get('at'))} {text(r.get('endpoint'))} seq {seqs} "
            f"{text(r.get('event_type'))}: {text(r.get('outcome'))}, "
            f"{text(r.get('attempts'))} attempt(s), HTTP {r.get('http_status') or '-'}, "
            f"{shown}" + (f", {error}" if error and r.get("outcome") != "delivered" else "")),
              flush=True)
    return EXIT_OK
