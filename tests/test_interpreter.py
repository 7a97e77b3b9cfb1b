"""A halt holds a short GIL switch interval from the call to the reply, then puts it back."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Engine
from actors.interpreter import HALT_SWITCH_INTERVAL_S, quick_handoffs
from actors.messages import Halt
from tests.conftest import EngineFactory

DEADLINE_S = 10.0


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[float]:
    found = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(found)


def test_within_it_the_interval_is_short_and_after_it_what_it_was() -> None:
    with quick_handoffs():
        assert sys.getswitchinterval() == pytest.approx(HALT_SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_overlapping_holds_put_it_back_when_the_last_ends() -> None:
    first_in, second_out = threading.Event(), threading.Event()
    seen: list[float] = []

    def other() -> None:
        with quick_handoffs():
            first_in.set()
            second_out.wait(10)
            seen.append(sys.getswitchinterval())

    thread = threading.Thread(target=other)
    thread.start()
    assert first_in.wait(10)
    with quick_handoffs():
        pass  # ends while the other still holds it
    assert sys.getswitchinterval() == pytest.approx(HALT_SWITCH_INTERVAL_S)
    second_out.set()
    thread.join(10)
    assert seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_shorter_interval_set_by_the_program_is_kept() -> None:
    sys.setswitchinterval(0.0001)
    with quick_handoffs():
        assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)
    assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)


def test_it_is_put_back_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), quick_handoffs():
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == pytest.approx(0.005)


def watch_interval(engine: Engine) -> list[float]:
    """Record the switch interval where the halt broadcast waits for actions to begin."""
    seen: list[float] = []
    gate = engine.gate
    original = gate.wait_actions_begun

    def recording(timeout: float) -> Any:
        seen.append(sys.getswitchinterval())
        return original(timeout)

    gate.wait_actions_begun = recording  # type: ignore[method-assign]
    return seen


def test_engine_halt_holds_it_through_the_broadcast_and_the_commit(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}})
    seen = watch_interval(engine)
    durable = engine._durable
    assert durable is not None
    original = durable.wait_commit
    commit_seen: list[float] = []

    def recording_commit(*args: Any, **kwargs: Any) -> bool:
        commit_seen.append(sys.getswitchinterval())
        return original(*args, **kwargs)

    durable.wait_commit = recording_commit  # type: ignore[method-assign]
    assert engine.halt("test")["state"] == "HALT"
    assert seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert commit_seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_halt_told_to_the_actor_holds_it_through_the_broadcast(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    seen = watch_interval(engine)
    reply = engine.ref.ask(Halt(reason="test"), timeout=10)
    assert isinstance(reply, dict) and reply["state"] == "HALT"
    assert seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert sys.getswitchinterval() == pytest.approx(0.005)
