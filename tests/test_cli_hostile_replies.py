"""Every client command of the CLI against a daemon whose reply is well-framed but holds
anything at all in `result`: exit 0 (fields it lacks shown as `-`) or exit 2 with one line
saying the reply is not the protocol, never "unexpected", a traceback or a raw control
character on the terminal. The CLI runs in this process (its `main`), so Hypothesis can try
many replies; tests/test_cli_hostile_daemon.py runs the real executable."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from actors import logs
from actors.cli import main
from tests.hostile_daemon import Event, HostileDaemon, Replies, ok, pack

#: The command lines, each with the op whose reply it renders.
COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "executions": ("executions",),
    "execution": ("show", "exec_wf_0000abcd"),
    "intents": ("intents",),
    "resolve_intent": ("intents", "--resolve", "k1", "--outcome", "filled"),
    "halt": ("halt", "--reason", "fuzz"),
    "resume": ("resume",),
    "alert": ("alert", "--reason", "fuzz"),
    "reduce_only": ("reduce-only", "--reason", "fuzz"),
    "submit": ("submit", "wf"),
    "webhooks_failed": ("webhooks", "failed"),
    "webhooks_retry": ("webhooks", "retry"),
    "webhooks_delete": ("webhooks", "delete", "--name", "hook"),
    "webhooks_log": ("webhooks", "log"),
}
#: The commands that have no `--json`.
PLAIN_ONLY = {"halt", "resume", "alert", "reduce_only"}
#: The keys the commands read, so that maps with some of them (of any type) come up often.
KEYS = ("state", "previous_state", "reason", "running", "queued", "workflows", "breakers",
        "limits", "last_seq", "uptime_s", "version", "execution_id", "workflow_id", "status",
        "started_at", "ended_at", "duration_ms", "inputs", "results", "error", "error_type",
        "nodes", "outputs", "attempts", "idempotency_key", "node_id", "attempt", "outcome",
        "endpoints", "deliveries", "requeued", "count", "id", "endpoint", "seq",
        "event_type", "failed_at", "dropped", "max_dead_letters", "name", "url",
        "next_seq", "breaker", "delivered", "dead", "first_seq", "at", "latency_ms",
        "http_status", "value", "threshold", "utilization")

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
           | st.sampled_from(["\x1b[2J", "\u202e", "a\nb", "-"]) | st.binary(max_size=4))


def _maps(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=6)


values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                      | _maps(children), max_leaves=16)
results = _maps(values) | st.lists(_maps(values), max_size=3) | values


@pytest.fixture(scope="module")
def daemon() -> Iterator[HostileDaemon]:
    d = HostileDaemon()
    yield d
    d.stop()


def answering(op: str, result: Any) -> Any:
    def responder(request: Event) -> Replies | None:
        return [(0, ok(result))] if request.get("op") == op else None  # ping: a real pong
    return responder


#: A terminal escape and a bidi override under every key the commands read.
HOSTILE_TEXT = "\x1b[2J\u202e"
HOSTILE_MAP = dict.fromkeys(KEYS, HOSTILE_TEXT)


@pytest.mark.parametrize("op", sorted(COMMANDS))
@example(result=HOSTILE_MAP, as_json=False)
@example(result=[HOSTILE_MAP], as_json=False)
@example(result={**HOSTILE_MAP, "endpoints": [HOSTILE_MAP], "deliveries": [HOSTILE_MAP],
                 "nodes": {HOSTILE_TEXT: HOSTILE_MAP}}, as_json=False)
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(result=results, as_json=st.booleans())
def test_any_reply_is_shown_or_refused_in_one_line(
        daemon: HostileDaemon, op: str, result: Any, as_json: bool) -> None:
    daemon.responder = answering(op, result)
    command = COMMANDS[op]
    argv = [*command, "--control", daemon.control, "--events", daemon.events,
            "--timeout", "5", *(["--json"] if as_json and op not in PLAIN_ONLY else [])]
    out, err = io.StringIO(), io.StringIO()
    # The suite's structlog config stays: the CLI's caches each logger on first use, and
    # later tests could no longer capture what theirs log.
    with (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          mock.patch.object(logs, "configure")):
        code = main(argv)
    stdout, stderr = out.getvalue(), err.getvalue()
    assert "Traceback" not in stderr and "unexpected" not in stderr, (result, stderr)
    assert "\x1b" not in stdout and "\u202e" not in stdout, (result, stdout)
    if code == 0:
        assert stderr == "", (result, stderr)
    else:
        assert code == 2, (code, result, stderr)
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tradeloom: error: "), stderr


def run_cli(daemon: HostileDaemon, *command: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          mock.patch.object(logs, "configure")):
        code = main([*command, "--control", daemon.control, "--events", daemon.events,
                     "--timeout", "5"])
    return code, out.getvalue(), err.getvalue()


STATE_CHANGES = {"halt": ("halt", "--reason", "x"), "resume": ("resume",),
                 "alert": ("alert", "--reason", "x"),
                 "reduce_only": ("reduce-only", "--reason", "x")}


@pytest.mark.parametrize("op", sorted(STATE_CHANGES))
@pytest.mark.parametrize("result", [
    {"pong": True, "version": "9"},                      # another op's result
    {"state": "HALTED", "previous_state": "NORMAL"},     # no such state
    {"state": "HALT"},                                   # no previous_state
    {"state": 3, "previous_state": "NORMAL"},
], ids=["ping-shaped", "unknown-state", "no-previous", "not-a-name"])
def test_a_state_change_without_the_states_is_refused_not_taken_as_done(
        daemon: HostileDaemon, op: str, result: dict[str, Any]) -> None:
    """A script's `tradeloom halt && ...` acts on exit 0: a reply that does not name the
    state it changed to (and from) is exit 2, "not the protocol" (it printed `- (was -)`
    and exited 0)."""
    daemon.responder = answering(op, result)
    code, out, err = run_cli(daemon, *STATE_CHANGES[op])
    assert (code, out) == (2, ""), (code, out, err)
    assert err.startswith("tradeloom: error: the result of ") and err.count("\n") == 1, err


def test_halt_answered_with_another_state_is_refused(daemon: HostileDaemon) -> None:
    daemon.responder = answering("halt", {"state": "NORMAL", "previous_state": "NORMAL"})
    code, _, err = run_cli(daemon, "halt", "--reason", "x")
    assert code == 2 and "not HALT" in err, (code, err)


@pytest.mark.parametrize("version", [2, 0, "1", True, 1.0, None])
@pytest.mark.parametrize("command", [("status",), ("halt", "--reason", "x")],
                         ids=["status", "halt"])
def test_a_reply_of_another_protocol_version_is_refused(
        daemon: HostileDaemon, version: Any, command: tuple[str, ...]) -> None:
    """Only `v: 1` is this protocol (a `{"v": 2, "ok": true, ...}` was read as success)."""
    reply = {"ok": True, "result": {"state": "HALT", "previous_state": "NORMAL", "pong": True}}
    if version is not None:
        reply["v"] = version

    def responder(request: Event) -> Replies | None:
        return [(0, pack(reply))]
    daemon.responder = responder
    code, out, err = run_cli(daemon, *command)
    assert (code, out) == (2, ""), (code, out, err)
    assert "not protocol version 1" in err, err


def test_the_same_replies_with_v1_and_the_states_are_taken(daemon: HostileDaemon) -> None:
    """(The refusals above are about the version and the states, nothing else.)"""
    daemon.responder = answering("halt", {"state": "HALT", "previous_state": "NORMAL"})
    code, out, err = run_cli(daemon, "halt", "--reason", "x")
    assert (code, err) == (0, ""), (code, err)
    assert "HALT" in out


@pytest.mark.parametrize(("op", "result", "command", "says"), [
    ("status", {"running": 0, "queued": 0}, ("status",), "has no state"),
    ("status", {"state": "HALTED"}, ("status",), "has no state"),
    ("ping", {"version": "9"}, ("submit", "wf"), "has no pong"),  # submit pings first
    ("ping", {"pong": 1}, ("submit", "wf"), "has no pong"),
])
def test_a_status_without_a_state_or_a_ping_without_pong_is_not_the_protocol(
        daemon: HostileDaemon, op: str, result: dict[str, Any], command: tuple[str, ...],
        says: str) -> None:
    daemon.responder = answering(op, result)
    code, out, err = run_cli(daemon, *command)
    assert (code, out) == (2, ""), (code, out, err)
    assert says in err and err.count("\n") == 1, err
