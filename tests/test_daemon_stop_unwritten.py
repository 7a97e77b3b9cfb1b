"""A daemon stopped while its journal's writes fail cannot flush it: what was never
written is lost, and that stop is not clean. It says so loudly (one error line with the
counts and the disk's error) and `tradeloom daemon` exits 1, not the 0 of a clean stop
(systemd's `Restart=on-failure`, an operator's shell). A stop whose journal flushed stays
clean. An in-process engine's stop logs the same line (`close_journal()` returns False).

And a submit accepted just as the journal's writes start failing: its reply waits for the
submit's record to be committed, which a failing disk never does. It waited its whole
10 s (a client with a shorter timeout took the daemon for lost). Now it is answered as
soon as the control socket sees the journal failing: `internal`, accepted with its record
maybe not on disk (not `halted`: the execution was not refused, and may have completed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import EmergencyState
from actors.config import Config
from actors.engine import Engine
from tests.daemon_fixture import wait_until
from tests.engine_journal_helpers import captured_logs
from transport.client import ControlClient
from transport.daemon import Daemon
from transport.errors import InternalServerError

LOCAL = "tcp://127.0.0.1:*"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    raw = {"daemon": {"data_dir": str(tmp_path / "data"), "shutdown_grace_s": 0.5},
           "transport": {"events": LOCAL, "control": LOCAL, "heartbeat_s": 0.5},
           "workflows": [{"ref": "tests.e2e_workflows:fast"}]}
    started = Daemon(Config.from_dict(raw))
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_a_stop_whose_journal_cannot_be_written_is_unclean_and_says_so(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = daemon.engine
    assert engine is not None and engine.journal is not None
    assert engine.journal_flush(5)
    # The stop's wait for a failing disk to come back, shortened (5 s in production).
    monkeypatch.setattr(engine, "journal_flush",
                        lambda timeout=5.0: Engine.journal_flush(engine, 0.2))
    engine.journal._testing_fail_commits(10**9)
    engine.halt("the disk is about to fail")  # in force in memory; its event unwritten
    wait_until(lambda: engine.journal.stats()["failing"], 5, "the journal to fail")
    with captured_logs() as logs:
        daemon.stop()
    assert daemon.clean is False
    lines = [e for e in logs if e["event"] == "journal_unwritten_at_stop"]
    assert len(lines) == 1 and lines[0]["log_level"] == "error", logs
    assert lines[0]["unwritten_events"] >= 2  # the halt's and daemon_stopping
    assert "injected" in lines[0]["last_error"]


def test_a_stop_whose_journal_flushed_is_clean(daemon: Daemon) -> None:
    engine = daemon.engine
    assert engine is not None
    engine.halt("a disk that works")
    with captured_logs() as logs:
        daemon.stop()
    assert daemon.clean is True
    assert not [e for e in logs if e["event"] == "journal_unwritten_at_stop"]


def test_an_engine_stopped_while_its_journal_fails_logs_what_it_lost_once(
        tmp_path: Path) -> None:
    engine = Engine.start(Config.from_dict({"daemon": {"data_dir": str(tmp_path)}}))
    try:
        assert engine.journal is not None
        engine.journal._testing_fail_commits(10**9)
        engine.halt("the disk is about to fail")
        wait_until(lambda: engine.journal.stats()["failing"], 5, "the journal to fail")
    finally:
        with captured_logs() as logs:
            engine.stop()
    lines = [e for e in logs if e["event"] == "journal_unwritten_at_stop"]
    assert len(lines) == 1 and lines[0]["unwritten_events"] >= 1, logs
    assert engine.close_journal() is False  # asked again: the same answer, no second line
    assert len([e for e in logs if e["event"] == "journal_unwritten_at_stop"]) == 1


def test_a_submit_met_by_failing_writes_is_answered_at_once_not_after_its_timeout(
        daemon: Daemon) -> None:
    engine = daemon.engine
    assert engine is not None and engine.journal is not None and daemon.control is not None
    assert engine.journal_flush(5)
    engine.journal._testing_fail_commits(10**9)  # the next commit, the submit's record's
    with ControlClient(daemon.control.endpoint, timeout=5.0) as client, \
            pytest.raises(InternalServerError) as refused:
        client.submit("fast")  # (without the fix: no reply within 5 s)
    assert "was accepted, but the journal's writes are failing" in str(refused.value)
    assert "injected" in str(refused.value)
    assert engine.state is EmergencyState.HALT
    engine.journal._testing_fail_commits(0)  # the disk is back: the stop flushes at once
