"""The `tradeloom` command line. Errors are one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from actors import logs
from actors.cli_entry import EXIT_INTERRUPTED
from actors.cli_stdout import (
    CLOSED_STDOUT_ERROR,
    reserve_stderr,
    reserve_stdout,
    stdout_closed,
    stdout_to_devnull,
)
from actors.config import Config
from actors.errors import TradeloomError
from actors.logs import get_logger
from actors.version import VERSION

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


#: The lone surrogates Python decodes a command line's non-UTF-8 bytes to.
_UNDECODED = re.compile("[\udc80-\udcff]")
#: Errors writing the output of a command that was carried out (a full disk).
_OUTPUT_LOST = frozenset({errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT})


def parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    """`k=v` pairs; values are JSON when they parse (numbers, booleans), else strings."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--input {pair!r}: expected key=value")
        if _UNDECODED.search(pair):  # bytes not UTF-8 (argv keeps them as surrogates)
            raise UsageError(f"--input {pair!a}: not UTF-8 text (on the wire it would "
                             "read as '?', and two such keys as one)")
        if key in inputs:  # the last one silently won: a typo's sign
            raise UsageError(f"--input {key!r} is given twice")
        try:
            inputs[key] = json.loads(raw, parse_constant=_not_json, parse_float=_finite_float)
        except (ValueError, RecursionError):  # nested past Python's recursion limit: no JSON
            inputs[key] = raw
    return inputs


def add_input_option(parser: argparse.ArgumentParser, positional: argparse.Action) -> None:
    """`--input k=v ...`: one or more pairs after the flag, and the flag
    repeatable. A flag taking one or more values swallows a positional written after it
    (`submit --input a=1 WORKFLOW`), so argparse is told the positional is optional and
    `restore_positional` takes it back from among the pairs."""
    parser.add_argument("--input", action="extend", nargs="+", default=[], metavar="K=V",
                        help="inputs, one or more after the flag (repeatable); a value is "
                             "JSON when it parses, else a string")
    positional.required = False
    parser.set_defaults(input_positional=(parser, positional))


def restore_positional(args: argparse.Namespace) -> None:
    """Give back the positional that `--input` swallowed (see `add_input_option`); without
    one, argparse's own error (exit 2)."""
    found: tuple[argparse.ArgumentParser, argparse.Action] | None = getattr(
        args, "input_positional", None)
    if found is None or getattr(args, found[1].dest) is not None:
        return
    parser, positional = found
    # An id or MODULE:ATTR has no "=": the first such value (`--input a=1 WF --input b=2`
    # swallowed WF mid-list, as the repeated one-pair flag never did).
    bare = next((i for i, pair in enumerate(args.input) if "=" not in pair), None)
    if bare is not None:
        setattr(args, positional.dest, args.input.pop(bare))
    else:
        parser.error(f"the following arguments are required: {positional.metavar}")


def _not_json(constant: str) -> float:
    # Python's json reads NaN and Infinity, which JSON has not: `x=NaN` stays the string
    # "NaN" (the engine and the daemon refuse a non-finite input).
    raise ValueError(f"{constant} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: JSON's syntax, but no float holds it
        raise ValueError(f"{text} overflows a float")
    return value


#: A key pair's file name stem (`--name`): one plain file name in DIR.
KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def cmd_keys(args: argparse.Namespace) -> int:
    import zmq.auth

    directory = Path(args.dir)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a directory")
    if not KEY_NAME.fullmatch(args.name):
        # "" wrote hidden files, "../x" wrote outside DIR, "a/b" failed on a raw errno.
        raise UsageError(f"--name {args.name!r}: a key name is letters, digits, '-', '_' and "
                         "'.', not starting with '.'")
    # A pair written over is a daemon whose every client's pinned server key is now wrong,
    # or a client the daemon no longer knows: replacing one is asked for (--force). A whole
    # pair is kept (exit 0: the pair asked for is there); half of one is no pair at all.
    public, secret = directory / f"{args.name}.key", directory / f"{args.name}.key_secret"
    if not args.force and public.exists() and secret.exists():
        print(f"tradeloom: {public.name} and {secret.name} are there already, kept (--force "
              "writes a new pair)", file=sys.stderr)
        print(f"public key: {public}\nsecret key: {secret}")
        return EXIT_OK
    if not args.force and (public.exists() or secret.exists()):
        raise UsageError(f"{public if public.exists() else secret} exists without its other "
                         "half: --force writes a new pair in its place")
    directory.mkdir(parents=True, exist_ok=True)
    # The secret key is readable by its owner only, from its first byte (zmq writes both
    # files with the process umask: 0644 under the usual 022). The public key is public.
    # A file written over would keep its old mode: a new key goes into a new file.
    secret.unlink(missing_ok=True)
    umask = os.umask(0o077)
    try:
        written = zmq.auth.create_certificates(str(directory), args.name)
    finally:
        os.umask(umask)
    os.chmod(written[0], 0o644 & ~umask)
    print(f"public key: {written[0]}\nsecret key: {written[1]}")
    return EXIT_OK


def cmd_daemon(args: argparse.Namespace) -> int:
    from transport.daemon import Daemon

    config = Config.load(args.config)
    daemon = Daemon(config, insecure=args.insecure)
    daemon.install_signal_handlers()
    daemon.start()
    if args.log_format == "console":
        events, control = daemon.bound_endpoints()  # a `*` port as the OS picked it
        print(f"tradeloom daemon {VERSION} running (pid {os.getpid()}): events "
              f"{events}, control {control}, journal "
              f"{daemon.config.daemon.data_dir}/journal.db. Ctrl-C stops it.\n"
              + _halted_note(daemon)
              + f"Watch it from a second terminal:  {tail_command(args.config, daemon)}"
              + (f"\nDashboard: {daemon.web.url}" if daemon.web is not None else ""),
              file=sys.stderr, flush=True)
    daemon.serve_forever()
    return EXIT_OK if daemon.clean else EXIT_FAILED  # unclean: the journal lost writes


def _halted_note(daemon: Any) -> str:
    """A line for a daemon that came back in HALT (a restart keeps it): nothing runs, its
    interval triggers' runs are refused, until an operator resumes it."""
    from transport.cli_output import printable

    status = daemon.engine.status() if daemon.engine is not None else {}
    if status.get("state") != "HALT":
        return ""
    reason = printable(str(status.get("reason")))  # an operator's text: no escapes run
    reason = reason if len(reason) <= 200 else reason[:200] + "..."
    return f"It is in HALT ({reason}): nothing runs until `tradeloom resume --reason ...`.\n"


def tail_command(config_path: str, daemon: Any) -> str:
    """The `tradeloom tail` command line that reaches this daemon, as a person types it:
    `--config` for a config's endpoints (and its [client] keys), and the bound endpoints
    as flags where the config's cannot be connected to (a `*` port)."""
    from actors.config import TransportConfig
    from transport.cli_options import connect_endpoint

    script = Path(sys.argv[0])
    program = "tradeloom"
    if script.name == "tradeloom" and shutil.which("tradeloom") != str(script.absolute()):
        program = str(script) if script.is_absolute() else os.path.relpath(script)
        program = program if os.sep in program else f".{os.sep}{program}"
    defaults = TransportConfig()
    configured = (daemon.transport.events, daemon.transport.control)
    command = [program, "tail"]
    if configured != (defaults.events, defaults.control):
        command += ["--config", config_path]
    events, control = (connect_endpoint(e) for e in daemon.bound_endpoints())
    if (events, control) != tuple(connect_endpoint(e) for e in configured):
        command += ["--control", control, "--events", events]
    return shlex.join(command)


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (README), pointing at --help for usage."""

    #: The commands' own parsers, by name (set by `build_parser`).
    commands: Mapping[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")




def build_parser() -> Parser:
    parser = Parser(
        prog="tradeloom", description="Actor-model engine for automated trading workflows.",
        epilog="example: tradeloom status   (each command has --help with its own example)")
    parser.add_argument("--version", action="version", version=f"tradeloom {VERSION}")
    parser.add_argument("--log-format", choices=["json", "console"], default="json",
                        help="log lines on stderr: json (default) or console")
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="default: info for the daemon, warning for other commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from actors import cli_run  # (its module imports this one)

    cli_run.register(sub)

    daemon = sub.add_parser(
        "daemon", help="run the long-lived daemon (journal, event stream, control socket)",
        description="Run the daemon in the foreground until SIGTERM or Ctrl-C (a second "
                    "signal exits at once, 1). Logs JSON lines to stderr. Exit 0 on a clean "
                    "stop, 1 if journal writes were failing at the stop, 2 on a bad config "
                    "or a refused start (data_dir or port in use).",
        epilog="example: tradeloom --log-format console daemon --config examples/daemon.toml")
    daemon.add_argument("--config", metavar="FILE", required=True, help="TOML config")
    daemon.add_argument("--insecure", action="store_true",
                        help="allow binding a non-loopback address without CURVE keys")
    # `tradeloom daemon --config F --log-format console` (as the docs spell it) works as
    # well as the global option before the command; SUPPRESS keeps the global value when
    # these are not given here.
    daemon.add_argument("--log-format", choices=["json", "console"], default=argparse.SUPPRESS,
                        help="as the global option: json (default) or console")
    daemon.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        default=argparse.SUPPRESS, help="as the global option (default info)")
    # (a Ctrl-C before the stop signals are taken over, while it starts, is a stop too)
    daemon.set_defaults(handler=cmd_daemon, default_level="info", runs_user_code=True,
                        exit_past_user_threads=True, ctrl_c_ends_it=True, writes_stdout=False)

    keys = sub.add_parser("keys", help="write a CURVE key pair for the daemon or a client",
                          description="Write DIR/NAME.key (public) and DIR/NAME.key_secret "
                                      "(docs/protocol.md section 5); a pair of that name "
                                      "already there is kept (--force replaces it). Exit 0; "
                                      "2 when DIR is not a directory or holds half a pair.",
                          epilog="example: tradeloom keys keys/ --name daemon")
    keys.add_argument("dir", metavar="DIR")
    keys.add_argument("--name", default="tradeloom",
                      help="file name stem: letters, digits, -, _ and . (default tradeloom)")
    keys.add_argument("--force", action="store_true",
                      help="replace a pair of that name already in DIR (else it is kept)")
    keys.set_defaults(handler=cmd_keys)

    # The client commands live with the client library; imported here, not at module level,
    # so `import actors` never pulls in the transport.
    from transport import cli_commands, cli_webhooks, tail

    cli_commands.register(sub)
    tail.register(sub)
    cli_webhooks.register(sub)
    parser.commands = sub.choices
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    reserve_stderr()  # first: before a file can take fd 2 (actors/cli_stdout.py)
    _escape_what_the_terminal_cannot_show()
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # an option the command does not have: point at that command's --help
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    level = args.log_level or getattr(args, "default_level", "warning")
    # A command that loads no user code sets structlog up at its first line, if any: a
    # client command that logs nothing starts ~0.25 s sooner. `daemon` and `run` set it up
    # now, before a workflow module could use structlog directly.
    logs.configure(fmt=args.log_format, level=level,
                   deferred=not getattr(args, "runs_user_code", False))
    restore_positional(args)
    if stdout_closed():  # (actors/cli_stdout.py)
        reserve_stdout()
        if getattr(args, "writes_stdout", True):
            print(f"tradeloom: error: {CLOSED_STDOUT_ERROR}", file=sys.stderr)
            return EXIT_USAGE
    code = _handle(args)
    if getattr(args, "exit_past_user_threads", False):
        exit_past_user_threads(code)
    return code


def _escape_what_the_terminal_cannot_show() -> None:
    """On a terminal (or file) whose encoding cannot carry a character (an ASCII or latin-1
    locale: a "\u2026" that `tail` shortens with, a "\u20ac" in an operator's halt reason),
    write it escaped: it failed every `status`, `tail` and `show` with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):  # (a replaced or closed stream: leave it)
                reconfigure(errors="backslashreplace")


#: How long `tradeloom daemon` (stopped) and `tradeloom run` (done) wait for threads user
#: code started before they exit past them.
USER_THREADS_WAIT_S = 2.0


def exit_past_user_threads(code: int) -> None:
    """Exit with `code` now if a non-daemon thread of user code (a workflow module that
    started one at import) outlives the command by USER_THREADS_WAIT_S: the interpreter
    would wait for it forever after `daemon_stopped` (until a second signal) or after
    `run`'s result. The engine's own threads are daemon threads, or named `tradeloom-*`
    (the control server's pool, finishing a request): those end by themselves."""
    deadline = time.monotonic() + USER_THREADS_WAIT_S
    try:
        for thread in _user_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # Ctrl-C while waiting (`run`): exit now, without a traceback
        pass
    left = [t.name for t in _user_threads() if t.is_alive()]
    if left:
        get_logger("tradeloom.cli").warning("user_threads_abandoned", threads=left)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _user_threads() -> list[threading.Thread]:
    main_thread = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main_thread and not t.daemon
            and not t.name.startswith("tradeloom-")]


def _handle(args: argparse.Namespace) -> int:
    try:
        code: int = args.handler(args)
    except (TradeloomError, UsageError) as exc:
        print(f"tradeloom: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TimeoutError as exc:
        print(f"tradeloom: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        if getattr(args, "ctrl_c_ends_it", False):  # `tail`, `daemon`: how they end
            return EXIT_OK
        # `run --every` and `submit --wait` answer it themselves; here it cut a command
        # short, and exit 0 would claim it was done.
        print("tradeloom: error: interrupted before the command finished (a request it "
              "sent may still have been carried out)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`tradeloom tail --json | head`): stop quietly, as a pipe's
        # writer should.
        stdout_to_devnull()
        return EXIT_OK
    except OSError as exc:
        if exc.errno in _OUTPUT_LOST:
            # A full disk (stdout on it, say), met once the command was under way: exit 2
            # would claim nothing was done, and a halt sent before it took effect.
            stdout_to_devnull()
            print(f"tradeloom: error: cannot write: {exc.strerror or exc} (a request it "
                  "sent may have been carried out)", file=sys.stderr)
            return EXIT_FAILED
        print(f"tradeloom: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (the CLI rules (README))
        print(f"tradeloom: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    # `python -m actors.cli` runs this file as `__main__`, a second copy of the module beside
    # the `actors.cli` the commands import: run that one's main(), so a `UsageError` they
    # raise is the class `_handle` catches (a bad argument: exit 2, not "unexpected").
    from actors.cli import main as _main

    sys.exit(_main())
