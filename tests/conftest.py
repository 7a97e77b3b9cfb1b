"""Shared fixtures: real engines (real pykka actors and threads), event recorders that
wait on conditions, never on bare sleeps, and a check of every event the suite emits
against its declared type (`actors.event_types`): a test that makes an engine emit an
invalid event fails."""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from actors import Config, EmergencyState, Engine
from actors.clock import Clock
from actors.events import Event, EventSink, Subscription, validate_event

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

#: Waits for a subscription to catch up before reading what it recorded.
CATCH_UP_S = 10.0


class RecordingSink(EventSink):
    """An EventSink that also keeps every event it sequences, in order (no thread): for
    tests that drive the pure parts (breaker, kill switch) without an engine."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.recorded: list[Event] = []

    def emit_locked(self, events: list[Event]) -> None:
        super().emit_locked(events)
        self.recorded.extend(events)


class Recorder:
    """Collects events from an engine subscription; `wait_for` blocks on a condition.

    Subscribe it with `rec.follow(engine)`: then every read (`events`, `of_type`, ...)
    first lets the subscription catch up with what the engine has committed, since
    subscribers run on their own threads (`handle.result()` already implies the
    execution's events are in).
    """

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.subscription: Subscription | None = None

    def follow(self, source: Engine | EventSink, **filters: Any) -> Recorder:
        """Subscribe to an engine (or a bare sink) and remember the subscription."""
        self.subscription = source.subscribe(self, **filters)
        return self

    def __call__(self, event: dict[str, Any]) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def catch_up(self) -> None:
        if self.subscription is not None and not self.subscription.catch_up(CATCH_UP_S):
            raise AssertionError(f"subscription did not catch up within {CATCH_UP_S}s")

    @property
    def events(self) -> list[dict[str, Any]]:
        self.catch_up()
        with self._cond:
            return list(self._events)

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._events), timeout):
                raise AssertionError(f"condition not met within {timeout}s; "
                                     f"{len(self._events)} events seen")
            return list(self._events)

    def wait_type(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        self.wait_for(lambda evs: sum(e["type"] == kind for e in evs) >= count, timeout)
        return self.of_type(kind)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def for_execution(self, execution_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("execution_id") == execution_id]

    def types(self, execution_id: str | None = None) -> list[str]:
        return [e["type"] for e in self.events
                if execution_id is None or e.get("execution_id") == execution_id]


def state_now(engine: Engine) -> EmergencyState:
    """`engine.state`, typed as declared. mypy keeps an earlier `assert engine.state is X`
    narrowing past the calls that change the state (python/mypy#9005), so a later check
    of a changed state reads it through this."""
    return engine.state


# -- every event the suite emits is checked against its declared type ---------------------

class EventProblems:
    """Problems found in the events emitted while one test ran."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self._lock = threading.Lock()

    def check(self, event: dict[str, Any]) -> None:
        problems = validate_event(event, strict=True)
        if problems:
            with self._lock:
                self.found.append(f"seq {event.get('seq')}: {'; '.join(problems)}")


_current = EventProblems()


def _validate(event: dict[str, Any]) -> None:
    _current.check(event)


@pytest.fixture(scope="session", autouse=True)
def _validate_every_event() -> Iterator[None]:
    EventSink.validator = _validate
    yield
    EventSink.validator = None


@pytest.fixture(autouse=True)
def event_problems(_validate_every_event: None) -> Iterator[EventProblems]:
    """Fails the test in which an invalid event was emitted (checked at its teardown,
    after its engines stopped, so their final events count too)."""
    global _current
    _current = problems = EventProblems()
    yield problems
    if problems.found:
        shown = "\n  ".join(problems.found[:10])
        pytest.fail(f"{len(problems.found)} invalid event(s) emitted:\n  {shown}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _structlog_config_kept() -> Iterator[None]:
    """Fails a test that leaves structlog configured to cache loggers on first use (the
    CLI's `logs.configure`, called in-process): every later test's captured logs would miss
    what the loggers it cached write."""
    yield
    if structlog.get_config()["cache_logger_on_first_use"]:
        structlog.configure(cache_logger_on_first_use=False)
        pytest.fail("this test left structlog caching loggers (patch actors.logs.configure)",
                    pytrace=False)


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine() -> Iterator[EngineFactory]:
    """`make_engine(config_dict=None, clock=None, **engine_knobs)`: a started engine,
    stopped after the test."""
    engines: list[Engine] = []

    def factory(config: dict[str, Any] | None = None, *, clock: Clock | None = None,
                **knobs: Any) -> Engine:
        engine = Engine.start(Config.from_dict(config or {}), clock=clock, **knobs)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.stop(timeout=5.0)


@pytest.fixture
def engine(make_engine: EngineFactory) -> Engine:
    return make_engine()


@pytest.fixture
def recorder(engine: Engine) -> Recorder:
    return Recorder().follow(engine)


#: The Node.js client written from docs/protocol.md alone (tests/node_client/).
NODE_DIR = Path(__file__).with_name("node_client")


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` binary, with the client's npm packages installed. Without node and npm
    the test fails, never skips (`.ci/run` installs them: Debian's `nodejs` and `npm`)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the Node.js client test: "
                    "apt-get install nodejs npm (.ci/run does)")
    # `make test` runs two pytest workers (xdist); both may want the packages at once.
    with open(NODE_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_DIR / "node_modules" / "zeromq").is_dir():
            proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                                  capture_output=True, text=True, timeout=600, check=False)
            assert proc.returncode == 0, f"npm ci failed: {proc.stderr[-2000:]}"
    return node


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a `slow` test run first, the rest after, each in collection order.

    `make test` runs two workers a file at a time (`--dist loadfile`, without xdist's
    reordering by test count, which put these few-test files last): a minute-long file
    started at the end ran alone while the other worker sat idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # (a stable sort)
