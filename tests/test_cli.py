"""The `tradeloom run` command (README), run as a real subprocess on a tiny workflow
module written into tmp_path: exit 0 when the execution completed, 1 when it failed, 2 with
one line on stderr (never a traceback) for a bad ref, a bad --input or a bad config.
`--input k=v` values are JSON when they parse, else strings; `--json` prints one JSON object
per line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

MODULE = textwrap.dedent("""
    from actors import Node, Workflow

    def echo(ctx):
        return dict(ctx.inputs)

    def double(ctx):
        return ctx.upstream["echo"].get("n", 0) * 2

    def boom(ctx):
        raise ValueError("boom from the cli test")

    workflow = Workflow("cli_ok", nodes=[
        Node("echo", echo, category="provider"),
        Node("double", double, depends_on=["echo"]),
    ])
    failing = Workflow("cli_fail", nodes=[
        Node("echo", echo, category="provider"),
        Node("boom", boom, depends_on=["echo"]),
        Node("never", echo, depends_on=["boom"]),
    ])
    not_a_workflow = 42

    def odd(ctx):
        raise ValueError("\\x1b[2J\\x1b]0;pwned\\x07 and a\\nforged line")

    def nan(ctx):
        return {"x": float("nan")}

    def bytes_key(ctx):
        return {b"k": 1}

    odd_error = Workflow("cli_odd", nodes=[Node("odd", odd)])
    odd_key = Workflow("cli_key", nodes=[Node("bk", bytes_key)])
    odd_value = Workflow("cli_nan", nodes=[Node("nan", nan)])
""")

BIN = Path(sys.executable).parent / "tradeloom"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "cliwf.py").write_text(MODULE)
    (tmp_path / "clibroken.py").write_text("raise RuntimeError('broken at import')\n")
    (tmp_path / "clisyntax.py").write_text("def nope(:\n")
    return tmp_path


def cli_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(workdir), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    return env


def tradeloom(workdir: Path, *args: str, console_script: bool = False,
              timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    command = [str(BIN)] if console_script else [sys.executable, "-m", "actors.cli"]
    return subprocess.run([*command, *args], cwd=workdir, env=cli_env(workdir),
                          capture_output=True, text=True, timeout=timeout, check=False)


def tradeloom_running(workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m actors.cli *args` left running, its stdout and stderr piped. Unbuffered:
    `communicate()` reads the pipes' file descriptors, so what a buffered `readline()` had
    read ahead would be lost to it (a line cut in two: a flaky JSON error)."""
    return subprocess.Popen([sys.executable, "-m", "actors.cli", *args], cwd=workdir,
                            env=cli_env(workdir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    lines = stdout.splitlines()
    assert lines, "nothing on stdout"
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) for o in objects)
    return objects


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- success and failure -------------------------------------------------------------------

def test_run_completed_workflow_exits_0_and_prints_json_lines(workdir: Path) -> None:
    proc = tradeloom(workdir, "run", "cliwf:workflow", "--json", "--input", "n=21",
                     console_script=BIN.exists())
    assert proc.returncode == 0, proc.stderr
    objects = json_lines(proc.stdout)
    events = [o for o in objects if "type" in o]
    types = [e["type"] for e in events]
    assert types[0] == "execution_started"
    assert types[-1] == "execution_completed"
    assert types.count("node_completed") == 2
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    execution_id = events[0]["execution_id"]
    assert execution_id.startswith("exec_cli_ok_")
    assert all(e["execution_id"] == execution_id for e in events)
    assert events[-1]["status"] == "completed"
    assert events[-1]["results"] == {"echo": {"n": 21}, "double": 42}
    # The result follows the events, as one more JSON object.
    summary = objects[-1]
    assert summary.get("status") == "completed"
    assert summary.get("execution_id") == execution_id


def test_run_failed_workflow_exits_1(workdir: Path) -> None:
    proc = tradeloom(workdir, "run", "cliwf:failing", "--json")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    objects = json_lines(proc.stdout)
    terminal = [o for o in objects if o.get("type") == "execution_failed"]
    assert len(terminal) == 1
    assert terminal[0]["status"] == "failed" and terminal[0]["error_type"] == "ValueError"
    skipped = [o for o in objects if o.get("type") == "node_skipped"]
    assert [(o["node_id"], o["reason"]) for o in skipped] == [("never", "upstream_failed")]
    assert objects[-1].get("status") == "failed"
    # For people: the result line, and no empty results map under it (cli_odd's only
    # node fails: there are no results).
    text = tradeloom(workdir, "run", "cliwf:odd_error")
    assert text.returncode == 1
    assert text.stdout.splitlines()[-1].startswith("result: failed: ValueError: ")


def test_run_without_json_prints_events_for_people(workdir: Path) -> None:
    proc = tradeloom(workdir, "run", "cliwf:workflow", "--input", "n=21", "venue=kraken")
    assert proc.returncode == 0, proc.stderr
    assert "execution_started" in proc.stdout
    assert "execution_completed" in proc.stdout
    echo = [line for line in proc.stdout.splitlines() if "node_completed" in line
            and "  echo  " in line]
    # Outputs as the other commands show them: JSON, not Python's repr.
    assert len(echo) == 1 and 'outputs={"n":21,"venue":"kraken"}' in echo[0], proc.stdout


def test_run_shows_control_characters_in_values_and_prints_strict_json(
        workdir: Path) -> None:
    people = tradeloom(workdir, "run", "cliwf:odd_error")
    assert people.returncode == 1, people.stderr
    assert "\x1b" not in people.stdout and "\x07" not in people.stdout
    assert "\\x1b[2J" in people.stdout and "a\\nforged line" in people.stdout
    assert not any(line.startswith("forged") for line in people.stdout.splitlines())
    machines = tradeloom(workdir, "run", "cliwf:odd_value", "--json")
    assert machines.returncode == 0, machines.stderr
    objects = [json.loads(line, parse_constant=_refuse) for line in machines.stdout.splitlines()]
    assert objects[-1]["results"] == {"nan": {"x": "nan"}}
    summary = tradeloom(workdir, "run", "cliwf:odd_key")  # a bytes key: not JSON as it is
    assert summary.returncode == 0, summary.stderr
    assert "result: ok" in summary.stdout and '"b\'k\'": 1' in summary.stdout


def _refuse(constant: str) -> None:
    raise AssertionError(f"not strict JSON: {constant}")


# -- --input -------------------------------------------------------------------------------

def test_input_values_are_json_when_they_parse_else_strings(workdir: Path) -> None:
    pairs = {
        "n": ("5", 5),
        "f": ("1.5", 1.5),
        "yes": ("true", True),
        "no": ("false", False),
        "nothing": ("null", None),
        "word": ("hello", "hello"),
        "quoted": ('"42"', "42"),
        "obj": ('{"a": [1, 2]}', {"a": [1, 2]}),
        "list": ("[1, 2]", [1, 2]),
        "eq": ("a=b", "a=b"),
        "empty": ("", ""),
        "spaced": ("two words", "two words"),
        # Not JSON (Python's json reads them): kept as strings, never a NaN or an inf.
        "nan": ("NaN", "NaN"),
        "inf": ("Infinity", "Infinity"),
        "ninf": ("-Infinity", "-Infinity"),
        "nested": ('{"a": NaN}', '{"a": NaN}'),
        "huge": ("1e999", "1e999"),
    }
    args = [arg for key, (raw, _) in pairs.items() for arg in ("--input", f"{key}={raw}")]
    proc = tradeloom(workdir, "run", "cliwf:workflow", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    objects = json_lines(proc.stdout)
    started = next(o for o in objects if o.get("type") == "execution_started")
    expected = {key: value for key, (_, value) in pairs.items()}
    assert started["inputs"] == expected
    completed = next(o for o in objects if o.get("type") == "execution_completed")
    assert completed["results"]["echo"] == expected
    assert completed["results"]["double"] == 10


@pytest.mark.parametrize("bad", ["novalue", "=value"])
def test_bad_input_exits_2_with_one_line(workdir: Path, bad: str) -> None:
    proc = tradeloom(workdir, "run", "cliwf:workflow", "--input", bad)
    assert_one_error_line(proc, bad)
    assert proc.stdout == ""


# -- bad refs and configs ------------------------------------------------------------------

@pytest.mark.parametrize("ref", [
    "no_such_module_tradeloom_cli:workflow",
    "cliwf:missing",
    "cliwf:not_a_workflow",
    "cliwf",
    "clibroken:workflow",
    "clisyntax:workflow",
])
def test_bad_ref_exits_2_with_one_line_and_no_traceback(workdir: Path, ref: str) -> None:
    proc = tradeloom(workdir, "run", ref)
    assert_one_error_line(proc, ref.split(":")[0])
    assert proc.stdout == ""


def test_bad_config_exits_2_with_one_line_naming_the_key(workdir: Path) -> None:
    config = workdir / "bad.toml"
    config.write_text("[resilience]\ntimeout_s = 1.0\nretries = 3\n")
    proc = tradeloom(workdir, "run", "cliwf:workflow", "--config", str(config))
    assert_one_error_line(proc, "retries")


@pytest.mark.parametrize("listen", ["127.0.0.1:70000", "127.0.0.1:\u0661\u0662"])
def test_a_daemon_with_a_bad_metrics_listen_exits_2_before_it_opens_anything(
        workdir: Path, listen: str) -> None:
    """Refused as the config loads: no journal made, no port bound (a port in other
    scripts' digits once bound port 12)."""
    config = workdir / "daemon.toml"
    config.write_text(f'[daemon]\ndata_dir = "data"\n[transport]\n'
                      f'events = "tcp://127.0.0.1:*"\ncontrol = "tcp://127.0.0.1:*"\n'
                      f'[metrics]\nlisten = "{listen}"\n', encoding="utf-8")
    proc = tradeloom(workdir, "daemon", "--config", str(config), console_script=True)
    assert_one_error_line(proc, "metrics.listen")
    assert not (workdir / "data").exists()


def test_config_file_is_applied_to_the_run(workdir: Path) -> None:
    config = workdir / "ok.toml"
    config.write_text("[resilience]\npreset = \"staging\"\ntimeout_s = 5.0\n")
    proc = tradeloom(workdir, "run", "cliwf:workflow", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1].get("status") == "completed"


def test_run_with_the_daemons_config_binds_no_socket_while_the_daemon_has_them(
        workdir: Path) -> None:
    """`tradeloom run` runs in-process without a daemon: the [transport] of the daemon's
    config (whose sockets a running daemon holds) is not bound (it was: exit 2, "cannot
    bind the publisher")."""
    import zmq

    from tests.ports import free_port

    events, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    config = workdir / "daemon.toml"
    config.write_text(f'[transport]\nevents = "{events}"\ncontrol = "{control}"\n')
    context: zmq.Context[Any] = zmq.Context()
    daemon_sockets = [context.socket(zmq.XPUB), context.socket(zmq.ROUTER)]
    try:
        for sock, endpoint in zip(daemon_sockets, (events, control), strict=True):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(endpoint)  # as a running daemon holds them
        proc = tradeloom(workdir, "run", "cliwf:workflow", "--json", "--config", str(config))
    finally:
        for sock in daemon_sockets:
            sock.close()
        context.term()
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1].get("status") == "completed"


def test_run_keeps_no_journal_so_the_daemons_halted_one_neither_refuses_nor_records_it(
        workdir: Path) -> None:
    """`tradeloom run` is a try-out in memory: the daemon's data_dir is left alone. With the
    daemon's journal it came up in the HALT that journal kept (exit 1, refused) and, with
    the daemon stopped and not halted, added its executions to the daemon's history."""
    from actors import Config, Engine

    data_dir = workdir / "data"
    config = workdir / "daemon.toml"
    config.write_text(f'[daemon]\ndata_dir = "{data_dir}"\n')
    daemon_side = Engine.start(Config.load(str(config)))
    daemon_side.halt("held across restarts")
    daemon_side.stop()

    proc = tradeloom(workdir, "run", "cliwf:workflow", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1].get("status") == "completed"

    daemon_side = Engine.start(Config.load(str(config)))
    try:
        assert daemon_side.executions() == []
        assert daemon_side.status()["state"] == "HALT"
    finally:
        daemon_side.stop()


def test_run_with_a_config_runs_its_one_workflow_not_the_configs_interval_triggers(
        workdir: Path) -> None:
    """An engine started with a config runs its `every_s` triggers; `tradeloom run` runs
    the one workflow it is given (as it binds none of the config's sockets)."""
    (workdir / "clislow.py").write_text(
        "import time\nfrom actors import Node, Workflow\n"
        "workflow = Workflow('clislow', nodes=[Node('n', lambda ctx: time.sleep(0.3))])\n")
    config = workdir / "daemon.toml"
    config.write_text('[[workflows]]\nref = "clislow:workflow"\nevery_s = 0.01\n')
    proc = tradeloom(workdir, "run", "clislow:workflow", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout)
    assert len({line["execution_id"] for line in lines if "execution_id" in line}) == 1


@pytest.mark.parametrize("argv, positional, pairs", [
    (["submit", "--input", "a=1", "WF", "--input", "b=2"], "WF", ["a=1", "b=2"]),
    (["submit", "--input", "a=1", "b=2", "WF"], "WF", ["a=1", "b=2"]),
    (["run", "--input", "a=1", "m:w", "--input", "b=2", "--json"], "m:w", ["a=1", "b=2"]),
    (["run", "m:w", "--input", "a=1", "b=2"], "m:w", ["a=1", "b=2"]),
])
def test_the_positional_after_input_pairs_is_found_wherever_it_is(
        argv: list[str], positional: str, pairs: list[str]) -> None:
    """`--input` takes one or more pairs: a positional written after one swallowed into the
    list mid-way (`--input a=1 WF --input b=2`, which the one-pair flag took) was exit 2."""
    from actors.cli import build_parser, restore_positional

    args = build_parser().parse_args(argv)
    restore_positional(args)
    assert (getattr(args, "workflow", None) or args.ref, args.input) == (positional, pairs)


# -- help ----------------------------------------------------------------------------------

def test_help_lists_the_run_command(workdir: Path) -> None:
    proc = tradeloom(workdir, "--help")
    assert proc.returncode == 0
    assert "run" in proc.stdout
    proc = tradeloom(workdir, "run", "--help")
    assert proc.returncode == 0
    assert "--input" in proc.stdout and "--json" in proc.stdout


def test_a_closed_stdout_pipe_ends_the_command_quietly(workdir: Path) -> None:
    # `tradeloom ... --json | head -n 1`: the reader goes away; no "error: Broken pipe".
    proc = tradeloom_running(workdir, "run", "cliwf:workflow", "--json", "--every", "0.02",
                             "--count", "200")
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()          # it is printing
    proc.stdout.close()                    # ... and the reader goes away
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"Broken pipe" not in stderr and b"Traceback" not in stderr, stderr


def test_sigterm_ends_run_every_after_the_execution_in_flight(workdir: Path) -> None:
    proc = tradeloom_running(workdir, "run", "cliwf:workflow", "--json", "--every", "0.02")
    assert proc.stdout is not None
    assert proc.stdout.readline()          # it is running
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert b"Traceback" not in stderr, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events and events[-1]["type"] in {"execution_completed", "execution_failed"}


def test_exit_past_user_threads_counts_user_threads_not_the_engines_own() -> None:
    import threading

    from actors.cli import _user_threads

    release = threading.Event()
    ours = threading.Thread(target=release.wait, args=(10,), name="tradeloom-control_0")
    theirs = threading.Thread(target=release.wait, args=(10,), name="user-feed")
    for thread in (ours, theirs):
        thread.start()
    try:
        found = _user_threads()
        assert theirs in found and ours not in found
    finally:
        release.set()
        ours.join(5)
        theirs.join(5)


@pytest.mark.parametrize(("args", "needle"), [
    (["--input", "a=1", "a=2"], "--input 'a' is given twice"),
    (["--every", "0.01", "--count", "-1"], "must be >= 0"),
    (["--count", "2"], "--count needs --every"),
])
def test_run_refuses_what_it_would_silently_ignore(workdir: Path, args: list[str],
                                                   needle: str) -> None:
    proc = tradeloom(workdir, "run", "cliwf:workflow", *args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden"])
def test_keys_refuses_a_name_that_is_not_one_plain_file_name(workdir: Path, name: str) -> None:
    proc = tradeloom(workdir, "keys", "keys", "--name", name)
    assert_one_error_line(proc, "--name", "a key name is")
    assert not (workdir / "keys").exists() and not (workdir / "escape.key").exists()


def test_a_data_dir_that_is_a_file_is_named_so(workdir: Path) -> None:
    (workdir / "plain").write_text("not a directory")
    (workdir / "daemon.toml").write_text('[daemon]\ndata_dir = "plain"\n[transport]\n'
                                         'events = "tcp://127.0.0.1:*"\n'
                                         'control = "tcp://127.0.0.1:*"\n')
    proc = tradeloom(workdir, "daemon", "--config", "daemon.toml")
    assert_one_error_line(proc, "plain: it is not a directory")


def test_a_huge_utilization_is_shown_capped_not_as_300_digits() -> None:
    from transport.cli_output import percent

    assert (percent(0.125), percent(99.99), percent(100.0), percent(1e306), percent(None)) == (
        "12%", "9999%", ">9999%", ">9999%", "-")
    assert (percent(-0.5), percent(-1e300), percent(float("nan"))) == ("-50%", "<-9999%", "-")


def test_a_client_given_a_daemons_any_port_config_is_told_to_pass_the_port(
        workdir: Path) -> None:
    (workdir / "daemon.toml").write_text('[transport]\nevents = "tcp://127.0.0.1:*"\n'
                                         'control = "tcp://127.0.0.1:*"\n')
    proc = tradeloom(workdir, "status", "--config", "daemon.toml")
    assert_one_error_line(proc, "[transport] control 'tcp://127.0.0.1:*': a client connects "
                                "to the port the daemon bound; give it with --control")
    proc = tradeloom(workdir, "status", "--control", "tcp://127.0.0.1:*")
    assert_one_error_line(proc, "--control 'tcp://127.0.0.1:*': a client connects to the port")
    proc = tradeloom(workdir, "status", "--events", "tcp://127.0.0.1:0")
    assert_one_error_line(proc, "--events 'tcp://127.0.0.1:0': a client connects to the port")
