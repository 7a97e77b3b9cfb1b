"""Probes of the live views that found defects: `tradeloom tail` whose reader left while the
daemon is idle, and text that could restyle or reorder a line of the terminal view."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import TRADELOOM, DaemonProcess, environment, running_daemon


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
