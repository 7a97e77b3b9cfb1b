"""The Prometheus endpoint: `[metrics] listen = "host:port"` serves the text format on
http://host:port/metrics (any path) with prometheus_client's WSGI app and a registry of
its own (not prometheus_client's global one), behind a server that bounds its connections
(`transport.metrics_http`: at most 32 at once, an idle one closed after 10 s).

Cost: nothing runs per event on the engine's threads. A custom collector reads the
engine's own counters and states when Prometheus scrapes; node durations come from a
cursor over the committed log that a metrics thread drains every 10 ms (and each scrape
drains first), in batches (`transport.metrics_feed`). The only per-execution work is one
counter increment where the engine records a finished execution.

Every metric, with its labels, is listed in the README's "Metrics" section. A section
that fails to read (e.g. the supervisors while the daemon stops) is logged and left out
of that scrape; the others are still served.

Binding a non-loopback address is refused unless the daemon runs with `--insecure` (the
metrics carry workflow ids and risk figures, and HTTP has no CURVE).
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from actors import listen_address
from actors.breaker import BreakerState
from actors.emergency import EmergencyState
from actors.engine import Engine
from actors.errors import EngineStopped
from actors.logs import dropped_lines, get_logger
from actors.triggers import IntervalTriggers
from actors.version import VERSION
from transport.control import ControlServer
from transport.errors import TransportError
from transport.metrics_feed import NodeDurations, SubscriptionTotals
from transport.metrics_http import BoundedMetricsServer, bind_metrics_server
from transport.publisher import Publisher
from transport.security import is_loopback

log = get_logger("tradeloom.transport.metrics")

#: How often the metrics thread reads the node events committed since its last look. Its
#: reader keeps the in-memory log's events it has not read yet, and events kept that long
#: outlive the young GC generation: at 1 s (~20,000 events at the daemon's full rate)
#: metrics on cost 12-18 % of throughput (bench/daemon.py, 0.82-0.88x); at 0.1 s the
#: daemon's GC time was still +6 µs per workflow (~2 % of its CPU); at 0.01 s it is as
#: with metrics off (docs/benchmarks-notes.md). 100 wake-ups a second cost ~0.2 % idle.
DRAIN_S = 0.01


class DaemonParts(Protocol):
    """What the collector reads at scrape time (`transport.daemon.Daemon` has them; any
    may be None while the daemon starts or stops)."""

    @property
    def engine(self) -> Engine | None: ...

    @property
    def publisher(self) -> Publisher | None: ...

    @property
    def control(self) -> ControlServer | None: ...

    @property
    def triggers(self) -> IntervalTriggers | None: ...


def parse_listen(listen: str) -> tuple[str, int]:
    """`[metrics] listen` as (host, port); ConfigError naming the key (checked at load)."""
    return listen_address.parse_listen(listen, "metrics.listen")


class MetricsServer:
    """`start()` binds (or raises `TransportError` naming the address) and starts the
    drain thread; `stop()` closes both. `port` is the bound port once started."""

    def __init__(self, listen: str, parts: DaemonParts, *, insecure: bool = False,
                 drain_s: float = DRAIN_S) -> None:
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self._parts = parts
        self._insecure = insecure
        self._drain_s = drain_s
        #: The node durations' feed, once started.
        self.durations: NodeDurations | None = None
        self._httpd: BoundedMetricsServer | None = None
        self._http_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self._insecure and not is_loopback(f"tcp://[{self.host}]:{self.port}"):
            raise TransportError(
                f"refusing to serve metrics on {self.listen}: it is not a loopback address "
                "and HTTP has no CURVE; pass --insecure to expose them")
        engine = self._parts.engine
        if engine is None:
            raise RuntimeError("the metrics endpoint needs a started engine")
        durations = self.durations = NodeDurations(engine.sink.log.reader())
        # Collectors without describe(): without `support_collectors_without_names`, a
        # scrape filtered by `?name[]=` found none of them and served an empty page.
        registry = CollectorRegistry(auto_describe=False,
                                     support_collectors_without_names=True)
        registry.register(TradeloomCollector(self._parts, durations))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        try:
            httpd = self._httpd = bind_metrics_server(self.host, self.port, registry)
        except OSError as exc:
            durations.close()
            raise TransportError(f"cannot bind the metrics endpoint on {self.listen} "
                                 f"([metrics] listen): {exc.strerror or exc}") from None
        self.port = httpd.server_port
        self._http_thread = threading.Thread(target=httpd.serve_forever,
                                             name="tradeloom-metrics-http", daemon=True)
        self._http_thread.start()
        self._thread = threading.Thread(target=self._drain, name="tradeloom-metrics",
                                        daemon=True)
        self._thread.start()
        log.info("metrics_listening", listen=f"{self.host}:{self.port}")

    def _drain(self) -> None:
        durations = self.durations
        assert durations is not None
        while not self._stopping.wait(self._drain_s):
            try:
                durations.drain()
            except Exception:  # a failed read is retried at the next turn
                log.exception("metrics_drain_failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and draining. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout)
        if self.durations is not None:
            self.durations.close()


class TradeloomCollector(Collector):
    """Reads the daemon's counters and states at scrape time (see the module docstring)."""

    def __init__(self, parts: DaemonParts, durations: NodeDurations) -> None:
        self._parts = parts
        self._durations = durations
        self._subscriptions = SubscriptionTotals()

    def collect(self) -> Iterator[Metric]:
        engine = self._parts.engine
        if engine is None:
            return
        try:
            status = engine.status()
        except Exception:  # the other sections are still served
            log.exception("metrics_status_failed")
            status = {"uptime_s": None, "journal": None}
        sections: tuple[Callable[[Engine, dict[str, Any]], list[Metric]], ...] = (
            self._about, self._executions, self._nodes, self._events, self._control,
            self._emergency, self._journal, self._triggers)
        for section in sections:
            try:
                families = section(engine, status)
            except EngineStopped:  # a scrape in flight at the daemon's stop: not an error
                log.debug("metrics_section_skipped", section=section.__name__,
                          why="the engine is stopped")
                continue
            except Exception:  # the other sections are still served
                log.exception("metrics_section_failed", section=section.__name__)
                continue
            yield from families

    def _about(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        families: list[Metric] = [InfoMetricFamily(
            "tradeloom_build", "tradeloom's version (value 1)",
            value={"version": VERSION, "python": platform.python_version()})]
        if status["uptime_s"] is not None:
            families.append(_gauge("tradeloom_uptime_seconds", "Seconds since the engine "
                                   "started", status["uptime_s"]))
        families.append(_counter("tradeloom_log_lines_dropped_total", "Log lines dropped "
                                 "because writing them failed (stderr closed, a broken "
                                 "pipe, a logging set-up that raises)", dropped_lines()))
        return families

    def _executions(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        ended = CounterMetricFamily(
            "tradeloom_executions_total", "Executions that ended, by workflow and terminal "
            "status (refused: never admitted; interrupted: left open by the last process)",
            labels=["workflow", "status"])
        for (workflow, ending), count in sorted(engine.execution_counts().items()):
            ended.add_metric([workflow, ending], count)
        admission = engine.admission
        return [ended,
                _gauge("tradeloom_executions_running", "Executions running now",
                       admission.running),
                _gauge("tradeloom_executions_queued", "Executions waiting for a running slot",
                       admission.queued)]

    def _nodes(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        self._durations.drain()
        bounds = self._durations.buckets_ms
        histogram = HistogramMetricFamily(
            "tradeloom_node_duration_seconds", "Node run durations by node category and "
            "outcome (completed or failed; cache hits are not counted)",
            labels=["category", "status"])
        for (category, outcome), counts in sorted(self._durations.snapshot().items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(bounds, counts, strict=False):
                cumulative += count
                buckets.append((repr(bound / 1000.0), cumulative))
            buckets.append(("+Inf", cumulative + counts[len(bounds)]))
            histogram.add_metric([category, outcome], buckets, sum_value=counts[-1] / 1000.0)
        families: list[Metric] = [histogram]
        stats = engine.supervisor_stats()
        families += [
            _gauge("tradeloom_node_actors", "Node actors (threads) alive",
                   sum(s["node_actors"] for s in stats)),
            _gauge("tradeloom_node_runs_in_flight", "Node functions running now",
                   sum(s["runs_in_flight"] for s in stats)),
            _counter("tradeloom_node_actors_abandoned_total", "Node actors left stuck in a "
                     "timed-out or cancelled run (and replaced)",
                     sum(s["node_actors_abandoned"] for s in stats))]
        return families

    def _events(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        event_log = engine.sink.log
        committed = event_log.committed_seq
        live = event_log.subscriptions
        totals = self._subscriptions.observe(live)
        lag = max((committed - sub.next_seq + 1 for sub in live), default=0)
        families: list[Metric] = [
            _gauge("tradeloom_events_last_seq", "The last committed event seq", committed),
            _gauge("tradeloom_subscriptions", "In-process subscriptions (engine.subscribe)",
                   len(live)),
            _gauge("tradeloom_subscription_lag_events", "Committed events the furthest "
                   "behind in-process subscription has yet to handle", max(lag, 0)),
            _counter("tradeloom_subscription_gaps_total", "Gap notices given to in-process "
                     "subscriptions that fell behind the in-memory log", totals["gaps"]),
            _counter("tradeloom_subscription_missed_events_total", "Events those gaps lost",
                     totals["missed"]),
            _counter("tradeloom_subscription_failures_total", "Subscriber callbacks that "
                     "raised", totals["failures"])]
        publisher = self._parts.publisher
        if publisher is not None:
            stats = publisher.stats()
            families += [
                _counter("tradeloom_events_published_total", "Events sent on the event "
                         "socket", stats["sent"]),
                _counter("tradeloom_events_dropped_total", "Events the event socket refused "
                         "(a full subscriber queue, with nodrop)", stats["dropped"]),
                _counter("tradeloom_publisher_notices_dropped_total", "Heartbeats and system "
                         "notices the event socket refused", stats["notices_dropped"]),
                _counter("tradeloom_events_unsendable_total", "Events that could not be "
                         "encoded (logged and skipped)", stats["unsendable"]),
                _gauge("tradeloom_publisher_lag_events", "Committed events not yet handed "
                       "to the event socket", max(committed - stats["last_seq"], 0)),
                _gauge("tradeloom_publisher_subscriptions", "Topic subscriptions on the event "
                       "socket (subscribe minus unsubscribe messages seen)",
                       max(stats["subscriptions"] - stats["unsubscriptions"], 0))]
        return families

    def _control(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        control = self._parts.control
        if control is None:
            return []
        requests = CounterMetricFamily(
            "tradeloom_control_requests_total", "Well-formed control requests, by op (e.g. "
            "op=\"replay\": replay requests)", labels=["op"])
        for op, count in sorted(control.op_counts().items()):
            requests.add_metric([op], count)
        stats = control.stats()
        pending = GaugeMetricFamily("tradeloom_control_pending_requests", "Control requests "
                                    "being run, by lane", labels=["lane"])
        pending.add_metric(["urgent"], stats["pending_urgent"])
        pending.add_metric(["pool"], stats["pending_pool"])
        return [requests, pending,
                _counter("tradeloom_control_errors_total", "Control requests answered with "
                         "an error (any code)", stats["errors"])]

    def _emergency(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        current = engine.state
        state = GaugeMetricFamily("tradeloom_emergency_state", "1 for the current emergency "
                                  "state, 0 for the others", labels=["state"])
        for member in EmergencyState:
            state.add_metric([member.value], 1 if member is current else 0)
        with engine.sink.lock:
            limits = engine.gate.book.stats()
        families: list[Metric] = [state]
        for name, help_text, field in (
                ("tradeloom_risk_limit_value", "A risk limit's current figure", "value"),
                ("tradeloom_risk_limit_threshold", "A risk limit's threshold", "threshold"),
                ("tradeloom_risk_limit_utilization_ratio",
                 "A risk limit's value / threshold (position_size: |value| / threshold)",
                 "utilization"),
                ("tradeloom_risk_limit_exceeded", "1 while a risk limit is exceeded",
                 "exceeded"),
                ("tradeloom_risk_limit_stale", "1 while a risk limit's feed is stale",
                 "stale")):
            family = GaugeMetricFamily(name, help_text, labels=["limit"])
            for limit, stats in sorted(limits.items()):
                family.add_metric([limit], float(stats[field]))
            families.append(family)
        breakers = GaugeMetricFamily("tradeloom_circuit_breaker_state", "1 for each "
                                     "breaker's current state, 0 for the others",
                                     labels=["breaker", "state"])
        for key, value in sorted(engine.breakers.states().items()):
            for breaker_state in BreakerState:
                breakers.add_metric([key, breaker_state.value],
                                    1 if breaker_state.value == value else 0)
        families.append(breakers)
        return families

    def _journal(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        stats = status["journal"]
        if stats is None:
            return []
        return [
            SummaryMetricFamily("tradeloom_journal_commit_duration_seconds", "Journal "
                                "commits (one transaction each) and the time they took",
                                count_value=stats["commits"],
                                sum_value=stats["commit_ms_total"] / 1000.0),
            _gauge("tradeloom_journal_last_commit_duration_seconds", "The last commit's "
                   "duration", stats["commit_ms_last"] / 1000.0),
            _gauge("tradeloom_journal_max_commit_duration_seconds", "The longest commit",
                   stats["commit_ms_max"] / 1000.0),
            _gauge("tradeloom_journal_lag_events", "Events appended but not yet committed",
                   stats["lag"]),
            _gauge("tradeloom_journal_pending_records", "Records (event batches, snapshots, "
                   "intents) queued for the journal's writer", stats["pending"]),
            _counter("tradeloom_journal_events_committed_total", "Events committed",
                     stats["events_committed"]),
            _counter("tradeloom_journal_commit_failures_total", "Commits that failed",
                     stats["failures"]),
            _gauge("tradeloom_journal_failing", "1 while journal writes fail (the engine is "
                   "halted)", 1 if stats["failing"] else 0),
            _counter("tradeloom_journal_pruned_rows_total", "Event rows removed by "
                     "retention", stats["pruned_rows"]),
            _gauge("tradeloom_journal_retention_held_events", "Events retention would "
                   "prune that an unresolved intent or a webhook's cursor keeps",
                   stats["retention_held_events"])]

    def _triggers(self, engine: Engine, status: dict[str, Any]) -> list[Metric]:
        triggers = self._parts.triggers
        if triggers is None:
            return []
        stats = triggers.stats()
        families: list[Metric] = []
        for field, help_text in (("submitted", "Executions an interval trigger submitted"),
                                 ("skipped", "Turns an interval trigger skipped (its last "
                                  "execution still ran, or the process stalled)"),
                                 ("refused", "Submits of an interval trigger that were "
                                  "refused")):
            family = CounterMetricFamily(f"tradeloom_trigger_{field}_total", help_text,
                                         labels=["workflow"])
            for workflow, counts in sorted(stats.items()):
                family.add_metric([workflow], counts[field])
            families.append(family)
        return families


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)

