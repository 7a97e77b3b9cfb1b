"""Helpers for the journal tests: a sequencer like the engine's, event builders, a
recorder of the writer's callbacks, and a child-process runner that reads its output
with deadlines."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actors.events import topic_of
from actors.journal import Journal

REPO = Path(__file__).resolve().parent.parent
TS = "2026-01-01T00:00:00.000Z"


class Sequencer:
    """Stamps seq / wseq / timestamp under a lock and appends, as the event sink does."""

    def __init__(self, journal: Journal) -> None:
        self.lock = threading.Lock()
        self.journal = journal
        self.seq = journal.recovery.last_seq
        self.wseq: dict[str, int] = dict(journal.recovery.wseq)

    def emit(self, *events: dict[str, Any]) -> int:
        with self.lock:
            batch = [dict(e) for e in events]
            for event in batch:
                self.seq += 1
                event["seq"] = self.seq
                event.setdefault("timestamp", TS)
                workflow_id = event.get("workflow_id")
                if workflow_id is not None and "execution_id" in event:
                    self.wseq[workflow_id] = self.wseq.get(workflow_id, 0) + 1
                    event["wseq"] = self.wseq[workflow_id]
            self.journal.append(batch)
            return self.seq


def wf_event(kind: str, execution_id: str, workflow_id: str = "wf", **fields: Any
             ) -> dict[str, Any]:
    return {"v": 1, "type": kind, "execution_id": execution_id,
            "correlation_id": execution_id, "workflow_id": workflow_id, "bot_id": "bot",
            "strategy_id": "strat", **fields}


def sys_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, **fields}


def run_events(execution_id: str, workflow_id: str = "wf", *, status: str = "completed"
               ) -> list[dict[str, Any]]:
    """started, a provider and an action completing, then the terminal event."""
    terminal = {"completed": "execution_completed", "failed": "execution_failed"}[status]
    extra = {"error": "boom", "error_type": "ValueError"} if status == "failed" else {}
    return [
        wf_event("execution_started", execution_id, workflow_id, node_count=2,
                 inputs={"x": 1}),
        wf_event("node_started", execution_id, workflow_id, node_id="price", attempt=1,
                 node_category="provider"),
        wf_event("node_completed", execution_id, workflow_id, node_id="price", attempt=1,
                 outputs={"price": 1.5}, status="success", duration_ms=0.1),
        wf_event("node_started", execution_id, workflow_id, node_id="trade", attempt=1,
                 node_category="action"),
        wf_event("node_completed", execution_id, workflow_id, node_id="trade", attempt=1,
                 outputs={"id": 7}, status="success", duration_ms=0.1),
        wf_event(terminal, execution_id, workflow_id, status=status, duration_ms=2.0,
                 results={"price": {"price": 1.5}, "trade": {"id": 7}}, **extra),
    ]


class Callbacks:
    """The writer's callbacks, recorded; `wait_for` blocks on a condition with a deadline."""

    def __init__(self) -> None:
        self.commits: list[int] = []
        self.errors: list[BaseException] = []
        self.recovered = 0
        self._cond = threading.Condition()

    def on_commit(self, seq: int) -> None:
        with self._cond:
            self.commits.append(seq)
            self._cond.notify_all()

    def on_error(self, exc: BaseException) -> None:
        with self._cond:
            self.errors.append(exc)
            self._cond.notify_all()

    def on_recovered_write(self) -> None:
        with self._cond:
            self.recovered += 1
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Callbacks], bool], timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"condition not met within {timeout}s: commits "
                                     f"{self.commits[-3:]}, errors {self.errors}")

    def start(self, journal: Journal) -> Callbacks:
        journal.start(on_commit=self.on_commit, on_error=self.on_error,
                      on_recovered_write=self.on_recovered_write)
        return self


@contextmanager
def started(data_dir: Path, **options: Any) -> Iterator[tuple[Journal, Callbacks]]:
    journal = Journal.open(data_dir, **options)
    callbacks = Callbacks()
    try:
        yield journal, callbacks.start(journal)
    finally:
        journal.close()


def all_events(journal: Journal, since: int = 1) -> list[dict[str, Any]]:
    """Every committed event from `since`, paging through replay."""
    events: list[dict[str, Any]] = []
    while True:
        page = journal.replay(since, limit=1000)
        events += page["events"]
        if page["next_seq"] > page["last_seq"]:
            return events
        since = page["next_seq"]


def assert_gapless(events: list[dict[str, Any]], first: int, last: int) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, last + 1)), (seqs[:5], seqs[-5:], first, last)


def topics(events: list[dict[str, Any]]) -> list[str]:
    return [topic_of(e) for e in events]


class Child:
    """A child Python process whose stdout lines are collected by a thread; waits have
    deadlines (its output is the only way to know where it is)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 module: str = "tests.journal_child") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        #: Lines seen per tag (the first word), kept as they come: predicates stay O(1).
        self.counts: Counter[str] = Counter()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cut off by the kill: never finished, never counted
            line = raw.decode().rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self.counts[line.split(" ", 1)[0]] += 1
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._reader.is_alive() and not predicate(self.lines)):
                    err = self.proc.stderr.read().decode() if self.proc.poll() is not None \
                        and self.proc.stderr else ""
                    raise AssertionError(f"child output condition not met: last lines "
                                         f"{self.lines[-5:]}, rc {self.proc.poll()}, {err}")
                self._cond.wait(remaining)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def tagged(self, tag: str) -> list[str]:
        with self._cond:
            return [line.split(" ", 1)[1] for line in self.lines if line.startswith(tag + " ")]
