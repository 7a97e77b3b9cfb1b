"""The CLI's client commands (README) against a live daemon in a subprocess, and against
none: exit codes (0 ok, 1 failed / not found, 2 bad input, 3 unreachable, 4 refused), one
line on stderr for every error and never a traceback, `--json` for machines, and every
emergency change asked by the CLI carrying `origin: "cli"`."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from actors.cli import build_parser
from tests.daemon_process import (
    TRADELOOM,
    DaemonProcess,
    LineReader,
    environment,
    read_endpoints,
    run_cli,
    running_daemon,
    write_config,
)
from tests.ports import free_port
from transport.cli_options import connect_endpoint
from transport.client import ClientKeys

EXECUTION_ID = re.compile(r"^exec_cli_ok_[0-9a-f]{8}$")
COMMANDS = {"run", "daemon", "keys", "status", "submit", "halt", "resume", "alert",
            "reduce-only", "tail", "executions", "show", "intents", "webhooks"}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path) as process:
        yield process


def one_error_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr == "", proc.stderr
    return proc.stdout


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(proc))


# -- help ----------------------------------------------------------------------------------

def test_every_command_has_help_with_an_example() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == COMMANDS
    assert "example" in parser.format_help()
    for name, command in sub.choices.items():
        text = command.format_help()
        assert "example" in text, name
        example = text.split("example", 1)[1]
        assert re.search(rf"tradeloom (--\S+ \S+ )*{name} ", example), (name, example)


# -- status, submit, show ------------------------------------------------------------------

def test_status_for_people_and_as_json(daemon: DaemonProcess) -> None:
    text = ok(daemon.cli("status"))
    assert "NORMAL" in text and "cli_ok" in text and "daily_loss" in text
    status = ok_json(daemon.cli("status", "--json"))
    assert status["state"] == "NORMAL"
    assert set(status["workflows"]) == {"cli_ok", "cli_fail", "cli_stuck", "cli_slow"}
    for key in ("running", "queued", "breakers", "limits", "last_seq", "uptime_s"):
        assert key in status
    assert status["heartbeat_s"] == 0.2  # the config's: clients judge silence by it


def test_status_reads_the_endpoints_from_the_config_file(daemon: DaemonProcess) -> None:
    status = ok_json(run_cli("status", "--json", "--config", str(daemon.config)))
    assert status["state"] == "NORMAL"


def test_submit_prints_the_execution_id_and_show_finds_it(daemon: DaemonProcess) -> None:
    execution_id = ok(daemon.cli("submit", "cli_ok", "--input", "n=21", "--input", "w=hi",
                                 "--bot-id", "bot_7", "--strategy-id", "s_1",
                                 "--priority", "3")).strip()
    assert EXECUTION_ID.match(execution_id), execution_id
    with daemon.client() as client:
        deadline = time.monotonic() + 20
        while client.execution(execution_id)["status"] != "completed":
            assert time.monotonic() < deadline, "not completed in 20 s"
            time.sleep(0.05)
    shown = ok_json(daemon.cli("show", execution_id, "--json"))
    assert shown["status"] == "completed"
    assert shown["results"]["echo"] == {"n": 21, "w": "hi"}  # JSON when it parses
    assert (shown["bot_id"], shown["strategy_id"], shown["priority"]) == ("bot_7", "s_1", 3)
    text = ok(daemon.cli("show", execution_id))
    assert execution_id in text and "completed" in text and "order" in text


def test_submit_wait_prints_the_result(daemon: DaemonProcess) -> None:
    text = ok(daemon.cli("submit", "cli_ok", "--input", "n=2", "--wait"))
    first, *rest = text.splitlines()
    assert EXECUTION_ID.match(first), text
    assert "completed" in rest[0]
    result = ok_json(daemon.cli("submit", "cli_ok", "--input", "n=3", "--wait", "--json"))
    assert EXECUTION_ID.match(result["execution_id"])
    assert result["status"] == "completed"
    assert result["results"]["echo"] == {"n": 3}
    assert result["results"]["order"] == {"order": f"{result['execution_id']}:order"}


def test_submit_wait_of_a_failing_execution_exits_1(daemon: DaemonProcess) -> None:
    proc = daemon.cli("submit", "cli_fail", "--wait", "--json")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    result = json.loads(proc.stdout)
    assert (result["status"], result["error_type"]) == ("failed", "ValueError")
    proc = daemon.cli("submit", "cli_fail", "--wait")
    assert proc.returncode == 1 and "ValueError" in proc.stdout, proc.stdout


def test_submit_wait_timeout_gives_up_but_timeout_does_not_bound_the_wait(
        daemon: DaemonProcess) -> None:
    started = time.monotonic()
    proc = daemon.cli("submit", "cli_slow", "--input", "seconds=30", "--wait",
                      "--wait-timeout", "1")
    one_error_line(proc, 1, "has not ended within 1 s")
    assert time.monotonic() - started < 1 + 10
    # --timeout bounds reaching the daemon, not the wait: a 2.5 s execution outlives it.
    result = ok_json(daemon.cli("submit", "cli_slow", "--input", "seconds=2.5", "--wait",
                                "--json", "--timeout", "1"))
    assert result["status"] == "completed"


def test_ctrl_c_while_waiting_exits_130_and_the_execution_goes_on(
        daemon: DaemonProcess) -> None:
    waiting = LineReader(["submit", "cli_slow", "--input", "seconds=3", "--wait",
                          *daemon.endpoints()])
    try:
        execution_id = waiting.wait_for(lambda lines: len(lines) >= 1)[0]
        code, stderr = waiting.interrupt()
    finally:
        waiting.kill()
    assert code == 130 and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and execution_id in stderr
    with daemon.client() as client:
        deadline = time.monotonic() + 20
        while client.execution(execution_id)["status"] != "completed":
            assert time.monotonic() < deadline, "the execution did not go on to its end"
            time.sleep(0.05)


def test_submit_wait_says_when_the_daemon_is_gone_and_goes_on_waiting(
        daemon: DaemonProcess) -> None:
    """`kill -9` of the daemon under a `submit --wait`: one line on stderr says the daemon
    does not answer (it would otherwise look like a slow execution), and it waits on."""
    waiting = LineReader(["submit", "cli_slow", "--input", "seconds=30", "--wait",
                          *daemon.endpoints()])
    notes = waiting.follow_stderr()
    try:
        execution_id = waiting.wait_for(lambda lines: len(lines) >= 1)[0]
        daemon.kill()
        deadline = time.monotonic() + 30
        while not notes:
            assert time.monotonic() < deadline, "nothing said of the daemon's silence"
            assert waiting.proc.poll() is None, "it stopped waiting"
            time.sleep(0.05)
        assert waiting.proc.poll() is None
    finally:
        waiting.kill()
    assert len(notes) == 1, notes
    assert notes[0].startswith("tradeloom submit: the daemon does not answer (nothing from "
                               "it for "), notes
    assert f"still waiting for {execution_id}" in notes[0]


def test_submit_errors(daemon: DaemonProcess) -> None:
    one_error_line(daemon.cli("submit", "no_such_flow"), 1, "unknown_workflow")
    one_error_line(daemon.cli("submit", "cli_ok", "--input", "novalue"), 2, "key=value")
    # NaN is not JSON: the string "NaN" (the daemon refuses a non-finite input:
    # tests/test_transport_control.py).
    assert EXECUTION_ID.match(ok(daemon.cli("submit", "cli_ok", "--input", "x=NaN")).strip())


# -- the kill switch -----------------------------------------------------------------------

def test_emergency_commands_and_refusals(daemon: DaemonProcess) -> None:
    assert "HALT (was NORMAL)" in ok(daemon.cli("halt", "--reason", "cli test"))
    one_error_line(daemon.cli("submit", "cli_ok"), 4, "halted")
    assert "NORMAL (was HALT)" in ok(daemon.cli("resume"))
    assert "ALERT" in ok(daemon.cli("alert", "--reason", "look"))
    with daemon.client() as client:  # push the auto_halt limit over: HALT, source risk_limit
        assert client.risk_update("daily_loss", value=150.0)["utilization"] == 1.5
        assert client.status()["state"] == "HALT"
    one_error_line(daemon.cli("resume", "--reason", "too early"), 4, "limit_exceeded")
    one_error_line(daemon.cli("alert", "--reason", "too early"), 4, "limit_exceeded")
    one_error_line(daemon.cli("submit", "cli_ok", "--wait"), 4, "halted")
    assert "REDUCE_ONLY (was HALT)" in ok(daemon.cli("reduce-only", "--reason", "close"))
    one_error_line(daemon.cli("resume"), 4, "limit_exceeded")
    assert "NORMAL (was REDUCE_ONLY)" in ok(daemon.cli("resume", "--force", "--reason", "ok"))
    assert ok_json(daemon.cli("status", "--json"))["state"] == "NORMAL"
    with daemon.client() as client:
        events = client.replay(1, limit=1000, topic_prefix="emergency/")["events"]
    changes = [(e["state"], e["origin"]) for e in events
               if e["type"] == "emergency_state_changed"]
    assert changes == [("HALT", "cli"), ("NORMAL", "cli"), ("ALERT", "cli"),
                       ("HALT", "engine"), ("REDUCE_ONLY", "cli"), ("NORMAL", "cli")]


def test_bad_arguments_are_one_line_and_exit_2() -> None:
    for command in (["halt"], ["alert"], ["reduce-only"], ["submit"], ["show"],
                    ["status", "--timeout", "0"], ["tail", "--since", "0"],
                    ["executions", "--status", "nope"], ["intents", "--outcome", "lost"]):
        one_error_line(run_cli(*command), 2, f"tradeloom {command[0]}: error:", "--help")
    one_error_line(run_cli("intents", "--resolve", "k"), 2, "--outcome")
    one_error_line(run_cli("intents", "--note", "n"), 2, "--resolve")
    # Past 64 bits the wire sent it as a string: "field 'priority' must be an integer, not str".
    one_error_line(run_cli("submit", "w", "--priority", str(2 ** 63)), 2, "--priority",
                   "2**63")


@pytest.mark.parametrize("flag,endpoint", [
    ("--control", "garbage"), ("--control", "tcp://127.0.0.1"),
    ("--control", "tcp://127.0.0.1:port"), ("--events", "udp://127.0.0.1:7450")])
def test_a_malformed_endpoint_is_one_line_and_exit_2(flag: str, endpoint: str) -> None:
    # zmq's connect said "Invalid argument" and the CLI exited 1 with "unexpected ZMQError".
    one_error_line(run_cli("status", flag, endpoint, "--timeout", "1"), 2, flag,
                   repr(endpoint))


@pytest.mark.parametrize("flag", ["--control", "--events", "--config"])
def test_an_empty_endpoint_or_config_is_refused_not_the_default(flag: str) -> None:
    """`--control "$PROD"` with PROD unset went to the local default daemon (and a halt
    there said HALT); it is a bad argument."""
    one_error_line(run_cli("status", flag, "", "--timeout", "1"), 2, f"{flag} ''")


def test_a_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    """`--config /dev/zero` read gigabytes; a FIFO waited for a writer past --timeout."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        one_error_line(run_cli("status", "--config", path, "--timeout", "1", timeout=20), 2,
                       "not a regular file")


def test_an_input_that_is_not_utf8_is_refused() -> None:
    pair = os.fsdecode(b"k=\xff")  # what a shell's $'k=\xff' reaches the command as
    one_error_line(run_cli("submit", "w", "--input", pair, "--timeout", "1"), 2, "--input",
                   "not UTF-8")


def test_text_the_terminal_cannot_show_is_escaped_not_a_crash(
        daemon: DaemonProcess) -> None:
    """An operator's halt reason with a euro sign failed `status` for everyone on an ASCII
    or latin-1 terminal (`unexpected UnicodeEncodeError`)."""
    ok(daemon.cli("halt", "--reason", "pause \u20ac"))
    proc = subprocess.run([*TRADELOOM, "status", *daemon.endpoints()], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**environment(), "PYTHONIOENCODING": "ascii"})
    assert "pause \\u20ac" in ok(proc)


def test_output_lost_to_a_full_disk_says_the_command_was_carried_out(
        daemon: DaemonProcess) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*TRADELOOM, "halt", "--reason", "full", *daemon.endpoints()],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                              env=environment(), check=False)
    assert proc.returncode == 1 and "may have been carried out" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert ok_json(daemon.cli("status", "--json"))["state"] == "HALT"


def test_the_stopping_log_line_tells_running_from_queued_ones_cancelled(
        tmp_path: Path) -> None:
    """It said `running` 500 where 5 ran and 495 were queued (counted after the queued
    ones were ended, through running slots)."""
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        "[daemon]\n", "[daemon]\nmax_concurrent_executions = 1\n", 1))
    daemon = DaemonProcess(config, *read_endpoints(config))
    daemon.start()
    try:
        with daemon.client() as client:
            for _ in range(4):
                client.submit("cli_slow", {"seconds": 5})  # (past the 2 s grace)
            status = client.status()
            assert (status["running"], status["queued"]) == (1, 3), status
        daemon.stop()
    finally:
        daemon.kill()
    lines = [json.loads(line) for line in daemon.log.read_text().splitlines()
             if line.startswith("{")]
    [stopping] = [line for line in lines if line["event"] == "daemon_stopping"]
    assert (stopping["running"], stopping["queued_cancelled"]) == (1, 3), stopping


def test_a_malformed_endpoint_in_the_config_names_its_key(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text('[transport]\ncontrol = "localhost"\n')
    one_error_line(run_cli("halt", "--reason", "r", "--config", str(config), "--timeout", "1"),
                   2, "transport.control", "'localhost'")


def test_a_config_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes(b'[transport]\ncontrol = "tcp://caf\xe9:7451"\n')
    one_error_line(run_cli("status", "--config", str(config), "--timeout", "1"), 2,
                   "not UTF-8")


def test_wildcard_bind_addresses_are_reached_on_loopback() -> None:
    assert connect_endpoint("tcp://0.0.0.0:7451") == "tcp://127.0.0.1:7451"
    assert connect_endpoint("tcp://*:7450") == "tcp://127.0.0.1:7450"
    assert connect_endpoint("tcp://[::]:7450") == "tcp://[::1]:7450"
    assert connect_endpoint("tcp://10.1.2.3:7451") == "tcp://10.1.2.3:7451"
    assert connect_endpoint("ipc:///tmp/tradeloom.sock") == "ipc:///tmp/tradeloom.sock"


# -- history -------------------------------------------------------------------------------

def test_executions_newest_first_with_filters(daemon: DaemonProcess) -> None:
    first = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
    failed = json.loads(daemon.cli("submit", "cli_fail", "--wait", "--json").stdout)
    last = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
    rows = ok_json(daemon.cli("executions", "--json"))
    assert [r["execution_id"] for r in rows] == [last, failed["execution_id"], first]
    assert {"workflow_id", "status", "started_at", "ended_at", "duration_ms"} <= set(rows[0])
    only_ok = ok_json(daemon.cli("executions", "--json", "--workflow", "cli_ok"))
    assert [r["execution_id"] for r in only_ok] == [last, first]
    failures = ok_json(daemon.cli("executions", "--json", "--status", "failed"))
    assert [r["execution_id"] for r in failures] == [failed["execution_id"]]
    assert len(ok_json(daemon.cli("executions", "--json", "--limit", "1"))) == 1
    text = ok(daemon.cli("executions"))
    assert all(i in text for i in (first, last)) and "failed" in text


def test_show_of_an_unknown_execution_exits_1(daemon: DaemonProcess) -> None:
    one_error_line(daemon.cli("show", "exec_cli_ok_00000000"), 1, "not_found")


def test_intents_list_and_resolve(daemon: DaemonProcess) -> None:
    stuck = json.loads(daemon.cli("submit", "cli_stuck", "--wait", "--json").stdout)
    assert stuck["error_type"] == "NodeTimeout"
    key = f"{stuck['execution_id']}:order"
    with daemon.client() as client:  # the late result is recorded; the outcome stays open
        deadline = time.monotonic() + 20
        while not any(i["idempotency_key"] == key and i.get("detail") is not None
                      for i in client.intents()):
            assert time.monotonic() < deadline, "no late result recorded in 20 s"
            time.sleep(0.05)
    open_intents = ok_json(daemon.cli("intents", "--json"))
    assert [(i["idempotency_key"], i["outcome"]) for i in open_intents] == [(key, None)]
    assert key in ok(daemon.cli("intents"))
    resolved = ok_json(daemon.cli("intents", "--resolve", key, "--outcome", "not_filled",
                                  "--note", "not on the exchange", "--json"))
    assert resolved == {"idempotency_key": key, "outcome": "not_filled"}
    assert ok_json(daemon.cli("intents", "--json")) == []
    assert "no unresolved intents" in ok(daemon.cli("intents"))
    every = ok_json(daemon.cli("intents", "--all", "--json"))
    assert (key, "not_filled") in [(i["idempotency_key"], i["outcome"]) for i in every]
    one_error_line(daemon.cli("intents", "--resolve", "exec_x_00000000:nope", "--outcome",
                              "filled"), 1, "not_found")
    one_error_line(daemon.cli("intents", "--resolve", key), 2, "--outcome")


# -- no daemon -----------------------------------------------------------------------------

UNREACHABLE_COMMANDS = [
    ["status"], ["status", "--json"], ["submit", "cli_ok"], ["submit", "cli_ok", "--wait"],
    ["halt", "--reason", "r"], ["resume"], ["alert", "--reason", "r"],
    ["reduce-only", "--reason", "r"], ["tail"], ["tail", "--since", "1", "--json"],
    ["executions"], ["show", "exec_cli_ok_00000000"], ["intents"],
    ["intents", "--resolve", "k", "--outcome", "filled"],
]


def test_every_client_command_without_a_daemon_exits_3_within_the_timeout() -> None:
    nowhere = ["--control", f"tcp://127.0.0.1:{free_port()}",
               "--events", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5"]

    def attempt(command: list[str]) -> tuple[list[str], float, subprocess.CompletedProcess[str]]:
        started = time.monotonic()
        proc = run_cli(*command, *nowhere, timeout=30)
        return command, time.monotonic() - started, proc

    with ThreadPoolExecutor(max_workers=2) as pool:
        for command, took, proc in pool.map(attempt, UNREACHABLE_COMMANDS):
            line = one_error_line(proc, 3, "unreachable")
            assert took < 0.5 + 3, (command, took, line)


def test_the_default_timeout_is_5_s() -> None:
    started = time.monotonic()
    proc = run_cli("status", "--control", f"tcp://127.0.0.1:{free_port()}", timeout=30)
    took = time.monotonic() - started
    one_error_line(proc, 3, "within 5 s")
    assert 5 <= took < 5 + 3, took


def test_bad_client_options_are_one_line_and_exit_2(tmp_path: Path) -> None:
    one_error_line(run_cli("status", "--config", str(tmp_path / "missing.toml")), 2,
                   "missing.toml")
    one_error_line(run_cli("status", "--curve-secret-key", str(tmp_path / "k")), 2,
                   "--curve-server-key")
    proc = run_cli("status", "--timeout", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# -- CURVE ---------------------------------------------------------------------------------

def test_curve_keys_from_the_client_config_or_the_flags(tmp_path: Path) -> None:
    """docs/protocol.md section 5 as written: `tradeloom keys`, the daemon's
    curve_* keys, and the client's [client] keys or --curve-secret-key/--curve-server-key."""
    keys, authorized = tmp_path / "keys", tmp_path / "keys" / "authorized"
    for name in ("daemon", "operator"):
        ok(run_cli("keys", str(keys), "--name", name))
    authorized.mkdir()
    shutil.copy(keys / "operator.key", authorized / "operator.key")
    curve = (f'curve_secret_key_file = "{keys / "daemon.key_secret"}"\n'
             f'curve_authorized_keys_dir = "{authorized}"')
    operator = ClientKeys(keys / "operator.key_secret", keys / "daemon.key")
    with running_daemon(tmp_path / "d", keys=operator, transport_extra=curve) as daemon:
        client_config = tmp_path / "client.toml"
        client_config.write_text(
            f'[transport]\ncontrol = "{daemon.control}"\nevents = "{daemon.events}"\n'
            f'[client]\ncurve_secret_key_file = "{keys / "operator.key_secret"}"\n'
            f'curve_server_public_key_file = "{keys / "daemon.key"}"\n')
        assert ok_json(run_cli("status", "--json", "--config", str(client_config)))
        flags = ["--curve-secret-key", str(keys / "operator.key_secret"),
                 "--curve-server-key", str(keys / "daemon.key")]
        result = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json", *flags))
        assert result["status"] == "completed"  # the subscriber uses the keys too
        one_error_line(daemon.cli("status", "--timeout", "1"), 3, "unreachable")


# -- make run ------------------------------------------------------------------------------

def test_the_make_run_config_serves_status_and_completed_executions(tmp_path: Path) -> None:
    """examples/daemon.toml as `make run` starts it, from a copy of the examples (so an
    installed `examples` package would not be used), with a tmp data_dir and free ports, and
    from another working directory: the config's package parent is on sys.path."""
    source = Path(__file__).resolve().parents[1] / "examples"
    copy = tmp_path / "checkout" / "examples"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "daemon.toml"
    text, replaced = re.subn(r'(?m)^data_dir = "[^"]*"', f'data_dir = "{tmp_path / "data"}"',
                             config.read_text())
    assert replaced == 1
    control, events = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    text, replaced = re.subn(r'(?m)^(events|control) = "tcp://127\.0\.0\.1:\d+"',
                             lambda m: f'{m[1]} = "{events if m[1] == "events" else control}"',
                             text)
    assert replaced == 2, "examples/daemon.toml keeps its sockets on 127.0.0.1"
    config.write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    daemon = DaemonProcess(config, control, events, cwd=elsewhere, log_format="console")
    daemon.start()
    try:
        status = ok_json(daemon.cli("status", "--json"))
        assert status["state"] == "NORMAL" and "arb_btc" in status["workflows"]
        deadline = time.monotonic() + 60
        while not ok_json(daemon.cli("executions", "--json", "--status", "completed")):
            assert time.monotonic() < deadline, "no completed execution within 60 s"
            time.sleep(0.5)
        assert ok_json(daemon.cli("status", "--json"))["state"] == "NORMAL"
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()
    log = daemon.log.read_text()
    assert f"tradeloom tail --config {config}" in log
    assert not (elsewhere / ".tradeloom").exists()


def test_the_banner_of_a_daemon_on_os_picked_ports_names_them_and_a_command_that_connects(
        tmp_path: Path) -> None:
    """`*` ports: the console banner said `events tcp://127.0.0.1:*` and suggested
    `tail --config FILE`, which cannot connect to a `*` port (exit 2)."""
    config = write_config(tmp_path)
    config.write_text(re.sub(r'tcp://127\.0\.0\.1:\d+', "tcp://127.0.0.1:*", config.read_text()))
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*TRADELOOM, "--log-format", "console", "daemon", "--config",
                                 str(config)], env=environment(), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "second terminal:" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no banner within 30 s"
            time.sleep(0.05)
        banner = log.read_text()
        assert ":*" not in banner
        command = shlex.split(banner.split("second terminal:", 1)[1].splitlines()[0])
        assert Path(command[0]).name == "tradeloom" and command[1] == "tail", command
        assert "--control" in command and "--events" in command, command
        status = run_cli("status", "--json", *command[2:], timeout=30)
        assert ok_json(status)["state"] == "NORMAL"
        assert command[command.index("--control") + 1] in banner  # the banner's own
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_a_daemon_that_comes_back_halted_says_so_in_its_banner(tmp_path: Path) -> None:
    """A restart keeps a HALT: the console banner says so (and how to leave it), where it
    said only "running" and the interval runs were refused without a word."""
    config = write_config(tmp_path)
    daemon = DaemonProcess(config, *read_endpoints(config), log_format="console")
    daemon.start()
    try:
        # (an escape in an operator's reason is shown as one, never run on the terminal)
        assert daemon.cli("halt", "--reason", "desk closed\x1b[2J").returncode == 0
        daemon.stop()
        first = daemon.log.read_text()
        daemon.start()
        banner = daemon.log.read_text()[len(first):]
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()
    assert "running" in first and "It is in HALT" not in first
    assert "It is in HALT (desk closed\\x1b[2J): nothing runs until `tradeloom resume" in banner
