"""`[journal] max_event_bytes` through a real daemon: what a client and the CLI get for an
execution whose `results` the journal cut whole (many small results: the map became a note
string), and a request too big for the control socket. Each daemon runs with a 64 KiB cap,
so the data stays small."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import (
    DaemonFleet,
    DaemonProcess,
    replay_all,
    wait_started,
    wait_until,
)
from tests.daemon_process import run_cli
from transport.client import ControlClient
from transport.errors import BadRequestError

CAP = 65536
NOTE = "<omitted by the journal: "


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with DaemonFleet(tmp_path) as fleet:
        yield fleet.daemon(workflows=("many_results", "fast"),
                           config={"journal": {"max_event_bytes": CAP}}).start()


def cli(daemon: DaemonProcess, *args: str) -> Any:
    return run_cli(*args, "--control", daemon.control, "--events", daemon.events, timeout=60)


def ended(control: ControlClient, execution_id: str) -> dict[str, Any]:
    def row() -> dict[str, Any] | None:
        found: dict[str, Any] = control.execution(execution_id)
        return found if found["status"] not in ("queued", "running") else None
    result: dict[str, Any] = wait_until(row, 30, f"{execution_id} to end", 0.05)
    return result


@pytest.mark.timeout(90)
def test_an_execution_whose_results_were_cut_whole_reads_back_and_shows(
        daemon: DaemonProcess) -> None:
    with daemon.client() as control:
        execution_id = control.submit("many_results")["execution_id"]
        # Its node ids "by" and "o" are in the note's text: `in` on the note found them and
        # the read then indexed the string (bad_request: string indices must be integers).
        execution = ended(control, execution_id)
        assert execution["status"] == "completed"
        assert execution["results"].startswith(NOTE)
        assert {node["status"] for node in execution["nodes"].values()} == {"completed"}
        assert control.status()["state"] == "NORMAL"
    shown = cli(daemon, "show", execution_id)
    assert (shown.returncode, shown.stderr) == (0, "")
    # The outputs column is empty for every node: the note says why.
    assert any(line.startswith("results") and NOTE in line
               for line in shown.stdout.splitlines()), shown.stdout
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_submit_wait_prints_a_results_note_and_exits_0(daemon: DaemonProcess) -> None:
    waited = cli(daemon, "submit", "many_results", "--wait")
    assert (waited.returncode, waited.stderr) == (0, ""), waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[1].startswith("completed in ")
    assert lines[2].startswith(f"  results: {NOTE}")
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_a_submit_over_the_request_limit_is_refused_at_once_and_never_runs(
        daemon: DaemonProcess) -> None:
    with daemon.client(timeout=10) as control:
        # Over 16 MiB the daemon drops the connection unanswered: the client waited its
        # whole timeout, then said the submit "may have been accepted".
        for size in (2 * 1024 * 1024, 17 * 1024 * 1024):
            started = time.monotonic()
            with pytest.raises(BadRequestError, match="over the 1048576 byte limit"):
                control.submit("fast", {"blob": "x" * size})
            assert time.monotonic() - started < 5
        assert control.executions(workflow="fast") == []
        assert control.submit("fast", {"n": 1})["execution_id"]  # the socket still works
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_a_queued_execution_whose_inputs_were_cut_is_ended_at_recovery_with_omitted(
        tmp_path: Path) -> None:
    with DaemonFleet(tmp_path) as fleet:
        daemon = fleet.daemon(workflows=("slow", "fast"), config={
            "journal": {"max_event_bytes": CAP},
            "daemon": {"max_concurrent_executions": 1}}).start()
        with daemon.client() as control:
            running = control.submit("slow", {"sleep_s": 60})["execution_id"]
            wait_until(lambda: control.execution(running)["status"] == "running", 30,
                       "the slow execution to run")
            queued = control.submit("fast", {"blob": "x" * (4 * CAP)})["execution_id"]
            assert control.execution(queued)["inputs"].startswith(NOTE)
        daemon.kill()
        daemon.start()
        with daemon.client() as control:
            wait_started(control, 2)
            started = [e for e in replay_all(control) if e.get("execution_id") == queued
                       and e["type"] == "execution_started"]
            # Recovery published its start with the stored note as its inputs: the event
            # must say so, as an event the journal cut does.
            assert [(e["inputs"][:len(NOTE)], e.get("omitted")) for e in started] == [
                (NOTE, ["inputs"])]
            assert control.execution(queued)["status"] == "interrupted"
        assert daemon.terminate() == 0
