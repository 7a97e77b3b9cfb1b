"""The `tradeloom` command's entry point: `actors.cli` behind a guard for Ctrl-C.

Loading the CLI (the engine, structlog, ZeroMQ) takes a few hundred milliseconds, in which
a Ctrl-C raised KeyboardInterrupt out of an import: a traceback, where every other error
is one line. This module imports nothing but `sys` (`actors/__init__` loads nothing either),
so from the moment it runs an interrupt is answered as the commands answer one.
"""

from __future__ import annotations

import sys

#: 128 + SIGINT, as a shell reports a command a Ctrl-C ended (every command's code for it).
EXIT_INTERRUPTED = 130
#: What a Ctrl-C while the command (or the client library it sends with) loads prints.
LOADING_INTERRUPTED = "tradeloom: error: interrupted while loading (nothing was done)"


def main() -> int:
    try:
        from actors.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # while loading or parsing, before a command's own handling
        print(LOADING_INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
