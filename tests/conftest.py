"""Shared fixtures: real engines (real pykka actors and threads), event recorders that
wait on conditions, never on bare sleeps."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from actors import Config, Engine
from actors.clock import Clock

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


class Recorder:
    """Collects events from an engine subscription; `wait_for` blocks on a condition."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.events), timeout):
                raise AssertionError(f"condition not met within {timeout}s; "
                                     f"{len(self.events)} events seen")
            return list(self.events)

    def wait_type(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        self.wait_for(lambda evs: sum(e["type"] == kind for e in evs) >= count, timeout)
        return self.of_type(kind)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e["type"] == kind]

    def for_execution(self, execution_id: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("execution_id") == execution_id]

    def types(self, execution_id: str | None = None) -> list[str]:
        with self._cond:
            return [e["type"] for e in self.events
                    if execution_id is None or e.get("execution_id") == execution_id]


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine() -> Iterator[EngineFactory]:
    """`make_engine(config_dict=None, clock=None)`: a started engine, stopped after the test."""
    engines: list[Engine] = []

    def factory(config: dict[str, Any] | None = None, *, clock: Clock | None = None) -> Engine:
        engine = Engine.start(Config.from_dict(config or {}), clock=clock)
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
    rec = Recorder()
    engine.subscribe(rec)
    return rec
