"""structlog set-up for the command line: JSON lines (machines) or console (people), to stderr;
and `get_logger`, the engine's loggers, whose calls never raise.

The library itself only gets its loggers from structlog (`get_logger` below); configuring
output is the program's job, so embedding applications keep their own logging.

structlog is imported at the first line logged, not with this module: with the `rich` it
loads it takes ~0.25 s, which a `tradeloom status` that logs nothing need not pay
(`configure(..., deferred=True)`). A program that logs pays it once, as before.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from actors.errors import failure_fields, type_name

__all__ = ["LibraryThrottle", "NodeLogger", "SafeLogger", "configure", "dropped_lines",
           "get_logger", "install_uncaught_hooks"]

#: The libraries' own loggers (websockets, zmq.auth, asyncio) say only this much: their
#: INFO lines are per request, and what matters is in the engine's own lines.
LIBRARY_LEVEL = logging.WARNING


_dropped_lock = threading.Lock()
_dropped = 0


def dropped_lines() -> int:
    """Log lines dropped since the start because logging them raised (`SafeLogger`)."""
    return _dropped


def _drop() -> None:
    global _dropped
    with _dropped_lock:
        _dropped += 1


def _contained(fallback: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, or `fallback` (the line dropped and counted) if it raises
    anything but a Ctrl-C, which is still the operator's."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a line is worth less than the work it is in
        _drop()
        return fallback


def _never_raising(method: str) -> Callable[..., None]:
    # (Positional-only throughout: a line's fields are the caller's, `method=` included.)
    def call(self: SafeLogger, /, *args: Any, **fields: Any) -> None:
        _contained(None, self._call, method, *args, **fields)

    call.__name__ = call.__qualname__ = method
    return call


class SafeLogger:
    """A structlog logger whose calls never raise into the caller (anything but a Ctrl-C).

    A log call sits in the middle of the engine's work: between a HALT's commit and its
    broadcast to the supervisors, inside the control socket's reply to a request, in the
    trigger loop. When logging fails there (the daemon's stderr is a pipe whose reader
    died, stderr was closed, or user code reconfigured structlog with a processor that
    raises), the line is dropped and counted (`dropped_lines()`, the
    `tradeloom_log_lines_dropped_total` metric), and the work goes on."""

    __slots__ = ("_logger",)

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def _call(self, method: str, /, *args: Any, **fields: Any) -> None:
        getattr(self._logger, method)(*args, **fields)

    def bind(self, **fields: Any) -> Self:
        # (unbound lines beat none; `_logger.bind` itself may set structlog up: contained)
        bound = _contained(None, lambda: self._logger.bind(**fields))
        return self if bound is None else type(self)(bound)

    debug = _never_raising("debug")
    info = _never_raising("info")
    warning = _never_raising("warning")
    error = _never_raising("error")
    critical = _never_raising("critical")
    exception = _never_raising("exception")


class NodeLogger(SafeLogger):
    """`ctx.log`: a `SafeLogger` for user code, which may also call the rest of structlog's
    bound-logger methods (`msg`, `warn`, `log`, `new`, `unbind`, ...): each is guarded the
    same way, and one that returns a logger returns a `NodeLogger`. A node's log line that
    cannot be written must not fail an action that ran (its retry would place the order
    again)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._logger, name)  # (a name structlog has not: AttributeError)
        return _guarded(self, found) if callable(found) else found


def _guarded(owner: NodeLogger, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        # On failure `owner`: what `new`/`unbind` return is a logger, so chained calls work.
        result = _contained(owner, method, *args, **kwargs)
        # A bound logger back (`new`, `unbind`, `try_unbind`): guarded like this one.
        return NodeLogger(result) if hasattr(result, "_process_event") else result

    return call


def get_logger(name: str) -> SafeLogger:
    """The engine's logger named `name`: structlog's, as configured when a line is logged."""
    return SafeLogger(_FirstUse(name))


class _FirstUse:
    """`structlog.get_logger(name)`, fetched (structlog imported, a deferred `configure`
    applied) when a line is first logged or bound."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            self._logger = _structlog().get_logger(self._name)
        return getattr(self._logger, attr)


def _structlog() -> Any:  # (the module)
    """structlog, once imported and configured as `configure(deferred=True)` asked."""
    import structlog

    if _deferred is not None:
        _apply_deferred()
    return structlog


def node_logger(name: str) -> NodeLogger:
    """A `NodeLogger` (`ctx.log`) over structlog's logger `name`."""
    return NodeLogger(_structlog().get_logger(name))


_uncaught_log = get_logger("tradeloom.uncaught")


def install_uncaught_hooks() -> None:
    """Exceptions nobody catches, as log lines of the program's form. Python's default hooks
    printed a multi-line traceback into the stream of JSON lines: one ending a thread user
    code started (`threading.excepthook`), one raised by a `__del__` or a finalizer
    (`sys.unraisablehook`: a node output's `__del__`, run on the reaper thread)."""
    threading.excepthook = _thread_exception
    sys.unraisablehook = _unraisable_exception


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as Python's own hook: a thread's sys.exit() is its quiet end
    thread = args.thread.name if args.thread is not None else None
    _uncaught_log.error("thread_exception", thread=thread, **failure_fields(args.exc_value))


def _unraisable_exception(args: Any) -> None:  # (sys.UnraisableHookArgs)
    # The object's type only: its repr is user code, and may raise or block.
    _uncaught_log.error("unraisable_exception", message=args.err_msg or "Exception ignored",
                        object_type=type_name(args.object) if args.object is not None
                        else None, thread=threading.current_thread().name,
                        **failure_fields(args.exc_value))


#: `configure(deferred=True)`'s (fmt, level), until the first line has applied them. Read
#: unlocked on the way to each logger's first line: cleared only once structlog is set up,
#: so a thread that finds it None finds structlog configured.
_deferred: tuple[str, str] | None = None
_deferred_lock = threading.RLock()
_configuring = False
_FORMATS = ("json", "console")


def configure(*, fmt: str = "json", level: str = "info", deferred: bool = False) -> None:
    """Log lines of `fmt` ("json" or "console") at `level` and above, to stderr, for the
    program's structlog loggers and the standard library's (libraries' lines).

    `deferred`: structlog is imported and set up when the first line is logged (ours or a
    library's), not now; for a program that runs no user code, which would configure
    structlog with its own first line. Bad arguments raise ValueError now, either way."""
    global _deferred
    if fmt not in _FORMATS:
        raise ValueError(f"log format {fmt!r}: not one of {', '.join(_FORMATS)}")
    if level.upper() not in logging.getLevelNamesMapping():
        raise ValueError(f"log level {level!r}: not a level name")
    with _deferred_lock:
        if deferred:
            _deferred = (fmt, level)
            _route_stdlib_logging_later(logging.getLevelNamesMapping()[level.upper()])
        else:
            _deferred = None
            _configure_now(fmt, level)
    install_uncaught_hooks()


def _apply_deferred() -> None:
    global _deferred, _configuring
    with _deferred_lock:
        if _deferred is None or _configuring:  # (a line logged while configuring: as is)
            return
        _configuring = True
        try:
            _configure_now(*_deferred)
            _deferred = None  # (after: other threads wait on the lock until it is done)
        finally:
            _configuring = False


def _configure_now(fmt: str, level: str) -> None:
    import structlog

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
    import structlog

    handler = logging.StreamHandler(sys.stderr)
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
    _install_root_handler(handler, level)


def _install_root_handler(handler: logging.Handler, level: int) -> None:
    handler.set_name("tradeloom")
    root = logging.getLogger()
    # A new list, not the old one changed: a record being handled (the one `_FirstRecord`
    # applies the set-up for) goes on through the list it started with, every other
    # handler included.
    root.handlers = [h for h in root.handlers if h.get_name() != "tradeloom"] + [handler]
    root.setLevel(max(level, LIBRARY_LEVEL))


def _route_stdlib_logging_later(level: int) -> None:
    """Until a deferred `configure` is applied, a library's line applies it (which puts the
    real handler in this one's place) and is then handled as any later one. The level is
    the set-up's from the start: a line below it reaches no handler, as after the set-up."""
    _install_root_handler(_FirstRecord(), level)


class _FirstRecord(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _apply_deferred()
        for handler in logging.getLogger().handlers:
            if handler is not self and handler.get_name() == "tradeloom":
                handler.handle(record)  # (its own filter applies)


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
