"""structlog set-up for the command line: JSON lines (machines) or console (people), to stderr.

The library itself only calls `structlog.get_logger`; configuring output is the program's
job, so embedding applications keep their own logging.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

#: The libraries' own loggers (websockets, zmq.auth, asyncio) say only this much: their
#: INFO lines are per request, and what matters is in the engine's own lines.
LIBRARY_LEVEL = logging.WARNING


def configure(*, fmt: str = "json", level: str = "info") -> None:
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    _route_stdlib_logging(renderer, logging.getLevelNamesMapping()[level.upper()])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _route_stdlib_logging(renderer: Any, level: int) -> None:
    """Lines from the standard library's `logging` (websockets, zmq.auth, asyncio) in the
    same form as ours: without a handler, Python's last-resort one printed them as plain
    text, tracebacks and all, into a stream of JSON lines (a peer could cause them)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("tradeloom")
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ExtraAdder(("suppressed",)),
            structlog.processors.format_exc_info,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    handler.addFilter(LibraryThrottle())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "tradeloom"]:
        root.removeHandler(old)  # (configured again: one handler, the newest form)
    root.addHandler(handler)
    root.setLevel(max(level, LIBRARY_LEVEL))


class LibraryThrottle(logging.Filter):
    """At most one line per logger and message every `every_s`; the ones held back are
    counted on the next (`suppressed`). A peer can make a library log an error, traceback
    and all, per connection (websockets on a pipelined HTTP request): the log must not be
    its megaphone."""

    def __init__(self, every_s: float = 10.0, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._every_s, self._monotonic = every_s, monotonic
        self._lock = threading.Lock()
        #: (logger, message) -> (when its last line went out, how many held back since).
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # By the message as written, not its template: a workflow module's own
        # `log.warning("order %s failed", key)` lines are each their own.
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - an argument's __str__ (user code); logging says so
            text = object.__repr__(record.msg)
        key, now = (record.name, text), self._monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self._every_s:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            if len(self._seen) >= 1000:  # (bounded: odd messages must not grow it)
                self._seen.clear()
            self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.suppressed = last[1]
        return True
