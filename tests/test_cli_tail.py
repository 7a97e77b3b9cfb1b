"""`tradeloom tail` against a daemon in a subprocess: `--since 1 --json` replays the journal
then follows live, and keeps going across a daemon restart with seq continuing (no gap, no
duplicate); the human view is one plain line per event when stdout is not a terminal (no
header, no colour); `--workflow` and `--type` filter; Ctrl-C exits 0 without a traceback."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import (
    TRADELOOM,
    DaemonProcess,
    LineReader,
    environment,
    running_daemon,
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path) as process:
        yield process


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def terminal_of(events: list[dict[str, Any]], execution_id: str) -> bool:
    return any(e.get("execution_id") == execution_id and e["type"] == "execution_completed"
               for e in events)


def test_tail_since_1_json_replays_then_follows_and_survives_a_restart(
        daemon: DaemonProcess) -> None:
    before = [ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
              for _ in range(2)]
    tail = LineReader(["tail", "--since", "1", "--json", *daemon.endpoints()])
    try:
        tail.wait_for(lambda lines: all(any(i in line and "execution_completed" in line
                                            for line in lines) for i in before))
        live = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
        tail.wait_for(lambda _: terminal_of(tail.events(), live))
        daemon.stop()
        daemon.start()  # the same data_dir and ports: seq continues
        after = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
        tail.wait_for(lambda _: terminal_of(tail.events(), after))
        code, stderr = tail.interrupt()
    finally:
        tail.kill()
    assert code == 0 and "Traceback" not in stderr, stderr
    events = tail.events()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # no gap, no duplicate, in order
    types = [e["type"] for e in events]
    assert types.count("daemon_started") == 2 and "daemon_stopping" in types
    assert types.index("daemon_stopping") < max(i for i, t in enumerate(types)
                                                if t == "daemon_started")
    with daemon.client() as client:
        assert client.status()["last_seq"] >= seqs[-1]


def test_tail_for_people_prints_one_plain_line_per_event_without_a_header(
        daemon: DaemonProcess) -> None:
    failed = daemon.cli("submit", "cli_fail", "--wait", "--json")
    assert failed.returncode == 1, failed.stderr
    execution_id = json.loads(failed.stdout)["execution_id"]
    with daemon.client() as client:
        history = client.replay(1, limit=1000)["events"]
    tail = LineReader(["tail", "--since", "1", *daemon.endpoints()])
    try:
        tail.wait_for(lambda lines: len(lines) >= len(history))
        live = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
        lines = tail.wait_for(lambda lines: any(live.rsplit("_", 1)[1] in line
                                                and "execution_completed" in line
                                                for line in lines))
        code, stderr = tail.interrupt()
    finally:
        tail.kill()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert "\x1b[" not in "".join(lines)  # not a terminal: no colour, no header
    assert not any("breakers:" in line or "queued" in line for line in lines)  # the header's
    for event, line in zip(history, lines, strict=False):  # one line per event, in seq order
        assert line.split()[0] == str(event["seq"]) and event["type"] in line, line
    failed_line = next(line for line in lines if "execution_failed" in line)
    assert execution_id.rsplit("_", 1)[1] in failed_line and "ValueError" in failed_line
    assert len(lines) == len(set(lines))


def test_tail_filters_by_workflow_and_type(daemon: DaemonProcess) -> None:
    ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))
    daemon.cli("submit", "cli_fail", "--wait", "--json")
    last = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
    tail = LineReader(["tail", "--since", "1", "--json", "--workflow", "cli_ok", "--type",
                       "execution_completed", "--type", "execution_started",
                       *daemon.endpoints()])
    try:
        tail.wait_for(lambda _: terminal_of(tail.events(), last))
        code, _ = tail.interrupt()
    finally:
        tail.kill()
    assert code == 0
    events = tail.events()
    assert {e["workflow_id"] for e in events} == {"cli_ok"}
    assert [e["type"] for e in events] == ["execution_started", "execution_completed"] * 2




def test_tail_refuses_an_unknown_type_and_notes_an_unknown_workflow(
        daemon: DaemonProcess) -> None:
    """A `--type` no event has would match nothing: refused (exit 2, one line naming the
    known types), not a tail that waits for ever in silence. A `--workflow` not registered
    now may come with a restart: a note on stderr, and the tail goes on."""
    refused = daemon.cli("tail", "--type", "execution_complete")  # a typo
    assert refused.returncode == 2, refused
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "unknown event type 'execution_complete'" in refused.stderr
    assert "execution_completed" in refused.stderr  # the known ones are listed
    for never_sequenced in ("heartbeat", "gap"):  # tail prints neither: it would wait for ever
        refused = daemon.cli("tail", "--type", never_sequenced)
        assert refused.returncode == 2, refused
        assert f"unknown event type '{never_sequenced}'" in refused.stderr
    proc = subprocess.Popen([*TRADELOOM, "tail", "--json", "--workflow", "cli_okk",
                             *daemon.endpoints()], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=environment())
    try:
        assert proc.stderr is not None
        assert select.select([proc.stderr], [], [], 30)[0], "no note within 30 s"
        note = proc.stderr.readline()
        assert proc.poll() is None  # it goes on
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert "no workflow 'cli_okk' is registered now" in note and "cli_ok" in note, note


def test_tail_json_says_on_stderr_when_the_daemon_goes_quiet_and_when_it_is_back(
        daemon: DaemonProcess) -> None:
    """Lines piped to a log said nothing of an outage (a terminal's header does)."""
    from tests.engine_journal_helpers import eventually

    tail = LineReader(["tail", "--since", "1", "--json", *daemon.endpoints()])  # (live or
    notes = tail.follow_stderr()  # not when the submit below is done, it sees it)
    try:
        live = ok_json(daemon.cli("submit", "cli_ok", "--wait", "--json"))["execution_id"]
        tail.wait_for(lambda _: terminal_of(tail.events(), live))  # it follows the stream
        daemon.stop()
        eventually(lambda: any("the daemon does not answer" in n for n in notes), 20.0,
                   "the note that the daemon went quiet")
        daemon.start()
        eventually(lambda: any("the daemon answers again" in n for n in notes), 20.0,
                   "the note that it is back")
        assert tail.proc.poll() is None
    finally:
        tail.kill()
    said = [n for n in notes if n.startswith("tradeloom tail:")]
    assert len(said) == 2 and "does not answer" in said[0] and "answers again" in said[1]


class Beats:
    """What OutageNotes reads of a Subscriber: its heartbeat counter."""

    heartbeats = 0


def test_outage_notes_follow_the_heartbeat_period_and_events(
        capsys: pytest.CaptureFixture[str]) -> None:
    from transport.tail import SILENT_NOTE_S, OutageNotes

    now = [0.0]
    stream = Beats()
    notes = OutageNotes(stream, clock=lambda: now[0])  # type: ignore[arg-type]

    def beat_every(period: float, count: int) -> None:
        for _ in range(count):
            now[0] += period
            stream.heartbeats += 1
            notes.check()

    beat_every(1.0, 3)
    now[0] += SILENT_NOTE_S - 0.1
    notes.check()
    assert capsys.readouterr().err == ""  # quiet less than 5 s: nothing said
    beat_every(10.0, 2)  # a daemon with heartbeat_s = 10: not silent between beats
    now[0] += 9.0
    notes.check()
    assert capsys.readouterr().err == ""
    now[0] += 30.0
    notes.check(read=True)  # events came: it is there
    assert capsys.readouterr().err == ""
    now[0] += 31.0  # three periods and more with nothing
    notes.check()
    assert "the daemon does not answer (nothing from it for 31 s)" in capsys.readouterr().err
    notes.check()
    assert capsys.readouterr().err == ""  # said once
    beat_every(1.0, 1)
    assert "the daemon answers again" in capsys.readouterr().err
    notes.check(unreachable=True)  # a replay with no answer: at once
    assert "the daemon does not answer" in capsys.readouterr().err


def test_outage_notes_take_the_period_status_gave_before_two_heartbeats_came(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A daemon with `heartbeat_s = 30`: the 29 s before its second heartbeat are not a
    silence (only one heartbeat, the subscription's, has come yet)."""
    from transport.tail import OutageNotes

    now = [0.0]
    stream = Beats()
    stream.heartbeats = 1
    notes = OutageNotes(stream, clock=lambda: now[0], heartbeat_s=30.0,  # type: ignore[arg-type]
                        who="tradeloom submit", waiting="still waiting")
    now[0] = 29.0
    notes.check()
    assert capsys.readouterr().err == ""
    now[0] = 91.0  # three periods with nothing
    notes.check()
    assert capsys.readouterr().err.startswith("tradeloom submit: the daemon does not answer "
                                              "(nothing from it for 91 s); still waiting")
    # A period no daemon can have (a hostile reply's inf) is not taken: silent after 5 s.
    for odd in (float("inf"), float("nan"), 1e300, True, "30"):
        quiet = OutageNotes(stream, clock=lambda: now[0], heartbeat_s=odd)  # type: ignore[arg-type]
        now[0] += 6.0
        quiet.check()
        assert "does not answer" in capsys.readouterr().err, odd


def blocked_writing(pid: int) -> bool:
    """Whether process `pid`'s main thread sleeps in a pipe write (kernels name the wait
    `pipe_write`, `anon_pipe_write` or `pipe_wait`)."""
    wchan = Path(f"/proc/{pid}/wchan").read_text()
    return wchan.endswith(("pipe_write", "pipe_wait"))


def tail_blocked_on_a_full_pipe(daemon: DaemonProcess) -> subprocess.Popen[bytes]:
    """`tail --since 1 --json` replaying more than a pipeful, blocked writing to its stdout
    (a pipe nobody reads yet)."""
    import fcntl
    import termios

    from tests.engine_journal_helpers import eventually

    with daemon.client() as client:
        ids = [client.submit("cli_ok", {"pad": "x" * 300})["execution_id"] for _ in range(150)]
        eventually(lambda: client.execution(ids[-1])["status"] == "completed", 30.0,
                   "the last submit's completion")
    proc = subprocess.Popen([*TRADELOOM, "tail", "--since", "1", "--json",
                             *daemon.endpoints()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=environment())
    stdout = proc.stdout
    assert stdout is not None

    def queued() -> int:
        size = bytearray(4)
        fcntl.ioctl(stdout, termios.FIONREAD, size)
        return int.from_bytes(size, "little")

    try:
        eventually(lambda: queued() >= 60_000, 30.0, "tail filling its pipe")
        eventually(lambda: blocked_writing(proc.pid), 10.0, "tail blocked writing")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc


def test_tail_json_stopped_while_its_pipe_is_full_ends_on_a_whole_line(
        daemon: DaemonProcess) -> None:
    """Ctrl-C while `tail --json` is blocked writing a batch to a full pipe: the batch is
    written out, then it exits 0; the reader never gets half an object as the last line."""
    import signal

    proc = tail_blocked_on_a_full_pipe(daemon)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and b"Traceback" not in err, (proc.returncode, err)
    assert out.endswith(b"\n"), (err, out[-200:])
    events = [json.loads(line) for line in out.decode().splitlines()]
    seqs = [e["seq"] for e in events]
    assert len(seqs) > 100 and seqs == list(range(1, len(seqs) + 1))


def test_tail_json_stops_at_a_second_ctrl_c_while_nobody_reads(daemon: DaemonProcess) -> None:
    """The first Ctrl-C waits for the write under way; a second one stops it at once, even
    though the pipe's reader never reads again."""
    import signal

    proc = tail_blocked_on_a_full_pipe(daemon)
    deadline = time.monotonic() + 30
    try:
        # Again and again until it exits: two signals sent before the first is handled
        # count as one.
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)
        code = proc.wait(timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert code == 0
