"""The library internals actors/_compat.py relies on still exist in the installed versions.

If one of these fails after an upgrade of pykka or structlog, adapt actors/_compat.py (the
only module that touches them) before anything else.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import queue
import threading

import pykka
import pytest
import structlog

import actors
from actors._compat import (
    EngineActorBase,
    Envelope,
    ReleasingEnvelope,
    context_setters,
    stop_envelope,
)
from actors.errors import InternalError


def test_pykka_envelope_and_stop_message_have_the_shape_we_use() -> None:
    from pykka.messages import _ActorStop

    envelope = Envelope("m")
    assert envelope.message == "m" and envelope.reply_to is None
    assert isinstance(stop_envelope().message, _ActorStop)


def test_pykka_actor_hooks_we_override_exist() -> None:
    for name in ("_create_actor_inbox", "_handle_receive", "_stop", "_actor_loop_running",
                 "_actor_loop_setup"):
        assert hasattr(pykka.ThreadingActor, name), name
    source = inspect.getsource(pykka.ThreadingActor._actor_loop_running)
    assert "actor_inbox.get()" in source and "_handle_receive(envelope.message)" in source


def test_pykka_reads_an_envelopes_message_once_as_releasing_envelope_needs() -> None:
    running = inspect.getsource(pykka.ThreadingActor._actor_loop_running)
    assert running.count("envelope.message") == 1
    teardown = inspect.getsource(pykka.ThreadingActor._actor_loop_teardown)
    assert teardown.index("envelope.reply_to is not None") < teardown.index("envelope.message")
    envelope = ReleasingEnvelope("m")
    assert (envelope.message, envelope.message, envelope.reply_to) == ("m", None, None)


def test_an_inbox_from_the_factory_is_used_and_direct_messages_reach_on_receive() -> None:
    seen: list[object] = []

    class Inbox:
        def __init__(self) -> None:
            self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
            self.put = self._q.put
            self.get = self._q.get

        def empty(self) -> bool:
            return self._q.empty()

    class Probe(EngineActorBase):
        inbox_factory = Inbox
        direct = frozenset({str})

        def on_receive(self, message: object) -> object:
            seen.append(message)
            if message == "exit":
                raise SystemExit(3)
            return message

    ref = Probe.start()
    try:
        assert isinstance(ref.actor_inbox, Inbox)
        assert ref.ask("hello", timeout=5) == "hello"
        with pytest.raises(InternalError, match="SystemExit"):
            ref.ask("exit", timeout=5)
        # The actor (and every other actor) survived the SystemExit.
        assert ref.ask("again", timeout=5) == "again"
        assert seen == ["hello", "exit", "again"]
    finally:
        ref.stop(timeout=5)


def test_structlog_context_setters_bind_per_thread() -> None:
    set_execution, set_node = context_setters()
    seen: dict[str, object] = {}

    def worker() -> None:
        set_execution("exec_x_00000001")
        set_node("n")
        seen.update(structlog.contextvars.get_contextvars())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert seen.get("execution_id") == "exec_x_00000001" and seen.get("node_id") == "n"


def test_no_other_module_touches_library_internals() -> None:
    root = pathlib.Path(actors.__file__).parent
    offenders = []
    for path in root.glob("*.py"):
        if path.name == "_compat.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith("pykka._") or node.module == "pykka.messages"):
                offenders.append(f"{path.name}: from {node.module}")
            if isinstance(node, ast.Attribute) and node.attr in {
                    "_CONTEXT_VARS", "_handle_receive", "_create_actor_inbox", "_stop",
                    "_ActorStop", "_is_owned", "_handle_failure", "_actor_loop_setup"}:
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert offenders == []


def test_pykka_is_bounded_below_its_next_major_version() -> None:
    pyproject = pathlib.Path(actors.__file__).parent.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a source checkout")
    assert '"pykka>=4.1,<5"' in pyproject.read_text()
