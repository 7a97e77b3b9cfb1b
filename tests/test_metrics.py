"""The Prometheus endpoint (`[metrics] listen`, issue 11 item 5): a daemon in this process
does known things, then /metrics is scraped over HTTP and parsed with prometheus_client's
own parser; the values must be exactly what the test did. `promtool check metrics` (Debian's
`prometheus` package) lints the same text when it is installed."""

from __future__ import annotations

import itertools
import math
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from actors import Config, Engine, Node, NodeContext, Workflow
from actors.clock import ManualClock
from actors.config import LimitConfig
from actors.errors import ConfigError, TradeloomError, WorkflowDefinitionError
from actors.eventlog import EventLog
from actors.risk import RiskBook
from actors.version import VERSION
from tests.engine_journal_helpers import captured_logs
from tests.journal_helpers import started
from transport.client import ControlClient
from transport.daemon import Daemon
from transport.errors import HaltedError, TransportError
from transport.metrics import TradeloomCollector, parse_listen
from transport.metrics_feed import NODE_BUCKETS_MS, NodeDurations

LOCAL = "tcp://127.0.0.1:*"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def price(ctx: NodeContext) -> dict[str, float]:
    return {"price": 50_000.0}


def boom(ctx: NodeContext) -> None:
    raise ValueError("exchange down")


OK = Workflow("metrics_ok", nodes=[
    Node("price", price, category="provider"),
    Node("calc", lambda ctx: ctx.upstream["price"], depends_on=["price"])])
BAD = Workflow("metrics_bad", nodes=[
    Node("order", boom, category="action", breaker="exch")])


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """`start_daemon(metrics=True, **sections)`: a started daemon on loopback ports the OS
    picks (metrics on port 0: a free one), stopped after the test."""
    daemons: list[Daemon] = []

    def start(metrics: bool = True, listen: str = "127.0.0.1:0", insecure: bool = False,
              **sections: Any) -> Daemon:
        raw: dict[str, Any] = {
            "daemon": {"data_dir": str(tmp_path / "data"), "shutdown_grace_s": 1.0},
            "transport": {"events": LOCAL, "control": LOCAL, "heartbeat_s": 0.5},
            **sections}
        if metrics:
            raw["metrics"] = {"listen": listen}
        daemon = Daemon(Config.from_dict(raw), insecure=insecure)
        daemons.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def scrape(daemon: Daemon) -> str:
    assert daemon.metrics is not None
    url = f"http://127.0.0.1:{daemon.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text: str = response.read().decode()
    return text


def test_a_scrape_filtered_by_name_serves_those_metrics(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    assert daemon.metrics is not None
    url = (f"http://127.0.0.1:{daemon.metrics.port}/metrics?name[]=tradeloom_uptime_seconds"
           "&name[]=process_cpu_seconds_total")
    with urllib.request.urlopen(url, timeout=10) as response:
        names = {line.split()[0] for line in response.read().decode().splitlines()
                 if line and not line.startswith("#")}
    assert names == {"tradeloom_uptime_seconds", "process_cpu_seconds_total"}


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def series(found: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in found.items() if sample == name}


def one(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def listening_ports() -> set[int]:
    """TCP ports this process listens on (its socket inodes matched in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_the_metrics_match_what_the_daemon_did(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(
        resilience={"breaker_failure_threshold": 1, "breaker_reset_timeout_s": 600.0,
                    "max_restarts": 0},
        emergency={"limits": [{"name": "daily_loss", "kind": "daily_loss",
                               "threshold": 1000.0, "auto_halt": False}]})
    engine = daemon.engine
    assert engine is not None and daemon.control is not None and daemon.publisher is not None
    engine.register(OK)

    def fail_on_completed(event: dict[str, Any]) -> None:
        if event["type"] == "execution_completed":
            raise RuntimeError("a subscriber that raises")

    subscription = engine.subscribe(fail_on_completed)
    for _ in range(3):
        assert engine.submit(OK).result(10).status == "completed"
    # The first failure opens the breaker; the second execution is failed by it at once
    # (node_skipped, circuit_open): one failed node run, two failed executions.
    for _ in range(2):
        assert engine.submit(BAD).result(10).status == "failed"
    with ControlClient(daemon.control.endpoint, timeout=10.0) as client:
        client.risk_update("daily_loss", value=250.0)
        assert client.replay(1)["events"]
        assert client.halt("metrics test")["state"] == "HALT"
        with pytest.raises(HaltedError):
            client.submit("metrics_ok")
    assert subscription.catch_up(10.0)
    assert daemon.publisher.wait_sent(engine.sink.log.committed_seq, 10.0)

    text = scrape(daemon)
    found = samples(text)

    assert series(found, "tradeloom_executions_total") == {
        frozenset({("workflow", "metrics_ok"), ("status", "completed")}): 3.0,
        frozenset({("workflow", "metrics_bad"), ("status", "failed")}): 2.0,
        frozenset({("workflow", "metrics_ok"), ("status", "refused")}): 1.0}
    assert one(found, "tradeloom_executions_running") == 0
    assert one(found, "tradeloom_executions_queued") == 0
    assert series(found, "tradeloom_emergency_state") == {
        frozenset({("state", state)}): float(state == "HALT")
        for state in ("NORMAL", "ALERT", "REDUCE_ONLY", "HALT")}
    assert one(found, "tradeloom_risk_limit_value", limit="daily_loss") == 250.0
    assert one(found, "tradeloom_risk_limit_threshold", limit="daily_loss") == 1000.0
    assert one(found, "tradeloom_risk_limit_utilization_ratio", limit="daily_loss") == 0.25
    assert one(found, "tradeloom_risk_limit_exceeded", limit="daily_loss") == 0
    assert series(found, "tradeloom_circuit_breaker_state") == {
        frozenset({("breaker", "exch"), ("state", state)}): float(state == "open")
        for state in ("closed", "open", "half_open")}

    counts = series(found, "tradeloom_node_duration_seconds_count")
    assert counts == {frozenset({("category", "provider"), ("status", "completed")}): 3.0,
                      frozenset({("category", "transform"), ("status", "completed")}): 3.0,
                      frozenset({("category", "action"), ("status", "failed")}): 1.0}
    buckets = series(found, "tradeloom_node_duration_seconds_bucket")
    provider = sorted((float(dict(labels)["le"]), value) for labels, value in buckets.items()
                      if ("category", "provider") in labels)
    assert len(provider) == len(NODE_BUCKETS_MS) + 1 and provider[-1] == (math.inf, 3.0)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(provider))

    requests = series(found, "tradeloom_control_requests_total")
    assert {dict(labels)["op"]: value for labels, value in requests.items() if value} == {
        "risk_update": 1.0, "replay": 1.0, "halt": 1.0, "submit": 1.0}
    assert one(found, "tradeloom_control_errors_total") == 1.0  # the refused submit
    assert one(found, "tradeloom_subscriptions") == 1
    assert one(found, "tradeloom_subscription_failures_total") == 3.0
    assert one(found, "tradeloom_subscription_gaps_total") == 0

    committed = engine.sink.log.committed_seq
    assert one(found, "tradeloom_events_last_seq") == committed
    assert one(found, "tradeloom_journal_events_committed_total") == committed
    assert one(found, "tradeloom_events_published_total") == daemon.publisher.stats()["sent"]
    assert one(found, "tradeloom_events_published_total") > 0
    assert one(found, "tradeloom_publisher_lag_events") == 0
    assert one(found, "tradeloom_events_dropped_total") == 0
    assert one(found, "tradeloom_journal_commit_duration_seconds_count") >= 1
    assert one(found, "tradeloom_journal_failing") == 0
    assert one(found, "tradeloom_journal_lag_events") == 0
    assert one(found, "tradeloom_build_info", version=VERSION,
               python=platform.python_version()) == 1
    assert one(found, "tradeloom_uptime_seconds") > 0
    assert daemon.metrics is not None and daemon.metrics.port in listening_ports()
    check_with_promtool(text)


def check_with_promtool(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): the values were "
                    "checked, the lint was not")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


def test_executions_left_open_by_the_last_process_count_as_interrupted(
        start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    with started(tmp_path / "data") as (journal, _):
        journal.record_submitted("exec_metrics_ok_0000000a", "metrics_ok", {}, None, None, 0,
                                 "2026-01-01T00:00:00.000Z")
        assert journal.flush(10.0)
    found = samples(scrape(start_daemon()))
    assert series(found, "tradeloom_executions_total") == {
        frozenset({("workflow", "metrics_ok"), ("status", "interrupted")}): 1.0}


def test_the_metrics_thread_reads_node_events_without_a_scrape(
        start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    assert daemon.engine is not None and daemon.metrics is not None
    durations = daemon.metrics.durations
    assert durations is not None
    for _ in range(3):
        daemon.engine.submit(OK).result(10)
    committed = daemon.engine.sink.log.committed_seq
    assert wait_until(lambda: durations.drained_seq >= committed, 10.0)
    assert sum(durations.snapshot()[("provider", "completed")][:-1]) == 3


def test_interval_triggers_are_counted(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(workflows=[{"ref": "tests.test_metrics:OK", "every_s": 0.05}])
    assert daemon.triggers is not None
    trigger = daemon.triggers.triggers[0]
    assert wait_until(lambda: trigger.submitted >= 2, 10.0), "the trigger never ran twice"
    found = samples(scrape(daemon))
    submitted = one(found, "tradeloom_trigger_submitted_total", workflow="metrics_ok")
    assert submitted >= 2 and submitted <= trigger.submitted
    assert ("tradeloom_trigger_skipped_total", frozenset({("workflow", "metrics_ok")})) in found


@pytest.mark.parametrize("name", ["\ud800", "loss\udfff"], ids=["lone", "trailing"])
def test_a_name_with_a_lone_surrogate_is_refused_where_it_is_defined(
        start_daemon: Callable[..., Daemon], name: str) -> None:
    """A label UTF-8 cannot carry made every scrape answer 500 (prometheus_client encodes
    the whole page). Possible in-process only: TOML has no lone surrogates."""
    with pytest.raises(ConfigError, match=r"^emergency\.limits\[0\]\.name: "):
        start_daemon(emergency={"limits": [{"name": name, "kind": "custom",
                                            "threshold": 5.0}]})
    with pytest.raises(ConfigError, match=r"^risk limit name "):  # a Config built by hand
        RiskBook((LimitConfig(name=name, kind="custom", threshold=5.0),), warn_at=0.8,
                 clock=ManualClock())
    with pytest.raises(WorkflowDefinitionError, match="breaker"):
        Node("order", boom, category="action", breaker=name)


def test_odd_but_valid_label_values_are_escaped(start_daemon: Callable[..., Daemon]) -> None:
    """Workflow and node ids are [A-Za-z0-9_.-]; limit and breaker names are any text
    UTF-8 can carry, quotes, backslashes and newlines included."""
    limit, breaker = 'loss "é"\n\\', 'exch "ü"\n\\'
    daemon = start_daemon(emergency={"limits": [{"name": limit, "kind": "custom",
                                                 "threshold": 5.0, "auto_halt": False}]})
    assert daemon.engine is not None
    wf = Workflow("odd_names", nodes=[Node("order", boom, category="action", breaker=breaker)])
    assert daemon.engine.submit(wf).result(10).status == "failed"
    found = samples(scrape(daemon))
    assert one(found, "tradeloom_risk_limit_threshold", limit=limit) == 5.0
    assert one(found, "tradeloom_circuit_breaker_state", breaker=breaker, state="closed") == 1


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: a bounded wait between two looks
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


def test_a_port_in_use_fails_start_up_naming_the_address(
        start_daemon: Callable[..., Daemon]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TransportError) as caught:
            start_daemon(listen=f"127.0.0.1:{port}")
    message = str(caught.value)
    assert isinstance(caught.value, TradeloomError)
    assert f"127.0.0.1:{port}" in message and "[metrics] listen" in message
    assert "\n" not in message
    # Everything it had started was closed again: the data_dir is free for the next one.
    assert start_daemon(metrics=False).engine is not None


def test_without_metrics_no_port_is_opened(start_daemon: Callable[..., Daemon]) -> None:
    before = listening_ports()
    daemon = start_daemon(metrics=False)
    assert daemon.metrics is None
    assert daemon.publisher is not None and daemon.control is not None
    assert listening_ports() - before == {port_of(daemon.publisher.endpoint),
                                          port_of(daemon.control.endpoint)}


def test_a_non_loopback_address_needs_insecure(start_daemon: Callable[..., Daemon]) -> None:
    with pytest.raises(TransportError, match=r"0\.0\.0\.0:0.*--insecure"):
        start_daemon(listen="0.0.0.0:0")


@pytest.mark.parametrize("listen", ["9464", ":9464", "localhost:", "localhost:http",
                                    "127.0.0.1:65536", "127.0.0.1:-1", ""])
def test_a_bad_listen_value_names_the_key(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        parse_listen(listen)


def test_listen_values() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("localhost:80") == ("localhost", 80)


@given(st.text(max_size=40))
def test_any_listen_text_parses_or_is_a_config_error(listen: str) -> None:
    try:
        host, port = parse_listen(listen)
    except ConfigError:
        return
    assert host and 0 <= port <= 65535


def node_events(*rows: tuple[str, str, str, float | None, bool]) -> list[dict[str, Any]]:
    """(type, node_id, category, duration_ms, cached) rows as sequenced events."""
    events = []
    for seq, (kind, node_id, category, duration_ms, cached) in enumerate(rows, 1):
        event: dict[str, Any] = {"seq": seq, "type": kind, "workflow_id": "wf",
                                 "node_id": node_id}
        if kind == "node_started":
            event["node_category"] = category
        else:
            event["duration_ms"] = duration_ms
        if cached:
            event["cached"] = True
        events.append(event)
    return events


def test_node_durations_land_in_their_buckets() -> None:
    log = EventLog()
    durations = NodeDurations(log.reader(), max_nodes=2)
    log.append(node_events(
        ("node_started", "a", "provider", None, False),
        ("node_completed", "a", "", 0.01, False),      # on a bound: that bucket (le is <=)
        ("node_started", "a", "provider", None, False),
        ("node_completed", "a", "", 0.0101, False),    # just past it: the next one
        ("node_started", "a", "provider", None, True),
        ("node_completed", "a", "", 0.0, True),        # a cache hit: not counted
        ("node_started", "b", "action", None, False),
        ("node_failed", "b", "", 70_000.0, False),     # past the last bound
        ("node_started", "c", "condition", None, False),  # a third node: over max_nodes
        ("node_completed", "c", "", 1.0, False)))
    assert durations.drain() == 10
    assert durations.drain() == 0
    snapshot = durations.snapshot()
    provider = snapshot[("provider", "completed")]
    assert provider[0] == 1 and provider[1] == 1 and sum(provider[:-1]) == 2
    assert provider[-1] == pytest.approx(0.0201)
    action = snapshot[("action", "failed")]
    assert action[len(NODE_BUCKETS_MS)] == 1 and sum(action[:-1]) == 1
    assert sum(snapshot[("unknown", "completed")][:-1]) == 1
    assert set(snapshot) == {("provider", "completed"), ("action", "failed"),
                             ("unknown", "completed")}
    durations.close()


class StoppedParts:
    """What a scrape still in flight at the daemon's stop reads: an engine already stopped."""

    def __init__(self) -> None:
        self.engine = Engine.start()
        self.engine.stop()
        self.publisher = self.control = self.triggers = None


def test_a_scrape_of_a_stopped_engine_serves_what_it_can_and_logs_no_error() -> None:
    parts = StoppedParts()
    collector = TradeloomCollector(parts, NodeDurations(parts.engine.sink.log.reader()))
    with captured_logs() as logs:
        names = {family.name for family in collector.collect()}
    assert "tradeloom_build" in names and "tradeloom_executions_running" in names
    assert "tradeloom_node_actors" not in names, "the supervisors are gone"
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    assert [e["section"] for e in logs if e["event"] == "metrics_section_skipped"] == ["_nodes"]
