"""Probes of loading `[[workflows]]` by import path and running them on an interval: whatever
a workflow module does at import is one config-error line naming the key (exit 2 from the
daemon), an interval is bounded below, one workflow listed twice is counted whole, and a
thread a module leaves running does not keep a stopped daemon alive."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pykka
import pytest

import actors.triggers
from actors import Config, ConfigError, Engine
from actors.config import DaemonConfig, TransportConfig, WorkflowEntry
from actors.execution import ExecutionHandle, ExecutionResult
from actors.triggers import IntervalTriggers
from actors.workflow import Node, Workflow
from tests.daemon_process import DaemonProcess, daemon_tables, read_endpoints, run_cli
from transport.daemon import Daemon

WORKFLOW_SOURCE = textwrap.dedent("""
    from actors import Node, Workflow

    workflow = Workflow("probe_load", nodes=[Node("n", lambda ctx: 1)])
""")
LOCAL = "tcp://127.0.0.1:*"
#: What a module's own `str()` raising looks like (an exception from user code).
UNPRINTABLE = textwrap.dedent("""
    class Odd({base}):
        def __str__(self):
            raise ValueError("no text")

    raise Odd()
""")


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A directory to write a uniquely named module into; sys.path and sys.modules restored."""
    name = f"probe_load_{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path, name
    sys.modules.pop(name, None)


def load_error(raw: Mapping[str, Any], directory: Path) -> BaseException | None:
    """What `Config.from_dict` raised, caught whatever it is (a KeyboardInterrupt that got
    out would end the test run, not fail the test)."""
    try:
        Config.from_dict(raw, base_dir=directory)
    except BaseException as exc:  # noqa: BLE001 - the point is what escapes
        return exc
    return None


@pytest.mark.parametrize("source, says", [
    ("raise SystemExit(3)", "SystemExit: 3"),
    ("raise SystemExit('first\\n  second')", "SystemExit: first second"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("raise GeneratorExit", "GeneratorExit"),
    (UNPRINTABLE.format(base="Exception"), "<unprintable Odd>"),
    (UNPRINTABLE.format(base="BaseException"), "<unprintable Odd>"),
], ids=["exit", "exit_multiline", "interrupt", "generator_exit", "str_raises",
        "base_str_raises"])
def test_whatever_a_module_raises_at_import_is_a_one_line_config_error(
        modules: tuple[Path, str], source: str, says: str) -> None:
    directory, name = modules
    (directory / f"{name}.py").write_text(source)
    for raw, key in (({"workflows": [{"ref": f"{name}:workflow"}]}, "workflows[0].ref"),
                     ({"emergency": {"on_halt": [{"ref": f"{name}:workflow"}]}},
                      "emergency.on_halt[0].ref")):
        error = load_error(raw, directory)
        assert isinstance(error, ConfigError), repr(error)
        message = str(error)
        assert message.startswith(f"{key}: cannot import {name!r}: "), message
        assert message.endswith(says) and "\n" not in message, message


def test_a_module_getattr_that_raises_is_a_one_line_config_error(
        modules: tuple[Path, str]) -> None:
    directory, name = modules
    (directory / f"{name}.py").write_text(
        "def __getattr__(name):\n    raise RuntimeError('lazy load failed')\n")
    error = load_error({"workflows": [{"ref": f"{name}:workflow"}]}, directory)
    assert isinstance(error, ConfigError), repr(error)
    assert str(error) == (f"workflows[0].ref: cannot get 'workflow' from {name!r}: "
                          "RuntimeError: lazy load failed")


def daemon_config(directory: Path, ref: str) -> Path:
    path = directory / "daemon.toml"
    path.write_text(daemon_tables(directory, shutdown_grace_s=1.0) + textwrap.dedent(f"""
        [[workflows]]
        ref = "{ref}"
        every_s = 0.05
    """))
    return path


def test_a_module_that_exits_at_import_is_exit_2_and_one_line_from_the_daemon(
        modules: tuple[Path, str]) -> None:
    """`raise SystemExit(0)` at import once had the daemon exit 0, saying nothing: a clean
    stop of a daemon that never started."""
    directory, name = modules
    (directory / f"{name}.py").write_text("raise SystemExit(0)\n")
    proc = run_cli("daemon", "--config", str(daemon_config(directory, f"{name}:workflow")),
                   timeout=30, cwd=directory)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == (f"tradeloom: error: workflows[0].ref: cannot import "
                                   f"{name!r}: SystemExit: 0"), proc.stderr


@pytest.mark.parametrize("every_s", [5e-324, 1e-9, 0.0099])
def test_an_interval_under_the_floor_is_refused_naming_the_key(
        modules: tuple[Path, str], every_s: float) -> None:
    """5e-324 overflowed the trigger's turn count and killed the thread serving every
    trigger; 1e-9 had it spin through a billion skipped turns a second."""
    directory, name = modules
    (directory / f"{name}.py").write_text(WORKFLOW_SOURCE)
    entry = {"ref": f"{name}:workflow"}
    ok = Config.from_dict({"workflows": [{**entry, "every_s": 0.01}]}, base_dir=directory)
    assert ok.workflows[0].every_s == 0.01
    with pytest.raises(ConfigError, match=r"^workflows\[1\]\.every_s must be >= 0\.01$"):
        Config.from_dict({"workflows": [entry, {**entry, "every_s": every_s}]},
                         base_dir=directory)


def test_one_workflow_triggered_twice_is_counted_for_both() -> None:
    """The same Workflow listed twice (for two bots) once reported the last trigger's counts
    only: the metrics lost the other's."""
    workflow = Workflow("probe_twice", nodes=[Node("n", lambda ctx: 1)])
    entries = [WorkflowEntry(ref="m:w", every_s=1.0, bot_id=bot, workflow=workflow)
               for bot in ("bot_a", "bot_b")]
    now = [0.0]
    bots: list[str] = []

    def wait(seconds: float) -> bool:  # time moves only when the trigger loop waits
        now[0] += seconds
        return now[0] > 3.5

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        bots.append(str(bot))
        handle = ExecutionHandle(f"exec_probe_twice_{len(bots):08x}", wf)
        handle.resolve(ExecutionResult(execution_id=handle.execution_id, workflow_id=wf,
                                       status="completed"), 0)
        return handle

    triggers = IntervalTriggers(entries, submit, monotonic=lambda: now[0], wait=wait)
    triggers.run()
    assert sorted(bots) == ["bot_a"] * 3 + ["bot_b"] * 3
    assert triggers.stats() == {"probe_twice": {"submitted": 6, "skipped": 0, "refused": 0}}


def test_a_thread_a_workflow_module_leaves_running_does_not_keep_the_daemon_alive(
        modules: tuple[Path, str]) -> None:
    """A non-daemon thread started at import (an exchange client's feed) kept a SIGTERMed
    daemon alive after `daemon_stopped`, forever, until a second signal."""
    directory, name = modules
    (directory / f"{name}.py").write_text(WORKFLOW_SOURCE + textwrap.dedent("""
        import threading

        threading.Thread(target=threading.Event().wait, name="user-feed").start()
    """))
    config = daemon_config(directory, f"{name}:workflow")
    daemon = DaemonProcess(config, *read_endpoints(config), cwd=directory)
    daemon.start()
    proc = daemon.proc
    assert proc is not None
    try:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError("the stopped daemon did not exit within 15 s") from None
    finally:
        daemon.kill()
    assert code == 0, daemon.log.read_text()[-2000:]
    log = daemon.log.read_text()
    assert '"user_threads_abandoned"' in log and "user-feed" in log, log[-2000:]



def test_a_thread_a_workflow_module_leaves_running_does_not_keep_run_alive(
        modules: tuple[Path, str]) -> None:
    directory, name = modules
    (directory / f"{name}.py").write_text(WORKFLOW_SOURCE + textwrap.dedent("""
        import threading

        threading.Thread(target=threading.Event().wait, name="user-feed").start()
    """))
    proc = run_cli("run", f"{name}:workflow", timeout=15, cwd=directory)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "result: ok" in proc.stdout and "user_threads_abandoned" in proc.stderr, proc


class LogLines:
    """Stands in for a module's structlog logger: keeps (event, fields) of every line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((event, fields))


def test_a_long_run_logs_its_skipped_turns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each skipped turn was an info line: a run 1,000 periods long logged 1,000 of them."""
    workflow = Workflow("probe_long", nodes=[Node("n", lambda ctx: 1)])
    entry = WorkflowEntry(ref="m:w", every_s=1.0, workflow=workflow)
    now = [0.0]
    handles: list[ExecutionHandle] = []

    def wait(seconds: float) -> bool:
        now[0] += seconds
        if now[0] > 5.5 and len(handles) == 1:  # the first run ends after five turns
            handles[0].resolve(ExecutionResult(execution_id=handles[0].execution_id,
                                               workflow_id="probe_long",
                                               status="completed"), 0)
        return now[0] > 9.5

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        handles.append(ExecutionHandle(f"exec_probe_long_{len(handles) + 1:08x}", wf))
        return handles[-1]  # never ends, but for the first

    log = LogLines()
    monkeypatch.setattr(actors.triggers, "log", log)
    triggers = IntervalTriggers([entry], submit, monotonic=lambda: now[0], wait=wait)
    triggers.run()
    assert triggers.stats()["probe_long"] == {"submitted": 2, "skipped": 7, "refused": 0}
    skipped = [fields["still_running"] for event, fields in log.lines
               if event == "trigger_skipped"]
    assert skipped == [handles[0].execution_id, handles[1].execution_id]


def test_a_config_built_by_hand_has_its_refs_imported_and_triggered(
        modules: tuple[Path, str], tmp_path: Path) -> None:
    """`Config(workflows=(WorkflowEntry(ref=...),))`, as `on_halt` entries already were: it
    failed with "workflow must be a Workflow, not NoneType"."""
    directory, name = modules
    (directory / f"{name}.py").write_text(WORKFLOW_SOURCE)
    sys.path.insert(0, str(directory))
    entry = WorkflowEntry(ref=f"{name}:workflow", every_s=0.05, bot_id="bot_hand")
    daemon = Daemon(Config(daemon=DaemonConfig(data_dir=str(tmp_path / "data")),
                           transport=TransportConfig(events=LOCAL, control=LOCAL),
                           workflows=(entry,)))
    try:
        daemon.start()
        assert daemon.engine is not None and daemon.triggers is not None
        assert daemon.engine.workflows == ["probe_load"]
        assert daemon.triggers.triggers[0].bot_id == "bot_hand"
        ran = threading.Event()
        daemon.engine.subscribe(lambda event: ran.set(), types={"execution_completed"},
                                workflow_id="probe_load")
        assert ran.wait(10), "the hand-built entry's trigger never ran"
    finally:
        daemon.stop()


@pytest.mark.parametrize("entries, error, says", [
    (lambda: (WorkflowEntry(ref="probe_load_no_such_module:workflow"),), ConfigError,
     r"^workflows\[0\]\.ref: cannot import 'probe_load_no_such_module'"),
    (lambda: (WorkflowEntry(ref="m:w", workflow=5),), ConfigError,
     r"^workflows\[0\]\.ref: 'm:w' is a int, not a Workflow$"),
    (lambda: tuple(WorkflowEntry(ref=f"m:{i}", workflow=Workflow("same", nodes=[
        Node("n", lambda ctx: 1)])) for i in range(2)), ValueError,
     "'same' is registered to another Workflow"),
], ids=["unimportable", "not_a_workflow", "one_id_twice"])
def test_a_refused_hand_built_entry_leaves_no_actor_running(
        entries: Callable[[], tuple[WorkflowEntry, ...]], error: type[Exception],
        says: str) -> None:
    """The entries were registered after the engine's actors had started: a refusal left
    them all running (nine pykka actors after three tries)."""
    before = len(pykka.ActorRegistry.get_all())
    with pytest.raises(error, match=says):
        Engine.start(Config(workflows=entries()))
    assert len(pykka.ActorRegistry.get_all()) == before
