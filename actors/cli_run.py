"""`tradeloom run`: one workflow in-process, without a daemon, in memory; its events as
lines (or JSON), then its result. `register(sub)` adds it to the parser (actors/cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from actors.cli import EXIT_FAILED, EXIT_OK, UsageError, add_input_option, parse_inputs
from actors.cli_entry import EXIT_INTERRUPTED
from actors.cli_stdout import stdout_to_devnull
from actors.config import DEFAULT_DATA_DIR, Config
from actors.config_parse import import_ref
from actors.json_text import json_text, plain_json

if TYPE_CHECKING:
    from actors.events import Event


def register(sub: Any) -> None:
    """Add `run` to the `tradeloom` parser's subcommands (`sub`)."""
    run = sub.add_parser("run", help="run one workflow in-process, print events and result",
                         description="Run a workflow in-process without a daemon, in "
                                     "memory: no socket, no journal (a config's [transport] "
                                     "and [daemon] data_dir are the daemon's). Exit 0 when "
                                     "it completed, 1 when it did not (or --timeout passed), "
                                     "2 on bad input or config, 130 on Ctrl-C.",
                         epilog="example: tradeloom run examples.arbitrage:workflow "
                                "--input threshold=5")
    add_input_option(run, run.add_argument("ref", metavar="MODULE:ATTR",
                                           help="import path of a Workflow object"))
    run.add_argument("--config", metavar="FILE",
                     help="TOML config ([resilience], limits ...; the daemon's will do)")
    run.add_argument("--json", action="store_true", help="one JSON object per event")
    run.add_argument("--every", type=_interval, metavar="S",
                     help="run again every S seconds until Ctrl-C (the demo loop)")
    run.add_argument("--count", type=_count, default=0, metavar="N",
                     help="with --every: stop after N runs (0: until Ctrl-C)")
    run.add_argument("--timeout", type=_interval, default=60.0, metavar="S",
                     help="how long to wait for one execution (default 60)")
    run.set_defaults(handler=cmd_run, runs_user_code=True, exit_past_user_threads=True)


def _count(text: str) -> int:
    """argparse type of `run --count`: an integer >= 0 (-1 ran once, as if it meant 1)."""
    from transport.cli_options import int_in_range  # lazily: as the client commands

    return int_in_range(text, 0, None, what="an integer", bounds="must be >= 0 (0: until "
                                                                  "Ctrl-C)")


def _interval(text: str) -> float:
    """argparse type of `run --every/--timeout`: finite seconds > 0 that one wait can take
    (`inf` or 1e12 was an OverflowError after the first run; `nan` did not wait at all)."""
    from transport.cli_options import positive_seconds  # lazily: as the client commands

    seconds = positive_seconds(text)
    if seconds >= threading.TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be under {threading.TIMEOUT_MAX:.0f} seconds")
    return seconds


def format_event(event: Event) -> str:
    """One line a person can read."""
    kind = event["type"]
    parts = [f"{event.get('seq', '-'):>6}", event["timestamp"][11:23], f"{kind:<22}"]
    if "node_id" in event:
        parts.append(event["node_id"])
    details = {
        "execution_started": ("execution_id",),
        "node_started": ("node_category", "attempt"),
        "node_completed": ("duration_ms", "outputs"),
        "node_failed": ("error_type", "error", "attempt", "final"),
        "node_retrying": ("attempt", "delay_ms"),
        "node_skipped": ("reason",),
        "progress": ("nodes_completed", "nodes_total"),
        "emergency_state_changed": ("previous_state", "state", "reason"),
    }.get(kind, ("status", "duration_ms", "error_type", "error") if "status" in event else ())
    parts.extend(f"{key}={_shown(event[key])}" for key in details
                 if event.get(key) is not None)
    return "  ".join(str(p) for p in parts)


def _shown(value: Any) -> str:
    """A field's value as the other commands show it: maps and lists as JSON (outputs)."""
    return json_text(value) if isinstance(value, dict | list) else str(value)


def cmd_run(args: argparse.Namespace) -> int:
    from actors.engine import Engine  # (here: the other commands start without the engine)

    config = Config.load(args.config) if args.config else Config()
    # In-process without a daemon: the config may be the daemon's, whose sockets and
    # journal it holds (a try-out must not add executions to the daemon's history, nor come
    # up in a HALT the daemon's journal kept); and `run` runs its one workflow, not the
    # config's interval triggers.
    config = dataclasses.replace(
        config, transport=None,
        daemon=dataclasses.replace(config.daemon, data_dir=DEFAULT_DATA_DIR),
        workflows=tuple(dataclasses.replace(entry, every_s=None) for entry in config.workflows))
    if args.count and args.every is None:  # it was ignored: one run, whatever N said
        raise UsageError("--count needs --every (it counts the runs of the loop)")
    workflow = import_ref(args.ref, key="MODULE:ATTR")
    inputs = parse_inputs(args.input)
    stop = threading.Event()
    from transport.stop_signals import StopSignals  # (transport is imported when used)

    # SIGTERM ends the run after the execution in flight (a second one, later, at once);
    # handled off the main thread, which may hold `stop`'s lock when a signal lands.
    StopSignals(lambda name: stop.set(), signums=(signal.SIGTERM,)).install()
    printer = json_text if args.json else _event_line
    out_lock = threading.Lock()

    def show(event: Event) -> None:
        with out_lock:
            try:
                print(printer(event), flush=True)
            except BrokenPipeError:  # the reader went away (`| head`): stop quietly
                stdout_to_devnull()
                stop.set()

    failures = 0
    runs = 0
    result = None
    in_flight = False
    with Engine.start(config) as engine:
        engine.subscribe(show)
        try:
            while not stop.is_set():
                in_flight = True
                result = engine.submit(workflow, inputs).result(timeout=args.timeout)
                in_flight = False
                runs += 1
                if not result.ok:
                    failures += 1
                if args.count and runs >= args.count:
                    break
                if args.every is None:
                    break
                stop.wait(args.every)
        except KeyboardInterrupt:
            # Ctrl-C is how `--every` ends; a single run it cuts short did not complete,
            # and exit 0 would say it had (the engine's stop cancels it).
            if in_flight and args.every is None:
                print("tradeloom: error: interrupted before the execution ended (it is "
                      "cancelled with the engine)", file=sys.stderr)
                return EXIT_INTERRUPTED
    if args.every is None and result is not None:
        from transport.cli_output import printable

        status = "ok" if result.ok else f"{result.status}: {result.error_type}: {result.error}"
        results = dict(result.results)  # events: a read-only mapping; json wants a dict
        summary = {"execution_id": result.execution_id, "status": result.status,
                   "duration_ms": result.duration_ms, "results": results}
        if not result.ok:
            summary.update(error=result.error, error_type=result.error_type)
        # (no results: no `{}` under the line, which read as output gone missing)
        shown = f"\n{json.dumps(plain_json(results), indent=2)}" if results else ""
        print(json_text(summary) if args.json else printable(f"result: {status}") + shown,
              flush=True)
    return EXIT_FAILED if failures else EXIT_OK


def _event_line(event: Event) -> str:
    # A node's error may hold anything: control characters are shown, never obeyed.
    from transport.cli_output import printable  # (transport is imported when used)

    return printable(format_event(event))
