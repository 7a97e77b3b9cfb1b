"""Probes of the live views that found defects: `tradeloom tail` whose reader left while the
daemon is idle, text that could restyle or reorder a line of the terminal view, and a rare
`--type` held back while the stream never paused."""

from __future__ import annotations

import io
import json
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from rich.console import Console

from tests.daemon_process import TRADELOOM, DaemonProcess, environment, running_daemon
from transport import tail
from transport.cli_output import printable
from transport.subscriber import Subscriber
from transport.tail_view import MAX_VALUE_CHARS, StatusHeader, event_line


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path) as process:
        yield process


@pytest.mark.parametrize("mode", [["--json"], []])
def test_tail_exits_0_when_its_reader_leaves_while_the_daemon_is_idle(
        daemon: DaemonProcess, mode: list[str]) -> None:
    # `tradeloom tail --since 1 | head -1`: head reads one line and leaves; no event comes
    # after, so no write would ever fail.
    tail = subprocess.Popen([*TRADELOOM, "tail", "--since", "1", *mode, *daemon.endpoints()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment())
    try:
        assert tail.stdout is not None and tail.stderr is not None
        first = tail.stdout.readline()
        assert "daemon_started" in first, (first, tail.poll())
        tail.stdout.close()
        code = tail.wait(15)
        stderr = tail.stderr.read()
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
        if tail.stderr is not None:
            tail.stderr.close()
    assert code == 0 and "Traceback" not in stderr, (code, stderr)


ESCAPE_INJECTION = "ex\x1b[2J\x1b]0;pwned\x07"


def rendered(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=True, color_system="standard").print(
        renderable)
    return out.getvalue()


def test_breaker_names_in_the_tail_header_cannot_send_escapes_to_the_terminal() -> None:
    header = StatusHeader()
    header.update({"state": "NORMAL", "breakers": {ESCAPE_INJECTION: "open"}, "limits": {}})
    shown = rendered(header)
    assert "\x1b[2J" not in shown and "\x1b]0;" not in shown, repr(shown)
    assert "ex\\x1b[2J\\x1b]0;pwned\\x07 open" in shown, repr(shown)


@pytest.mark.parametrize("control", ["\u202e", "\u2066", "\u200f", "\u061c", "\u2028"])
def test_bidi_controls_and_line_separators_in_event_values_are_shown_as_escapes(
        control: str) -> None:
    odd = f"arb{control}btc"
    line = event_line({"seq": 7, "type": "node_failed", "workflow_id": odd,
                       "execution_id": f"exec_{odd}_1f2e", "node_id": odd,
                       "error_type": "ValueError", "error": odd, "attempt": 1,
                       "final": False, "timestamp": "2026-11-30T05:00:00.000Z"}).plain
    assert control not in line, repr(line)
    escape = f"\\u{ord(control):04x}"
    assert line.count(f"arb{escape}btc") == 3 and line.endswith("will retry)"), line
    # Right-to-left text itself (Hebrew, Arabic) and emoji are shown as they are.
    assert printable("שלום مرحبا 😀 e\u0301") == "שלום مرحبا 😀 e\u0301"


class StreamRanOut(Exception):
    """The firehose below is spent."""


class Firehose:
    """A stream that always has an event ready (a long `--since` replay, or a live rate
    past one event a millisecond): only the first one is a node_failed."""

    def __init__(self, events: int) -> None:
        self.served = 0
        self.events = events

    def next(self, timeout: float | None = None) -> dict[str, Any]:
        if self.served == self.events:
            raise StreamRanOut
        self.served += 1
        kind = "node_failed" if self.served == 1 else "node_started"
        return {"seq": self.served, "type": kind}


def test_a_rare_wanted_event_is_shown_while_the_stream_never_pauses() -> None:
    stream = Firehose(events=20 * tail.BATCH)
    shown: list[tuple[int, list[int]]] = []

    def show(batch: list[dict[str, Any]]) -> None:
        shown.append((stream.served, [event["seq"] for event in batch]))

    with pytest.raises(StreamRanOut):
        tail._follow(cast("Subscriber", stream), frozenset({"node_failed"}), show)
    # Shown after one batch's worth of events read, not once the stream pauses.
    assert shown == [(tail.BATCH, [1])], shown[:3]


class OneEvent:
    """A stream with one event, then a pause, then nothing more."""

    def __init__(self, event: dict[str, Any]) -> None:
        self.replies: list[dict[str, Any] | None] = [event, None]
        self.heartbeats = 0  # (a Subscriber's counter: tail's outage notes read it)

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        if not self.replies:
            raise StreamRanOut
        return self.replies.pop(0)


MEGABYTE_ERROR = "E" * 1_000_000


@pytest.mark.parametrize("fields", [
    {"type": "node_failed", "node_id": "n", "error_type": "ValueError", "attempt": 2,
     "final": False},
    {"type": "execution_failed", "status": "failed", "duration_ms": 5.0,
     "error_type": "ValueError"},
])
def test_error_texts_are_cut_on_the_terminal_view_as_outputs_are_and_whole_in_json(
        fields: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    # A megabyte error took 0.6 s to draw while an output as long was cut.
    event = {**fields, "seq": 3, "timestamp": "2026-11-30T05:00:00.000Z",
             "workflow_id": "wf", "execution_id": "exec_wf_1f2e", "error": MEGABYTE_ERROR}
    line = event_line(event).plain
    completed = event_line({"seq": 2, "type": "node_completed", "node_id": "n",
                            "outputs": MEGABYTE_ERROR}).plain
    cut = "E" * (MAX_VALUE_CHARS - 1) + "…"
    assert cut in line and "E" * MAX_VALUE_CHARS not in line, len(line)
    assert len(line) < 3 * MAX_VALUE_CHARS, len(line)
    # the same length as an output's cut (its JSON text starts with a quote)
    assert completed.endswith('-> "' + cut[1:]), completed[-200:]
    if fields["type"] == "node_failed":
        assert line.endswith(f"ValueError: {cut} (attempt 2, will retry)"), line[-200:]
    with pytest.raises(StreamRanOut):
        tail._follow_json(cast("Subscriber", OneEvent(event)), frozenset(), {})
    assert json.loads(capsys.readouterr().out)["error"] == MEGABYTE_ERROR


def test_a_long_halt_reason_is_cut_on_the_line_and_in_the_header() -> None:
    event = {"seq": 4, "type": "emergency_state_changed", "state": "HALT",
             "previous_state": "NORMAL", "reason": MEGABYTE_ERROR, "source": "manual",
             "origin": "api", "timestamp": "2026-11-30T05:00:00.000Z"}
    cut = "E" * (MAX_VALUE_CHARS - 1) + "…"
    line = event_line(event).plain
    assert cut in line and len(line) < 3 * MAX_VALUE_CHARS, len(line)
    header = StatusHeader()
    header.on_event(event)
    console = Console(file=io.StringIO(), width=100_000, color_system=None)
    console.print(header)
    drawn = cast("io.StringIO", console.file).getvalue()
    assert cut in drawn and "E" * MAX_VALUE_CHARS not in drawn, len(drawn)


@pytest.mark.parametrize("workflow", ["x" * 2000, "a\x1bb", "a b", ""])
def test_tail_refuses_a_workflow_id_no_workflow_can_have_as_a_usage_error(
        workflow: str) -> None:
    proc = subprocess.run([*TRADELOOM, "tail", "--workflow", workflow], capture_output=True,
                          text=True, timeout=60, env=environment(), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a workflow id" in lines[0] and "\x1b" not in lines[0]


def test_tail_since_past_the_daemons_last_seq_says_what_it_waits_for(
        daemon: DaemonProcess) -> None:
    tail = subprocess.Popen([*TRADELOOM, "tail", "--since", "1000000", "--json",
                             *daemon.endpoints()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment())
    try:
        assert tail.stderr is not None
        ready, _, _ = select.select([tail.stderr], [], [], 15)  # the deadline
        assert ready, "no notice on stderr"
        line = tail.stderr.readline()
        assert line.startswith("tradeloom tail: waiting for seq 1000000: the daemon is at seq ")
        assert tail.poll() is None  # a notice, not an error: it goes on waiting
    finally:
        tail.kill()
        tail.wait(15)
        for stream in (tail.stdout, tail.stderr):
            if stream is not None:
                stream.close()
