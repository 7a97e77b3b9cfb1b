"""Closing the journal while a halt's broadcast hangs (actors/interpreter.py, `HaltPriority`).

From a halt's call to its reply the journal writer commits the HALT, then gives way (at
most `HALT_GIVE_WAY_S` after the halt began). A close stops the writer: it must commit
everything queued and end at once, not wait for the hung halt. `HALT_GIVE_WAY_S` and the
kill switch's acknowledgement timeout are raised to 30 s here, so a close that waits for
the halt shows up as a close still running at the test's deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors import Node, NodeContext, Workflow, journal_writer
from actors import engine as engine_module
from actors.emergency_actor import EmergencyActor
from actors.interpreter import HaltPriority
from actors.journal import Journal
from actors.messages import EndExecutions
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import journal_config, journal_of
from tests.journal_helpers import all_events, assert_gapless

DEADLINE_S = 10.0
HUNG_S = 3 * DEADLINE_S  # longer than any wait of the test


class AckOnRelease:
    """A supervisor's ref as the kill switch holds it: the supervisor ends its executions
    at once, but its acknowledgement reaches the halt's broadcast only once `release` is
    set (a stuck supervisor). The broadcast hangs, holding the halt priority."""

    def __init__(self, real: pykka.ActorRef[Any], release: threading.Event) -> None:
        self._real = real
        self._release = release
        #: The real supervisor has ended its executions (their events are sequenced).
        self.ended = threading.Event()

    def ask(self, message: Any, block: bool = True, timeout: float | None = None) -> Any:
        if type(message) is not EndExecutions or block:
            return self._real.ask(message, block=block, timeout=timeout)
        answer = self._real.ask(message, block=False)
        held: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()

        def acknowledge_when_released() -> None:
            count = answer.get(timeout=DEADLINE_S)
            self.ended.set()
            self._release.wait(HUNG_S)
            held.set(count)

        threading.Thread(target=acknowledge_when_released, daemon=True).start()
        return held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def hung_supervisors(monkeypatch: pytest.MonkeyPatch
                     ) -> Iterator[tuple[list[AckOnRelease], threading.Event]]:
    """The next engine's kill switch hears from its supervisors only once released."""
    release = threading.Event()
    wrapped: list[AckOnRelease] = []
    real_start = EmergencyActor.start

    class HungAcks:
        @staticmethod
        def start(*, supervisors: list[pykka.ActorRef[Any]], **kwargs: Any) -> Any:
            wrapped.extend(AckOnRelease(ref, release) for ref in supervisors)
            return real_start(supervisors=wrapped, ack_timeout_s=HUNG_S, **kwargs)

    monkeypatch.setattr(engine_module, "EmergencyActor", HungAcks)
    monkeypatch.setattr(journal_writer, "HALT_GIVE_WAY_S", HUNG_S)
    yield wrapped, release
    release.set()


def test_close_during_a_hung_halt_commits_everything_without_waiting_for_it(
        make_engine: EngineFactory, tmp_path: Path,
        hung_supervisors: tuple[list[AckOnRelease], threading.Event]) -> None:
    wrapped, release = hung_supervisors
    engine = make_engine(journal_config(tmp_path))
    journal = journal_of(engine)
    entered = threading.Semaphore(0)

    def waits_for_cancel(ctx: NodeContext) -> None:
        entered.release()
        ctx.cancelled.wait(HUNG_S)

    held = Workflow("held", nodes=[Node("price", waits_for_cancel, category="provider")])
    for _ in range(4):
        engine.submit(held)
    for _ in range(4):
        assert entered.acquire(timeout=DEADLINE_S)

    halted: list[dict[str, Any]] = []
    halt_replied = threading.Event()

    def halt() -> None:
        halted.append(engine.halt("hung broadcast"))
        halt_replied.set()

    threading.Thread(target=halt, daemon=True).start()
    for supervisor in wrapped:
        assert supervisor.ended.wait(DEADLINE_S)
    halt_seq = engine.gate.history[-1]["seq"]
    assert journal.wait_committed(halt_seq, DEADLINE_S)
    appended = journal.stats()["appended_seq"]
    assert appended > halt_seq  # the halted executions' events, held back by the writer
    assert journal.last_committed_seq() == halt_seq

    closed = threading.Event()

    def close() -> None:
        journal.close(timeout=HUNG_S)
        closed.set()

    threading.Thread(target=close, daemon=True).start()
    assert closed.wait(DEADLINE_S), "close() waited for the hung halt"
    assert not halt_replied.is_set(), "the broadcast was not hung: the test proves nothing"

    reopened = Journal.open(tmp_path)  # the writer ended and let data_dir go
    try:
        events = all_events(reopened)
        last = reopened.last_committed_seq()
    finally:
        reopened.close()
    assert last >= appended
    assert_gapless(events, 1, last)
    assert events[halt_seq - 1]["state"] == "HALT"
    assert [e["status"] for e in events if e["type"] == "execution_halted"] == ["halted"] * 4

    release.set()
    assert halt_replied.wait(DEADLINE_S)
    assert halted[0]["state"] == "HALT"


def test_stop_giving_way_ends_a_wait_under_way_and_every_later_one() -> None:
    priority = HaltPriority()
    returned = threading.Event()

    def writer() -> None:
        priority.give_way(5, HUNG_S)
        returned.set()

    with priority.hold():
        priority.first(5)  # the HALT (5) is committed: the writer waits
        threading.Thread(target=writer, daemon=True).start()
        assert not returned.wait(0.05)
        priority.stop_giving_way()
        assert returned.wait(DEADLINE_S)
        priority.give_way(5, HUNG_S)  # at once: the writer gives way no more
