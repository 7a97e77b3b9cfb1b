"""What every client command of the CLI shares: how to reach the daemon, and exit codes.

Client options: `--control`, `--events`, `--timeout S` (default 5: how long to
wait for the daemon before exit 3), `--config FILE` (its `[transport]` endpoints and
`[client]` CURVE key files; the workflows it names are not imported), `--curve-secret-key
FILE` / `--curve-server-key FILE` (docs/protocol.md section 5). A flag beats the config
file, which beats the defaults (`tcp://127.0.0.1:7450` / `7451`).

Each client command's handler is wrapped by `client_command`, which turns the transport's
exceptions into one line on stderr and the command's exit code:

    0 ok · 1 failed / not found · 2 bad input · 3 daemon unreachable · 4 refused
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.cli_entry import EXIT_INTERRUPTED, LOADING_INTERRUPTED
from actors.config import ClientConfig, Config, TransportConfig, read_config_text
from actors.config_ranges import CONNECT_ENDPOINT
from actors.errors import ConfigError
from actors.json_text import json_text

if TYPE_CHECKING:
    from transport.control_client import ControlClient
    from transport.security import ClientKeys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
DEFAULT_TIMEOUT_S = 5.0
#: Bind-everything hosts a client cannot connect to; it reaches such a daemon on loopback.
_WILDCARD_HOSTS = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}

Handler = Callable[[argparse.Namespace], int]


def int_in_range(text: str, low: int, high: int | None, *, what: str, bounds: str) -> int:
    """An argparse type's body: `text` as an integer in [low, high] (None: no upper bound),
    else an ArgumentTypeError saying `{text!r} is not {what}` or `{text!r}: {bounds}`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text!r}: {bounds}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number > 0")
    return value


class ExampleFormatter(argparse.HelpFormatter):
    """Wraps the description as usual but keeps the epilog's example lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The options every client command takes."""
    group = parser.add_argument_group("reaching the daemon")
    group.add_argument("--control", metavar="ENDPOINT",
                       help="control socket (default: [transport] control of --config, "
                            "else tcp://127.0.0.1:7451)")
    group.add_argument("--events", metavar="ENDPOINT",
                       help="event stream (default: [transport] events of --config, "
                            "else tcp://127.0.0.1:7450)")
    group.add_argument("--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT_S,
                       metavar="S", help="how long to wait for the daemon before giving up "
                                         "with exit 3 (default 5)")
    group.add_argument("--config", metavar="FILE",
                       help="read [transport] endpoints and [client] CURVE key files from "
                            "this TOML file (the daemon's config will do)")
    group.add_argument("--curve-secret-key", metavar="FILE",
                       help="this client's CURVE secret key file (NAME.key_secret from "
                            "`tradeloom keys`); with --curve-server-key")
    group.add_argument("--curve-server-key", metavar="FILE",
                       help="the daemon's CURVE public key file (its .key)")


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the daemon is and how to talk to it, resolved from the client options."""

    control: str
    events: str
    timeout: float
    keys: ClientKeys | None

    def control_client(self) -> ControlClient:
        from transport.control_client import ControlClient

        return ControlClient(self.control, timeout=self.timeout, keys=self.keys)


def connection(args: argparse.Namespace) -> Connection:
    """The `Connection` the client options of `args` describe (ConfigError on a bad file)."""
    # `is not None`, not truth: an empty value (`--control "$PROD"` with PROD unset) is
    # refused, not read as "not given", which went to the local default daemon.
    transport, client = (_read_config(args.config) if args.config is not None
                         else (TransportConfig(), ClientConfig()))
    secret = (args.curve_secret_key if args.curve_secret_key is not None
              else client.curve_secret_key_file)
    server = (args.curve_server_key if args.curve_server_key is not None
              else client.curve_server_public_key_file)
    keys: ClientKeys | None = None
    if secret is not None or server is not None:
        if not (secret and server):
            missing = "--curve-server-key" if secret else "--curve-secret-key"
            raise ConfigError(f"CURVE needs both key files: {missing} (or [client] "
                              "curve_secret_key_file / curve_server_public_key_file) is missing")
        from transport.security import ClientKeys

        keys = ClientKeys(secret, server)
    control = (_checked(args.control, "--control") if args.control is not None
               else _checked(transport.control, "[transport] control"))
    events = (_checked(args.events, "--events") if args.events is not None
              else _checked(transport.events, "[transport] events"))
    return Connection(control=connect_endpoint(control), events=connect_endpoint(events),
                      timeout=args.timeout, keys=keys)


def _checked(endpoint: str, source: str) -> str:
    """`endpoint` if it is one ZeroMQ can connect to; else a ConfigError (exit 2) naming
    where it came from, instead of zmq's "Invalid argument" at connect."""
    if endpoint.startswith("tcp://") and endpoint.endswith((":*", ":0")):
        # A daemon's "any free port" (its config's): a client needs the one it bound.
        flag = "--control" if "control" in source else "--events"
        raise ConfigError(f"{source} {endpoint!r}: a client connects to the port the "
                          f"daemon bound; give it with {flag} (the daemon prints it at "
                          "start)")
    if not CONNECT_ENDPOINT.fullmatch(endpoint):
        raise ConfigError(f"{source} {endpoint!r} is not an endpoint such as "
                          "tcp://127.0.0.1:7451")
    return endpoint


def _read_config(path: str) -> tuple[TransportConfig, ClientConfig]:
    """`[transport]` and `[client]` of a config file, validated as the daemon would; the
    rest of the file is not read (no workflow is imported)."""
    try:
        raw = tomllib.loads(read_config_text(path))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    config = Config.from_dict({key: raw[key] for key in ("transport", "client") if key in raw})
    return config.transport or TransportConfig(), config.client


def connect_endpoint(endpoint: str) -> str:
    """The address to connect to for a daemon bound at `endpoint`: a wildcard host (`*`,
    0.0.0.0, [::]) is reached on loopback."""
    scheme, sep, rest = endpoint.partition("://")
    host, colon, port = rest.rpartition(":")
    if sep and colon and host in _WILDCARD_HOSTS:
        return f"{scheme}://{_WILDCARD_HOSTS[host]}:{port}"
    return endpoint


def exit_code_for(exc: Exception) -> int:
    """The exit code of a client command that raised `exc`."""
    from transport.errors import (
        BadRequestError,
        ControlError,
        DaemonUnreachable,
        HaltedError,
        LimitExceededError,
        OverloadedError,
    )

    if isinstance(exc, DaemonUnreachable):
        return EXIT_UNREACHABLE
    if isinstance(exc, HaltedError | OverloadedError | LimitExceededError):
        return EXIT_REFUSED
    if isinstance(exc, BadRequestError):
        return EXIT_USAGE
    if isinstance(exc, ControlError):
        return EXIT_FAILED  # not_found, unknown_workflow, unauthorized, internal
    return EXIT_USAGE  # a bad config or key file, a reply that is not the protocol


def client_command(handler: Handler) -> Handler:
    """Run a client command; an error becomes one line on stderr and its exit code."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:  # the client library (ZeroMQ, msgpack): loaded here, before anything is sent
            import transport.control_client  # noqa: F401
        except KeyboardInterrupt:
            print(LOADING_INTERRUPTED, file=sys.stderr)
            return EXIT_INTERRUPTED
        from transport.errors import ControlError, DaemonUnreachable, TransportError

        try:
            return handler(args)
        except (TransportError, ControlError, ConfigError) as exc:
            unreachable = isinstance(exc, DaemonUnreachable)
            fail(f"daemon unreachable: {exc}" if unreachable else str(exc))
            return exit_code_for(exc)

    return run


def fail(message: str) -> None:
    """One line on stderr (newlines in a daemon's message folded into it)."""
    print(f"tradeloom: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def print_json(value: Any) -> None:
    """`value` as strict JSON (a NaN as `"nan"`, as the web gateway and webhooks send it)."""
    print(json_text(value), flush=True)
