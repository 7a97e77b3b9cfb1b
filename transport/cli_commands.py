"""The CLI's client commands: status, submit, halt, resume, alert, reduce-only,
executions, show, intents. Each talks to the daemon's control socket through
`transport.client`; `tail` is in `tail.py`, `submit --wait` in `cli_submit.py`.

`register(sub)` adds them to the `tradeloom` parser (actors/cli.py). Exit codes and the
client options are in `cli_options.py`.
"""

from __future__ import annotations

import argparse
from typing import Any

from transport.cli_options import (
    EXIT_OK,
    ExampleFormatter,
    add_client_options,
    client_command,
    connection,
    int_in_range,
    positive_seconds,
    print_json,
)
from transport.cli_output import (
    format_execution,
    format_executions,
    format_intents,
    format_status,
    printable,
    text,
)

#: Every emergency change the CLI asks for says it came from the CLI.
ORIGIN = "cli"
EXECUTION_STATUSES = ("queued", "running", "completed", "failed", "halted", "cancelled",
                      "interrupted", "refused")
OUTCOMES = ("filled", "not_filled", "unknown")


def _parser(sub: Any, name: str, help_text: str, description: str,
            example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=description,
        epilog=f"example:\n  {example}", formatter_class=ExampleFormatter)
    return parser


def _priority(text: str) -> int:
    """argparse type: an integer the wire carries (msgpack's 64 bits; the engine's range)."""
    return int_in_range(text, -(2 ** 63), 2 ** 63 - 1, what="an integer",
                        bounds="must be in [-2**63, 2**63)")


def register(sub: Any) -> None:
    """Add the client commands to the `tradeloom` subparsers `sub`."""
    from actors.cli import add_input_option

    status = _parser(sub, "status", "the daemon's state, running executions, workflows",
                     "Show the emergency state, running and queued executions, registered "
                     "workflows, breakers, limits and the last seq. Exit 0; 3 when the "
                     "daemon is unreachable.", "tradeloom status --json")
    status.add_argument("--json", action="store_true", help="the status map as JSON")
    add_client_options(status)
    status.set_defaults(handler=client_command(cmd_status))

    submit = _parser(sub, "submit", "start an execution (--wait: until it ends)",
                     "Start an execution of a registered workflow and print its id. With "
                     "--wait, follow the event stream until the execution ends and print the "
                     "result. Exit 0; 1 when it failed, was halted, cancelled or interrupted "
                     "(or --wait-timeout passed), or no such workflow is registered; 3 when "
                     "the daemon is unreachable; 4 when the submit was refused (HALT, the "
                     "queue full, or the daemon stopping).",
                     "tradeloom submit arb_btc --input threshold=5 --wait")
    add_input_option(submit, submit.add_argument("workflow", metavar="WORKFLOW",
                                                 help="a registered workflow id"))
    submit.add_argument("--wait", action="store_true",
                        help="wait for the execution's end and print its result")
    submit.add_argument("--wait-timeout", type=positive_seconds, metavar="S",
                        help="with --wait: give up after S seconds (exit 1; the execution "
                             "goes on). Default: wait for the end")
    submit.add_argument("--priority", type=_priority, default=0, metavar="N",
                        help="higher starts first (default 0)")
    submit.add_argument("--bot-id", help="bot_id on the execution's events")
    submit.add_argument("--strategy-id", help="strategy_id on the execution's events")
    submit.add_argument("--json", action="store_true",
                        help="print {execution_id} (with --wait: the result) as JSON")
    add_client_options(submit)
    submit.set_defaults(handler=client_command(cmd_submit))

    _emergency_parsers(sub)

    executions = _parser(sub, "executions", "recent executions from the journal",
                         "List recent executions, newest first. Exit 0; 3 when the daemon "
                         "is unreachable.",
                         "tradeloom executions --workflow arb_btc --status failed --limit 20")
    executions.add_argument("--workflow", metavar="ID", help="only this workflow's")
    executions.add_argument("--status", choices=EXECUTION_STATUSES, help="only this status")
    executions.add_argument("--limit", type=int, default=100, metavar="N",
                            help="at most N (1-10000, default 100)")
    executions.add_argument("--json", action="store_true", help="a JSON list")
    add_client_options(executions)
    executions.set_defaults(handler=client_command(cmd_executions))

    show = _parser(sub, "show", "one execution: status, nodes, results",
                   "Show one execution from the journal. Exit 0; 1 when there is no such "
                   "execution; 3 when the daemon is unreachable.",
                   "tradeloom show exec_arb_btc_1f2e3d4c")
    show.add_argument("execution_id", metavar="EXECUTION_ID")
    show.add_argument("--json", action="store_true", help="the execution map as JSON")
    add_client_options(show)
    show.set_defaults(handler=client_command(cmd_show))

    intents = _parser(sub, "intents", "action intents with no recorded outcome; --resolve",
                      "List action intents with no recorded outcome (actions that started "
                      "before a crash or a timeout: check them on the exchange), or record "
                      "the operator's reconciliation of one with --resolve. Exit 0; 1 when "
                      "the key is unknown; 3 when the daemon is unreachable.",
                      "tradeloom intents --resolve exec_arb_btc_1f2e3d4c:trade "
                      "--outcome filled --note 'seen on the exchange'")
    intents.add_argument("--all", action="store_true",
                         help="every intent, resolved ones too")
    intents.add_argument("--resolve", metavar="KEY", help="the idempotency key to resolve")
    intents.add_argument("--outcome", choices=OUTCOMES, help="with --resolve: what happened")
    intents.add_argument("--note", metavar="TEXT", help="with --resolve: why you know")
    intents.add_argument("--json", action="store_true", help="JSON output")
    add_client_options(intents)
    intents.set_defaults(handler=client_command(cmd_intents))


def _emergency_parsers(sub: Any) -> None:
    refused = ("Exit 0; 3 when the daemon is unreachable; 4 when refused (a limit with "
               "auto_halt is exceeded: lower it, or --force).")
    halt = _parser(sub, "halt", "enter HALT: no new execution, running ones stop",
                   "Enter HALT: no new execution starts, queued and running ones end "
                   "halted, no action starts after the change. Exit 0; 3 when the daemon "
                   "is unreachable.", "tradeloom halt --reason 'exchange incident'")
    halt.add_argument("--reason", required=True, metavar="TEXT")
    resume = _parser(sub, "resume", "back to NORMAL", f"Return to NORMAL. {refused}",
                     "tradeloom resume --reason 'positions checked'")
    resume.add_argument("--reason", metavar="TEXT")
    resume.add_argument("--force", action="store_true",
                        help="resume even while an auto_halt limit is exceeded")
    alert = _parser(sub, "alert", "enter ALERT: everything runs, events warn",
                    f"Enter ALERT. {refused}", "tradeloom alert --reason 'spread widening'")
    alert.add_argument("--reason", required=True, metavar="TEXT")
    alert.add_argument("--force", action="store_true",
                       help="even while an auto_halt limit is exceeded")
    reduce_only = _parser(sub, "reduce-only", "enter REDUCE_ONLY: only risk-reducing actions",
                          "Enter REDUCE_ONLY: only action nodes marked reduces_risk run "
                          "(allowed from HALT, to close positions, and while a limit is "
                          "exceeded: it is never refused). Exit 0; 3 when the daemon is "
                          "unreachable.",
                          "tradeloom reduce-only --reason 'close positions'")
    reduce_only.add_argument("--reason", required=True, metavar="TEXT")
    for parser, op in ((halt, "halt"), (resume, "resume"), (alert, "alert"),
                       (reduce_only, "reduce_only")):
        add_client_options(parser)
        parser.set_defaults(handler=client_command(cmd_emergency), op=op)


# -- handlers ------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    with connection(args).control_client() as control:
        status = control.status()
    if args.json:
        print_json(status)
    else:
        print(format_status(status), flush=True)
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from actors.cli import parse_inputs
    from transport.cli_submit import send_submit, submit_and_wait

    inputs = parse_inputs(args.input)
    conn = connection(args)
    if args.wait:
        return submit_and_wait(conn, args, inputs)
    with conn.control_client() as control:
        reply = send_submit(control, conn, args, inputs)
    if args.json:
        print_json(reply)
    else:
        print(reply["execution_id"], flush=True)
    return EXIT_OK


def cmd_emergency(args: argparse.Namespace) -> int:
    with connection(args).control_client() as control:
        if args.op == "halt":
            reply = control.halt(args.reason, origin=ORIGIN)
        elif args.op == "resume":
            reply = control.resume(args.reason, args.force, origin=ORIGIN)
        elif args.op == "alert":
            reply = control.alert(args.reason, args.force, origin=ORIGIN)
        else:
            reply = control.reduce_only(args.reason, origin=ORIGIN)
    print(printable(f"{text(reply.get('state'))} (was {text(reply.get('previous_state'))})"),
          flush=True)
    return EXIT_OK


def cmd_executions(args: argparse.Namespace) -> int:
    with connection(args).control_client() as control:
        rows = control.executions(workflow=args.workflow, status=args.status, limit=args.limit)
    if args.json:
        print_json(rows)
    else:
        print(format_executions(rows), flush=True)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with connection(args).control_client() as control:
        execution = control.execution(args.execution_id)
    if args.json:
        print_json(execution)
    else:
        print(format_execution(execution), flush=True)
    return EXIT_OK


def cmd_intents(args: argparse.Namespace) -> int:
    from actors.cli import UsageError

    if args.resolve is None and (args.outcome or args.note):
        raise UsageError("--outcome and --note go with --resolve KEY")
    if args.resolve is not None and args.outcome is None:
        raise UsageError("--resolve needs --outcome filled|not_filled|unknown")
    with connection(args).control_client() as control:
        if args.resolve is not None:
            reply = control.resolve_intent(args.resolve, args.outcome, args.note)
            if args.json:
                print_json(reply)
            else:
                print(printable(f"{text(reply.get('idempotency_key'))}: "
                                f"{text(reply.get('outcome'))}"), flush=True)
            return EXIT_OK
        rows = control.intents(unresolved=not args.all)
    if args.json:
        print_json(rows)
    else:
        print(format_intents(rows, resolved_too=args.all), flush=True)
    return EXIT_OK
