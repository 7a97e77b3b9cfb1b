"""A submit accepted just as the journal's writes start failing: its reply waits for the
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
