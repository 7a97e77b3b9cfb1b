"""Webhooks in the real daemon (a subprocess): an endpoint down across a restart (SIGTERM
and kill -9) gets every event after, in seq order, with no gap; dead letters through the
CLI, a removed endpoint's deleted; a missing secret stops start-up with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import (
    ROOT,
    DaemonFleet,
    DaemonProcess,
    child_env,
    toml_text,
    wait_idle,
)
from tests.ports import free_port
from tests.webhook_server import EndpointServer

SECRET_ENV = "TL_TEST_HOOK_SECRET"


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonFleet]:
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    with DaemonFleet(tmp_path) as fleet:
        yield fleet


def hooked(fleet: DaemonFleet, port: int, **extra: Any) -> DaemonProcess:
    return fleet.daemon(workflows=("fast",), config={"webhooks": [{
        "name": "ops", "url": f"http://127.0.0.1:{port}/hook", "secret_env": SECRET_ENV,
        "allow_private": True, "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
        "timeout_s": 2.0, **extra}]})


def run_and_submit(daemon: DaemonProcess, count: int) -> int:
    """Start (or restart) the daemon, run `count` executions; the last committed seq."""
    daemon.start()
    with daemon.client() as control:
        for _ in range(count):
            control.submit("fast")
        return int(wait_idle(control)["last_seq"])


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_endpoint_down_across_a_restart_gets_every_event_in_order(
        fleet: DaemonFleet, stop: str) -> None:
    port = free_port()  # nothing listens there yet: the endpoint is down
    daemon = hooked(fleet, port)
    run_and_submit(daemon, 3)
    with daemon.client() as control:  # down, not failing: its breaker opens, no dead letter
        _wait(control, lambda c: c.request("webhooks_log")["endpoints"][0]["breaker"] == "open")
        assert control.request("webhooks_failed") == []
    if stop == "sigterm":
        assert daemon.terminate() == 0
    else:
        daemon.kill()
    with EndpointServer(port) as endpoint:
        last = run_and_submit(daemon, 2)
        endpoint.wait_for(lambda reqs: {s for r in reqs for s in r.seqs} >= set(
            range(1, last + 1)), timeout=30.0)
        seqs = endpoint.delivered_seqs()
        assert seqs == sorted(seqs), "delivered out of seq order"
        assert sorted(set(seqs))[:last] == list(range(1, last + 1)), "a gap"
        with daemon.client() as control:
            assert control.request("webhooks_failed") == []
        assert daemon.terminate() == 0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`tradeloom ARGS` in a subprocess (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "actors.cli", *args], check=False, cwd=ROOT,
                          env=child_env(), capture_output=True, text=True,
                          timeout=30)


def test_dead_letter_and_retry_through_the_cli(fleet: DaemonFleet) -> None:
    with EndpointServer() as endpoint:
        endpoint.default_status = 400
        daemon = hooked(fleet, endpoint.port)
        daemon.start()
        client = ["--control", daemon.control, "--timeout", "5"]
        with daemon.client() as control:
            dead = _wait(control, lambda c: c.request("webhooks_failed"))
        assert dead[0]["http_status"] == 400 and dead[0]["attempts"] == 1
        proc = cli("webhooks", "failed", "--json", *client)
        assert proc.returncode == 0, proc.stderr
        listed = json.loads(proc.stdout)
        assert [row["seq"] for row in listed] == [row["seq"] for row in dead]
        endpoint.default_status = 200
        before = len(endpoint.requests)
        proc = cli("webhooks", "retry", "--id", str(dead[0]["id"]), *client)
        assert proc.returncode == 0 and "re-queued 1" in proc.stdout, proc.stderr
        requests = endpoint.wait_for(lambda reqs: any(
            r.status == 200 and r.seqs == [dead[0]["seq"]] for r in reqs[before:]))
        assert requests
        proc = cli("webhooks", "log", "--json", *client)
        assert proc.returncode == 0, proc.stderr
        log = json.loads(proc.stdout)
        assert log["endpoints"][0]["name"] == "ops"
        assert any(row["outcome"] == "retry_delivered" for row in log["deliveries"])
        proc = cli("webhooks", "failed", "--name", "nope", *client)
        assert proc.returncode == 1 and "no webhook named 'nope'" in proc.stderr
        assert daemon.terminate() == 0


def test_a_removed_endpoints_dead_letters_are_listed_and_deleted_through_the_cli(
        fleet: DaemonFleet) -> None:
    with EndpointServer() as endpoint:
        endpoint.default_status = 400
        daemon = hooked(fleet, endpoint.port, events=["daemon_started"])
        daemon.start()
        with daemon.client() as control:
            _wait(control, lambda c: c.request("webhooks_failed"))
        assert daemon.terminate() == 0
        endpoint.default_status = 200
        daemon.config["webhooks"][0]["name"] = "ops2"  # "ops" is removed from the config
        daemon.config_path.write_text(toml_text(daemon.config), encoding="utf-8")
        daemon.start()
        client = ["--control", daemon.control, "--timeout", "5"]
        with daemon.client() as control:
            dead = control.request("webhooks_failed", name="ops")
        assert dead and {row["endpoint"] for row in dead} == {"ops"}
        proc = cli("webhooks", "retry", "--name", "ops", *client)
        assert proc.returncode == 1 and "nothing can send them" in proc.stderr, proc.stderr
        proc = cli("webhooks", "delete", "--name", "ops", *client)  # before: no such command
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"deleted {len(dead)} dead letter(s)\n"
        with daemon.client() as control:
            assert control.request("webhooks_failed") == []
        proc = cli("webhooks", "delete", *client)
        assert proc.returncode == 2 and "give --name WEBHOOK or --id N" in proc.stderr
        assert daemon.terminate() == 0


def test_missing_secret_env_stops_start_up_with_exit_2(
        fleet: DaemonFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)
    daemon = hooked(fleet, free_port()).spawn()
    assert daemon.wait_exit() == 2
    assert f"webhooks[0].secret_env: environment variable {SECRET_ENV}" in daemon.stderr()


def _wait(control: Any, fetch: Any, timeout: float = 20.0) -> Any:
    from tests.daemon_fixture import wait_until

    return wait_until(lambda: fetch(control), timeout, "the webhook's state", poll_s=0.05)
