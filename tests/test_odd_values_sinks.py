"""Odd values from user code and operators, at the places they are shown or sent (the CLI's
views, `--json` output): each one contained, none styling the terminal or corrupting the
view of another event.

A daemon in a subprocess runs a workflow whose node returns NaN/inf, an int past 64 bits
and strings holding ANSI escapes, rich markup and newlines, and whose next node raises an
exception with such a message; the execution's `bot_id` and a halt's reason hold them too.
"""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from rich.console import Console, Group
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from actors import Config, Engine, Node, NodeContext, Workflow
from actors.web_config import WebConfig
from tests.conftest import EngineFactory
from tests.daemon_process import DaemonProcess, LineReader, read_endpoints, write_config
from tests.engine_journal_helpers import journal_config
from transport.tail_view import StatusHeader, event_line
from transport.web.gateway import WebGateway

#: Clears the screen, retitles the window, rings, then looks like markup and a new event.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07[red]x[/red]\n    999  12:00:00.000  fake_event"
ODD_WORKFLOW = textwrap.dedent(f"""
    HOSTILE = {HOSTILE!r}

    def odd_outputs(ctx):
        return {{b"raw": "a bytes key", "nan": float("nan"), "inf": float("-inf"),
                "big": 2**70, "text": HOSTILE}}

    def loud(ctx):
        raise RuntimeError(HOSTILE + "\\n" + "x" * 300)

    odd = Workflow("cli_odd", nodes=[
        Node("odd", odd_outputs, category="provider"),
        Node("loud", loud, depends_on=["odd"]),
    ])
""")
WEB_TOKEN = "test-token-0123456789"
INJECTED = ("\x1b[2J", "\x1b]0;", "\x07")


def no_control(text: str) -> bool:
    return not any(code in text for code in INJECTED)


def strict_json(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"not JSON: {constant} in {line[:200]}")
    return json.loads(line, parse_constant=refuse)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon whose journal holds a failed `cli_odd` execution (bot_id HOSTILE) and a
    HALT whose reason is HOSTILE."""
    directory = tmp_path_factory.mktemp("odd_daemon")
    config = write_config(directory)
    with (directory / "cli_daemon_wf.py").open("a") as module:
        module.write(ODD_WORKFLOW)
    with config.open("a") as toml:
        toml.write('[[workflows]]\nref = "cli_daemon_wf:odd"\n'
                   '[[emergency.limits]]\nname = "lim\\u001b]0;pwned\\u0007"\n'
                   'kind = "custom"\nthreshold = 5.0\n')
    process = DaemonProcess(config, *read_endpoints(config))
    process.start()
    try:
        failed = process.cli("submit", "cli_odd", "--bot-id", HOSTILE, "--wait", "--json")
        assert failed.returncode == 1, (failed.stdout, failed.stderr)
        for_people = process.cli("submit", "cli_odd", "--wait")  # its result, for people
        assert for_people.returncode == 1, for_people.stderr
        (directory / "submit_for_people.txt").write_text(for_people.stdout)
        halted = process.cli("halt", "--reason", HOSTILE)
        assert halted.returncode == 0, halted.stderr
        yield process
        process.stop()
    finally:
        process.kill()


@pytest.fixture(scope="module")
def history(daemon: DaemonProcess) -> list[dict[str, Any]]:
    with daemon.client() as client:
        events: list[dict[str, Any]] = client.replay(1, limit=1000)["events"]
    assert any(e["type"] == "emergency_state_changed" for e in events)
    return events


def tail_lines(daemon: DaemonProcess, count: int, *args: str) -> list[str]:
    tail = LineReader(["tail", "--since", "1", *args, *daemon.endpoints()])
    try:
        lines = tail.wait_for(lambda lines: len(lines) >= count)
    finally:
        tail.kill()
    return lines


def test_tail_for_people_shows_escapes_and_newlines_in_values_as_text(
        daemon: DaemonProcess, history: list[dict[str, Any]]) -> None:
    lines = tail_lines(daemon, len(history))
    assert all(no_control(line) for line in lines), [line for line in lines if
                                                     not no_control(line)]
    assert [line.split()[0] for line in lines[:len(history)]] == [
        str(event["seq"]) for event in history]  # one line per event: no forged line
    halt_line = next(line for line in lines if "emergency_state_changed" in line)
    assert "\\x1b[2J\\x1b]0;pwned\\x07[red]x[/red]\\n" in halt_line
    failed_line = next(line for line in lines if "node_failed" in line)
    assert "RuntimeError: \\x1b[2J" in failed_line
    completed_line = next(line for line in lines if "node_completed" in line)
    assert '"b\'raw\'": "a bytes key"' in completed_line  # a bytes key as its repr


def test_tail_on_a_terminal_renders_values_literally(
        daemon: DaemonProcess, history: list[dict[str, Any]]) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=400,
                      highlight=False)
    header = StatusHeader()
    with daemon.client() as client:
        header.update(client.status())  # a limit named with escapes, the halt's reason
    for event in history:
        header.on_event(event)
    console.print(Group(*(event_line(event) for event in history)))  # as tail does
    console.print(header)
    text = out.getvalue()
    assert no_control(text), repr(text[:2000])
    assert text.count("\n") == len(history) + 2  # one line per event, two for the header
    assert "[red]x[/red]" in text  # markup shown, not applied


def test_show_status_executions_and_submit_print_control_characters_as_escapes(
        daemon: DaemonProcess, history: list[dict[str, Any]]) -> None:
    execution_id = next(e["execution_id"] for e in history if e["type"] == "node_failed")
    show = daemon.cli("show", execution_id)
    status = daemon.cli("status")
    executions = daemon.cli("executions")
    for done in (show, status, executions):
        assert done.returncode == 0, done.stderr
        assert no_control(done.stdout), repr(done.stdout)
    assert "\\x1b[2J" in show.stdout and "\\x1b[2J" in status.stdout
    assert '"b\'raw\'": "a bytes key"' in show.stdout
    submitted = (daemon.config.parent / "submit_for_people.txt").read_text()
    assert no_control(submitted) and "RuntimeError: \\x1b[2J" in submitted, submitted
    rows = show.stdout.splitlines()
    assert sum(line.startswith(("  odd ", "  loud ")) for line in rows) == 2
    assert not any(line.lstrip().startswith("999") for line in rows), rows  # no forged line


def test_json_output_is_strict_json_with_non_finite_floats_as_strings(
        daemon: DaemonProcess, history: list[dict[str, Any]]) -> None:
    lines = tail_lines(daemon, len(history), "--json")
    events = [strict_json(line) for line in lines]
    completed = next(e for e in events if e["type"] == "node_completed")
    assert completed["outputs"] == {"nan": "nan", "inf": "-inf", "big": str(2**70),
                                    "text": HOSTILE, "b'raw'": "a bytes key"}
    execution_id = completed["execution_id"]
    shown = daemon.cli("show", execution_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert strict_json(shown.stdout)["nodes"]["odd"]["outputs"]["nan"] == "nan"


# -- the journal ---------------------------------------------------------------------------

def test_a_tuple_key_beside_a_lone_surrogate_keeps_the_journal_writing(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """A value msgpack refuses (a lone surrogate) sends the journal to its slow path; a
    tuple key in the same inputs or outputs must not stop the writer there."""
    engine = make_engine(journal_config(tmp_path))
    odd = {"text": "a\ud800b", "m": {(1, 2): "x"}}
    flow = Workflow("tk", nodes=[Node("n", lambda ctx: dict(odd), category="provider")])
    first = engine.submit(flow, odd).result(10)
    assert first.status == "completed"
    second = engine.submit(flow, {"plain": 1}).result(10)  # the writer still writes
    expected = {"text": "a?b", "m": {"(1, 2)": "x"}}
    record = engine.execution(first.execution_id)
    assert record is not None and record["status"] == "completed"
    assert record["inputs"] == expected and record["results"]["n"] == expected
    assert (engine.execution(second.execution_id) or {}).get("status") == "completed"


@contextlib.contextmanager
def journaled_gateway(tmp_path: Path) -> Iterator[tuple[Engine, WebGateway]]:
    """An engine with its journal on and a web gateway over it, both stopped after."""
    engine = Engine.start(Config.from_dict({"daemon": {"data_dir": str(tmp_path / "data")}}))
    gateway = WebGateway(WebConfig(listen="127.0.0.1:0"), engine,
                         env={"TRADELOOM_WEB_TOKEN": WEB_TOKEN})
    gateway.start()
    try:
        yield engine, gateway
    finally:
        gateway.stop()
        engine.stop(timeout=5.0)


def test_a_lone_surrogate_in_a_halt_reason_from_a_browser_is_committed(
        tmp_path: Path) -> None:
    """JSON's `\\ud800` escape decodes to a lone surrogate, which SQLite cannot take as
    text: the halt must still be committed and answered, the reason stored replaced."""
    with journaled_gateway(tmp_path) as (engine, gateway):
        with connect(gateway.ws_url) as ws:
            ws.send(json.dumps({"token": WEB_TOKEN}))
            assert json.loads(ws.recv(timeout=20))["msg"] == "welcome"
            ws.send(json.dumps({"id": 1, "op": "halt", "reason": "a\ud800b"}))
            reply = next(m for m in iter(lambda: json.loads(ws.recv(timeout=20)), None)
                         if m["msg"] == "reply")
        assert reply["ok"], reply
        assert engine.journal_flush(20)
        [change] = [e for e in engine.replay(1)["events"]
                    if e["type"] == "emergency_state_changed"]
        assert change["reason"] == "a?b"
        assert engine.emergency_history()[-1]["state"] == "HALT"


def test_lone_surrogates_in_bot_id_strategy_id_and_a_node_error_are_committed(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))

    def fail(ctx: NodeContext) -> None:
        raise ValueError("bad name: " + b"\xff".decode(errors="surrogateescape"))

    flow = Workflow("sg", nodes=[Node("n", fail)])
    result = engine.submit(flow, bot_id="b\ud800", strategy_id="s\udfff").result(10)
    assert result.status == "failed"
    record = engine.execution(result.execution_id)
    assert record is not None and record["status"] == "failed"
    assert (record["bot_id"], record["strategy_id"]) == ("b?", "s?")
    assert record["nodes"]["n"]["error"] == "bad name: ?"


# -- logs ----------------------------------------------------------------------------------

@contextlib.contextmanager
def logs_to_a_strict_utf8_stream() -> Iterator[io.BytesIO]:
    """structlog's default output (a PrintLogger on stdout, whose encoding errors are
    strict on a UTF-8 terminal), every level: what an embedding program that configured
    nothing gets."""
    old = structlog.get_config()
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(stream),
                        wrapper_class=structlog.make_filtering_bound_logger(0))
    try:
        yield raw
    finally:
        structlog.configure(**old)


def test_a_lone_surrogate_in_an_error_or_a_halt_reason_is_logged_not_raised(
        make_engine: EngineFactory) -> None:
    """Logging such a value must not raise inside the engine: a failed node's execution
    still ends, and a halt still reaches the running executions."""
    engine = make_engine()
    started = threading.Event()

    def fail(ctx: NodeContext) -> None:
        raise ValueError("bad_name:" + b"\xff".decode(errors="surrogateescape"))

    def wait(ctx: NodeContext) -> None:
        started.set()
        ctx.cancelled.wait(20)

    with logs_to_a_strict_utf8_stream() as out:
        failed = engine.submit(Workflow("sg", nodes=[Node("n", fail)])).result(10)
        running = engine.submit(Workflow("long", nodes=[Node("n", wait, timeout_s=30)]))
        assert started.wait(10)
        assert engine.halt("stop\udcff")["state"] == "HALT"
        halted = running.result(10)
        logged = out.getvalue()
    assert failed.status == "failed", failed
    assert halted.status == "halted"
    assert b"bad_name:?" in logged and b"stop?" in logged, logged


# -- the web gateway -----------------------------------------------------------------------

def test_a_token_with_a_lone_surrogate_is_unauthorized_not_an_internal_error(
        tmp_path: Path) -> None:
    with journaled_gateway(tmp_path) as (_, gateway):
        with connect(gateway.ws_url) as ws:
            ws.send(json.dumps({"token": "\ud800"}))  # sent as the escape "\ud800"
            refused = json.loads(ws.recv(timeout=20))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=20)
        assert refused["error"]["code"] == "unauthorized", refused
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
