"""`max_dead_letters`: an endpoint refusing every event keeps only its newest dead letters
(the oldest are deleted in the commit that adds a new one), counts what went, and warns
once, then at most every DROP_WARN_EVERY_S. Real journal, real HTTP endpoint."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from actors.config import Config
from actors.engine import Engine
from actors.errors import ConfigError
from actors.webhook import DEAD_WARN_EVERY_S, DROP_WARN_EVERY_S, WebhookManager
from tests.conftest import EngineFactory
from tests.daemon_fixture import DaemonFleet, wait_idle, wait_until
from tests.engine_journal_helpers import eventually
from tests.test_webhooks import Sleeps, emit, hook, wait_log
from tests.test_webhooks_daemon import SECRET_ENV, cli
from tests.test_webhooks_daemon import hooked as hooked_daemon
from tests.webhook_server import EndpointServer

DROPPED = "webhook_dead_letters_dropped"


class Clock:
    """The deliverers' monotonic clock: moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Hooked = Callable[..., tuple[Engine, WebhookManager]]


@pytest.fixture
def refusing() -> Iterator[EndpointServer]:
    """An endpoint answering 400 to everything: each event becomes a dead letter."""
    with EndpointServer() as server:
        server.default_status = 400
        yield server


@pytest.fixture
def hooked(make_engine: EngineFactory, tmp_path: Path,
           clock: Clock) -> Iterator[Hooked]:
    managers: list[WebhookManager] = []

    def factory(url: str, **extra: Any) -> tuple[Engine, WebhookManager]:
        config = {"daemon": {"data_dir": str(tmp_path / "data")},
                  "webhooks": [hook(url, events=["daemon_started"], **extra)]}
        engine = make_engine(config)
        assert engine.journal is not None
        manager = WebhookManager(Config.from_dict(config).webhooks, engine.journal,
                                 environ={}, sleep=Sleeps(), monotonic=clock)
        manager.start()
        managers.append(manager)
        return engine, manager

    yield factory
    for manager in managers:
        manager.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def warnings_on() -> Iterator[None]:
    """Warnings reach capture_logs (tests/conftest.py lets only errors through)."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    yield
    structlog.configure(wrapper_class=wrapper)


def wait_status(manager: WebhookManager, predicate: Callable[[dict[str, Any]], bool],
                timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        (status,) = manager.status()
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"status not as expected: {status}"
        threading.Event().wait(0.01)


def committed(engine: Engine) -> None:
    assert engine.journal is not None and engine.journal.flush(10.0)


def rows_on_disk(engine: Engine) -> list[tuple[int, str]]:
    """(seq, state) of every dead-letter row in the journal, whatever its state."""
    assert engine.journal is not None
    conn = sqlite3.connect(f"{engine.journal.path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, state FROM webhook_dead_letters WHERE endpoint='ops'"
                            " ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.mark.usefixtures("warnings_on")
def test_only_the_newest_dead_letters_are_kept_and_the_rest_counted(
        hooked: Hooked, refusing: EndpointServer, clock: Clock) -> None:
    with capture_logs() as logs:
        engine, manager = hooked(refusing.url, max_dead_letters=3)
        emit(engine, 10)
        requests = refusing.wait_for(lambda reqs: len(reqs) >= 10)
        status = wait_status(manager, lambda s: s["dead"] == 10 and s["dropped"] == 7)
        committed(engine)
    seqs = [r.seqs[0] for r in requests]
    assert len(set(seqs)) == 10 and all(r.status == 400 for r in requests)
    assert [f["seq"] for f in manager.failed()] == seqs[-3:]
    assert rows_on_disk(engine) == [(seq, "dead") for seq in seqs[-3:]]
    assert status["max_dead_letters"] == 3
    warnings = [e for e in logs if e["event"] == DROPPED]
    assert len(warnings) == 1, [e["event"] for e in logs]
    assert warnings[0]["log_level"] == "warning"
    assert (warnings[0]["webhook"], warnings[0]["dropped"], warnings[0]["dropped_total"],
            warnings[0]["max_dead_letters"]) == ("ops", 1, 1, 3)

    with capture_logs() as logs:  # a minute on: the 6 held back get their line, no other
        clock.now += DROP_WARN_EVERY_S  # drop needed to bring it
        eventually(lambda: any(e["event"] == DROPPED for e in logs), 10.0,
                   "the held-back drops' line")
    warnings = [e for e in logs if e["event"] == DROPPED]
    assert [(w["dropped"], w["dropped_total"]) for w in warnings] == [(6, 7)]

    with capture_logs() as logs:  # and the next drop, a minute on again
        clock.now += DROP_WARN_EVERY_S
        emit(engine, 1)
        wait_status(manager, lambda s: s["dropped"] == 8)
        eventually(lambda: any(e["event"] == DROPPED for e in logs), 10.0, "its line")
    warnings = [e for e in logs if e["event"] == DROPPED]
    assert [(w["dropped"], w["dropped_total"]) for w in warnings] == [(1, 8)]


@pytest.mark.usefixtures("warnings_on")
def test_what_the_rate_limit_held_back_is_logged_at_the_stop(
        hooked: Hooked, refusing: EndpointServer) -> None:
    """A stop within the limit's time still tells of the dead letters it held back (they
    were lost from the log: one line saying 1 for a burst of 10)."""
    with capture_logs() as logs:
        engine, manager = hooked(refusing.url)
        emit(engine, 10)
        wait_status(manager, lambda s: s["dead"] == 10)
        manager.stop()
    lines = [e for e in logs if e["event"] == "webhook_dead_letter"]
    assert [(e["dead_since_last_line"], e["dead_total"]) for e in lines] == [(1, 1), (9, 10)]


def test_retried_letters_that_fail_again_count_towards_the_cap(
        hooked: Hooked, refusing: EndpointServer) -> None:
    engine, manager = hooked(refusing.url, max_dead_letters=3)
    emit(engine, 5)
    requests = refusing.wait_for(lambda reqs: len(reqs) >= 5)
    wait_status(manager, lambda s: s["dropped"] == 2)
    committed(engine)
    seqs = [r.seqs[0] for r in requests]
    assert [f["seq"] for f in manager.failed()] == seqs[2:]
    assert len(manager.retry("ops")["requeued"]) == 3
    refusing.wait_for(lambda reqs: len(reqs) >= 8)  # the three, refused again
    wait_log(manager, lambda rows: sum(r["outcome"] == "retry_dead" for r in rows) == 3)
    committed(engine)
    assert [f["seq"] for f in manager.failed()] == seqs[2:]
    emit(engine, 2)
    requests = refusing.wait_for(lambda reqs: len(reqs) >= 10)
    wait_status(manager, lambda s: s["dropped"] == 4)
    committed(engine)
    newest = [r.seqs[0] for r in requests[-2:]]
    assert [f["seq"] for f in manager.failed()] == [seqs[4], *newest]
    assert rows_on_disk(engine) == [(s, "dead") for s in (seqs[4], *newest)]


def test_the_cap_defaults_to_ten_thousand() -> None:
    (parsed,) = Config.from_dict({"webhooks": [hook("https://hooks.example.com/x")]}).webhooks
    assert parsed.max_dead_letters == 10_000
    (parsed,) = Config.from_dict({"webhooks": [hook("https://hooks.example.com/x",
                                                    max_dead_letters=1)]}).webhooks
    assert parsed.max_dead_letters == 1


@pytest.mark.parametrize("value", [0, -5, True, False, 1.5, 10.0, "100"])
def test_a_bad_cap_is_refused_naming_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.max_dead_letters"):
        Config.from_dict({"webhooks": [hook("https://hooks.example.com/x",
                                            max_dead_letters=value)]})


def test_a_bad_cap_in_a_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[webhooks]]\nname = "ops"\nurl = "https://hooks.example.com/x"\n'
                      'secret = "k"\nmax_dead_letters = 0\n')
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "daemon", "--config",
                           str(config)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "webhooks[0].max_dead_letters must be between 1 and 10000000" in line


def test_the_cli_shows_what_the_cap_deleted(tmp_path: Path, refusing: EndpointServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    with DaemonFleet(tmp_path) as fleet:
        daemon = hooked_daemon(fleet, refusing.port, max_dead_letters=2)
        daemon.start()
        with daemon.client() as control:
            control.submit("fast")
            wait_idle(control)

            def caught_up() -> list[dict[str, Any]]:  # with every event, after the last one
                last_seq = int(control.status()["last_seq"])
                return [e for e in control.request("webhooks_log")["endpoints"]
                        if e["next_seq"] > last_seq and e["dead"] >= 3]

            (status,) = wait_until(caught_up, 20.0, "the endpoint to catch up")
            assert status["dropped"] == status["dead"] - 2
            kept = [row["seq"] for row in control.request("webhooks_failed")]
        client = ["--control", daemon.control, "--timeout", "5"]
        proc = cli("webhooks", "failed", *client)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert [line.split()[3] for line in lines[:-1]] == [str(seq) for seq in kept]
        assert lines[-1] == (f"ops: {status['dropped']} older dead letter(s) deleted to "
                             "keep max_dead_letters = 2")
        proc = cli("webhooks", "log", "--limit", "1", *client)
        assert proc.returncode == 0, proc.stderr
        assert f"{status['dropped']} dropped (max_dead_letters = 2)" in proc.stdout
        assert daemon.terminate() == 0


@pytest.mark.usefixtures("warnings_on")
def test_dead_letters_are_logged_once_then_in_summary_lines(
        hooked: Hooked, refusing: EndpointServer, clock: Clock) -> None:
    with capture_logs() as logs:
        engine, manager = hooked(refusing.url)
        emit(engine, 10)
        wait_status(manager, lambda s: s["dead"] == 10)
    lines = [e for e in logs if e["event"] == "webhook_dead_letter"]
    assert len(lines) == 1, [e["event"] for e in logs]  # not one per refused event
    assert (lines[0]["http_status"], lines[0]["dead_since_last_line"],
            lines[0]["dead_total"]) == (400, 1, 1)

    with capture_logs() as logs:  # DEAD_WARN_EVERY_S on: the 9 held back get their line,
        clock.now += DEAD_WARN_EVERY_S  # with no other dead letter to bring it
        eventually(lambda: any(e["event"] == "webhook_dead_letter" for e in logs), 10.0,
                   "the held-back dead letters' line")
    lines = [e for e in logs if e["event"] == "webhook_dead_letter"]
    assert [(e["dead_since_last_line"], e["dead_total"], e["last_seq"]) for e in lines] == [
        (9, 10, max(refusing.delivered_seqs()))]  # the details: the last one's

    with capture_logs() as logs:  # and the next one, DEAD_WARN_EVERY_S on again
        clock.now += DEAD_WARN_EVERY_S
        emit(engine, 1)
        wait_status(manager, lambda s: s["dead"] == 11)
        eventually(lambda: any(e["event"] == "webhook_dead_letter" for e in logs), 10.0,
                   "the next dead letter's line")
    lines = [e for e in logs if e["event"] == "webhook_dead_letter"]
    assert [(e["dead_since_last_line"], e["dead_total"]) for e in lines] == [(1, 11)]
