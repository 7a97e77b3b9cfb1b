"""CONTRACT sections 3-6 word for word against the real daemon in a subprocess (one for the
module, on free loopback ports and a tmp data_dir): the places where a black-box check found
the daemon or the CLI saying something other than the contract's words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, LineReader, run_cli, running_daemon
from transport.errors import BadRequestError, NotFoundError


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with running_daemon(Path(tmp_path_factory.mktemp("conformance"))) as process:
        yield process


def test_submit_takes_any_int64_priority_as_the_cli_does(daemon: DaemonProcess) -> None:
    """CONTRACT 6: submit's `priority` is an int (higher first); `tradeloom submit
    --priority N` takes [-2**63, 2**63) and so does the engine. The wire refused anything
    past 32 bits with bad_request, so the CLI's own range ended in exit 2."""
    proc = daemon.cli("submit", "cli_ok", "--priority", str(3_000_000_000), "--json")
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    with daemon.client() as client:
        for priority in (2**63 - 1, -(2**63), 2**31):
            execution_id = client.submit("cli_ok", priority=priority)["execution_id"]
            assert client.execution(execution_id)["priority"] == priority
        with pytest.raises(BadRequestError, match="priority"):
            client.submit("cli_ok", priority=2**63)  # past what msgpack's int64 carries


def test_tail_takes_several_types_after_one_type_flag(daemon: DaemonProcess) -> None:
    """CONTRACT 3: `tradeloom tail [--workflow ID] [--type T ...]`: `--type A B` as well as
    `--type A --type B` (it took only the repeated form: `B` was an unknown argument)."""
    done = daemon.cli("submit", "cli_ok", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    execution_id = json.loads(done.stdout)["execution_id"]
    tail = LineReader(["tail", "--since", "1", "--json", "--workflow", "cli_ok",
                       "--type", "execution_started", "execution_completed",
                       "--type", "node_completed", *daemon.endpoints()])
    try:
        tail.wait_for(lambda lines: any(execution_id in line and "execution_completed" in line
                                        for line in lines))
        code, stderr = tail.interrupt()
    finally:
        tail.kill()
    assert code == 0, stderr
    ours = [e["type"] for e in tail.events() if e.get("execution_id") == execution_id]
    assert ours == ["execution_started", "node_completed", "node_completed",
                    "execution_completed"], ours


def test_submit_and_run_take_several_inputs_after_one_input_flag(
        daemon: DaemonProcess) -> None:
    """CONTRACT 3: `tradeloom submit WORKFLOW [--input k=v ...]` and `tradeloom run
    MODULE:ATTR [--input k=v ...]`: `--input a=1 b=x` as well as the repeated flag (`b=x` was
    an unknown argument). The positional may still come after the pairs."""
    for args in (("cli_ok", "--input", "n=1", "w=x", "--input", "f=true"),
                 ("--input", "n=1", "w=x", "--input", "f=true", "cli_ok")):
        proc = daemon.cli("submit", *args, "--wait", "--json")
        assert proc.returncode == 0, (args, proc.stderr)
        assert json.loads(proc.stdout)["results"]["echo"] == {"n": 1, "w": "x", "f": True}
    proc = run_cli("run", "cli_daemon_wf:ok", "--json", "--input", "n=2", "w=y",
                   cwd=daemon.config.parent)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["results"]["echo"] == {"n": 2, "w": "y"}
    missing = daemon.cli("submit", "--input", "n=1")
    assert missing.returncode == 2 and "WORKFLOW" in missing.stderr, missing.stderr


def test_cancel_of_an_execution_from_before_a_restart_answers_its_status(
        daemon: DaemonProcess) -> None:
    """CONTRACT 6: `cancel` answers `{"status"}`; `not_found` is for no such execution. One
    that ended before the daemon restarted is in the journal (`execution` finds it), but
    `cancel` answered `not_found`, as it did once it had left the in-memory recent list."""
    done = daemon.cli("submit", "cli_ok", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    execution_id = json.loads(done.stdout)["execution_id"]
    daemon.stop()
    daemon.start()  # the same data_dir and ports
    with daemon.client() as client:
        assert client.cancel(execution_id) == {"status": "completed"}
        assert client.execution(execution_id)["status"] == "completed"
        with pytest.raises(NotFoundError):
            client.cancel("exec_cli_ok_0badf00d")
