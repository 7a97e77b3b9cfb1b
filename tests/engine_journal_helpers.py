"""Helpers for the engine-level journal tests: configs with a data_dir, workflows whose
action can be watched, a disk that can be slowed or held (the writer's before-commit test
hook), raw reads of journal.db, and waits with deadlines."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from actors import Engine, Node, NodeContext, Workflow
from actors.journal import Journal


def journal_config(data_dir: Path, **sections: Any) -> dict[str, Any]:
    """A config with the journal on (`[daemon] data_dir`), plus any other sections."""
    daemon = {"data_dir": str(data_dir), **sections.pop("daemon", {})}
    return {"daemon": daemon, **sections}


def journal_of(engine: Engine) -> Journal:
    durable = engine._durable
    assert durable is not None, "this engine keeps no journal"
    return durable.journal


def eventually(predicate: Callable[[], bool], timeout: float = 10.0,
               what: str = "condition") -> None:
    """Wait until `predicate()` holds (checked every few ms), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        pause.wait(0.005)


def raw_rows(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read from journal.db with a connection of our own: what is on disk now."""
    conn = sqlite3.connect(data_dir / "journal.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def all_events(engine: Engine, since: int = 1) -> list[dict[str, Any]]:
    """Every committed event from `since`, paging through `engine.replay`."""
    events: list[dict[str, Any]] = []
    while True:
        page = engine.replay(since, limit=1000)
        events += page["events"]
        if page["next_seq"] > page["last_seq"]:
            return events
        since = page["next_seq"]


class Disk:
    """The journal's disk as a test sees it: `slow(s)` makes every commit take `s` longer;
    `hold()` blocks commits until `release()` (each held commit waits at most `limit_s`)."""

    def __init__(self, journal: Journal, limit_s: float = 20.0) -> None:
        self._journal = journal
        self._open = threading.Event()
        self._open.set()
        self._delay = 0.0
        self._limit_s = limit_s
        self._pause = threading.Event()
        #: Set once a commit is waiting on a hold.
        self.holding = threading.Event()
        journal._testing_before_commit(self._before_commit)

    def _before_commit(self) -> None:
        if not self._open.is_set():
            self.holding.set()
            self._open.wait(self._limit_s)
        if self._delay:
            self._pause.wait(self._delay)

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    def hold(self) -> None:
        self.holding.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()


class Action:
    """An action node's function that records each call (its idempotency key), can run a
    check of its own inside, block until released, or raise."""

    def __init__(self, inside: Callable[[NodeContext], Any] | None = None, *,
                 block: bool = False, raises: BaseException | None = None) -> None:
        self.calls: list[str] = []
        self.seen: list[Any] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()
        self._inside = inside
        self._raises = raises

    def __call__(self, ctx: NodeContext) -> dict[str, Any]:
        self.calls.append(ctx.idempotency_key)
        if self._inside is not None:
            self.seen.append(self._inside(ctx))
        self.entered.set()
        self.release.wait(20.0)
        if self._raises is not None:
            raise self._raises
        return {"order": ctx.idempotency_key, "n": ctx.inputs.get("n")}


def price(ctx: NodeContext) -> dict[str, float]:
    return {"price": 100.0 + float(ctx.inputs.get("n", 0))}


def trade_workflow(workflow_id: str, action: Callable[[NodeContext], Any], *,
                   condition: Callable[[NodeContext], Any] | None = None,
                   **action_options: Any) -> Workflow:
    """provider -> condition -> action."""
    return Workflow(workflow_id, nodes=[
        Node("price", price, category="provider"),
        Node("check", condition or (lambda ctx: ctx.upstream["price"]["price"] > 0),
             category="condition", depends_on=["price"]),
        Node("trade", action, category="action", depends_on=["check"], **action_options),
    ])


@contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog entry (all levels) while inside; the suite's config filters
    warnings out, so this lowers the level for the duration."""
    old = structlog.get_config()
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[capture],
                        wrapper_class=structlog.make_filtering_bound_logger(0))
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)
