"""The engine's loggers never raise into the work they describe (`actors.logs.SafeLogger`),
and the program's hooks turn uncaught exceptions into log lines of its own form."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import pytest
import structlog

from actors import Engine, Node, Workflow
from actors.logs import dropped_lines, get_logger
from tests.daemon_fixture import ROOT, child_env


class Refused(Exception):
    pass


def refusing_processor(logger: Any, method: str,
                       event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    raise Refused("a logging set-up that raises")


@pytest.fixture
def raising_logging() -> Iterator[None]:
    """structlog configured (as user code might) with a processor that raises."""
    before = structlog.get_config()
    # Every level reaches the processors (the suite's own set-up filters below ERROR).
    structlog.configure(processors=[refusing_processor], wrapper_class=structlog.BoundLogger)
    try:
        yield
    finally:
        structlog.configure(**before)


def test_a_log_call_that_fails_is_dropped_and_counted_not_raised(
        raising_logging: None) -> None:
    log = get_logger("tradeloom.test")
    before = dropped_lines()
    log.warning("emergency_state_changed", state="HALT")
    log.bind(execution_id="e1").error("control_op_failed", op="halt")
    try:
        raise ValueError("inner")
    except ValueError:
        log.exception("with_a_traceback")
    assert dropped_lines() == before + 3


def test_any_field_names_reach_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's own parameters are positional-only: a line with a field named like one
    of them (`method=` of an HTTP request) is logged, not a TypeError in the caller."""
    with structlog.testing.capture_logs() as logs:
        log = get_logger("tradeloom.test")
        log.error("request_failed", method="GET", fn="f", fallback=1, args=2, fields=3)
        log.bind(method="POST").error(event="bound_line")
    assert [(e["event"], e["method"]) for e in logs] == [("request_failed", "GET"),
                                                         ("bound_line", "POST")]
    assert logs[0]["fn"] == "f" and logs[0]["fallback"] == 1


def test_a_processor_raising_a_base_exception_is_contained_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def exits(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        raise SystemExit(3)

    before = structlog.get_config()
    structlog.configure(processors=[exits], wrapper_class=structlog.BoundLogger)
    try:
        count = dropped_lines()
        get_logger("tradeloom.test").info("daemon_stopping")
        assert dropped_lines() == count + 1
    finally:
        structlog.configure(**before)


def test_a_node_whose_log_line_fails_still_completes(raising_logging: None) -> None:
    """`ctx.log` is user code's logger: a line it cannot write must not fail an action that
    ran (its order is out; a failed node would say it is not)."""
    def order(ctx: Any) -> dict[str, str]:
        ctx.log.info("order_sent", key=ctx.idempotency_key)
        # The rest of structlog's bound-logger methods, and the loggers some return:
        ctx.log.msg("order_sent")
        ctx.log.warn("order_slow")
        ctx.log.new(venue="x").info("order_sent")
        ctx.log.try_unbind("attempt").bind(leg=2).warning("order_sent")
        return {"order": ctx.idempotency_key}

    engine = Engine.start()
    try:
        wf = Workflow("logged", nodes=[Node("order", order, category="action")])
        result = engine.submit(wf).result(timeout=10)
        assert result.status == "completed", result.error
        assert result.results["order"]["order"].endswith(":order")
    finally:
        engine.stop(timeout=5)


CHILD = textwrap.dedent("""
    import threading
    from actors.logs import configure

    configure(fmt="json")

    class Leaky:
        def __del__(self):
            raise RuntimeError("from a __del__")

    def crash():
        raise ValueError("from a user thread")

    thread = threading.Thread(target=crash, name="user-thread")
    thread.start()
    thread.join()
    Leaky()  # dropped at once: its __del__ raises
    threading.Thread(target=lambda: exit(3)).start()  # a thread's SystemExit: quiet
""")


def test_uncaught_exceptions_are_json_lines_of_their_own() -> None:
    """Python's default hooks printed multi-line tracebacks into the JSON-lines stream."""
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    by_event = {line["event"]: line for line in lines}
    assert set(by_event) == {"thread_exception", "unraisable_exception"}, lines
    thread = by_event["thread_exception"]
    assert (thread["thread"], thread["error_type"], thread["error"]) == (
        "user-thread", "ValueError", "from a user thread")
    assert "Traceback" in thread["traceback"] and thread["level"] == "error"
    unraisable = by_event["unraisable_exception"]
    assert (unraisable["object_type"], unraisable["error_type"], unraisable["error"]) == (
        "function", "RuntimeError", "from a __del__")


#: A fresh interpreter: `configure(deferred=True)`, then the first lines, in the order given.
DEFERRED_CHILD = textwrap.dedent("""
    import json, logging, sys
    from actors import logs

    logs.configure(fmt="json", level="warning", deferred=True)
    log = logs.get_logger("tradeloom.test")
    print(json.dumps({"structlog_before": "structlog" in sys.modules}), flush=True)
    lines = {
        "library": lambda: logging.getLogger("some.library").warning("a library's line %s", 1),
        "ours": lambda: log.warning("ours", key="value"),
    }
    for which in sys.argv[1:]:
        lines[which]()
    log.info("below the level")
    logging.getLogger("some.library").info("below the library level")
    print(json.dumps({"structlog_after": "structlog" in sys.modules}), flush=True)
""")


@pytest.mark.parametrize("order", [["library", "ours"], ["ours", "library"]])
def test_a_deferred_configure_loads_structlog_at_the_first_line_and_formats_every_line(
        order: list[str]) -> None:
    """`tradeloom status` starts without structlog (~0.25 s); a line it does log, ours or a
    library's first, is still a JSON line at the level asked for."""
    done = subprocess.run([sys.executable, "-c", DEFERRED_CHILD, *order], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"structlog_before": False}, {"structlog_after": True}]
    lines = {line["event"]: line for line in map(json.loads, done.stderr.splitlines())}
    assert list(lines) == [{"library": "a library's line 1", "ours": "ours"}[which]
                           for which in order], done.stderr
    assert {line["level"] for line in lines.values()} == {"warning"}
    assert lines["a library's line 1"]["logger"] == "some.library"
    assert lines["ours"]["key"] == "value"


def test_configure_now_replaces_a_deferred_one() -> None:
    """The daemon configures at once; a deferred set-up left from before does not come back
    at its first line to replace it."""
    code = textwrap.dedent("""
        from actors import logs
        logs.configure(fmt="console", level="warning", deferred=True)
        logs.configure(fmt="json", level="info")
        logs.get_logger("tradeloom.test").info("ours")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event"] for line in done.stderr.splitlines()] == ["ours"]


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_a_first_line_logged_while_another_sets_structlog_up_waits_for_it() -> None:
    """Two threads' first lines at once: the second must not find the set-up half done and
    log with structlog's defaults (console lines on stdout, inside `tail --json`'s data)."""
    done = run_child("""
        import threading
        from actors import logs

        entered, release = threading.Event(), threading.Event()
        configure_now = logs._configure_now

        def held(fmt, level):  # the first line's set-up, held open
            entered.set()
            release.wait(10)
            configure_now(fmt, level)

        logs._configure_now = held
        logs.configure(fmt="json", level="info", deferred=True)
        first = threading.Thread(target=lambda: logs.get_logger("a").info("first"))
        first.start()
        assert entered.wait(10)
        second = threading.Thread(target=lambda: logs.get_logger("b").info("second"))
        second.start()
        second.join(0.5)  # (it waits for the set-up: this times out)
        print("second done before the set-up:", not second.is_alive(), flush=True)
        release.set()
        first.join(10), second.join(10)
    """)
    assert done.stdout == "second done before the set-up: False\n"
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert sorted(line["event"] for line in lines) == ["first", "second"]


def test_the_library_line_that_sets_logging_up_meets_its_level_and_every_handler() -> None:
    """At `--log-level error`, a library's WARNING that applies the deferred set-up is below
    it; a program's own root handler still gets that first record, and ours once."""
    done = run_child("""
        import logging
        from actors import logs

        logs.configure(fmt="json", level="error", deferred=True)
        seen = []

        class Own(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())

        logging.getLogger().addHandler(Own())
        logging.getLogger("lib").warning("below error")
        logging.getLogger("lib").error("an error")
        logging.getLogger("lib").error("another")
        print(seen, flush=True)
    """)
    assert done.stdout == "['an error', 'another']\n"
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["an error", "another"], lines
    assert not [line for line in lines if "suppressed" in line]


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize(("fmt", "level", "says"), [
    ("yaml", "info", "log format 'yaml'"), ("json", "verbose", "log level 'verbose'")])
def test_bad_arguments_to_configure_raise_at_once(deferred: bool, fmt: str, level: str,
                                                  says: str) -> None:
    """A deferred set-up must not turn a bad level into lines lost at the first one."""
    from actors import logs

    with pytest.raises(ValueError, match=says):
        logs.configure(fmt=fmt, level=level, deferred=deferred)
