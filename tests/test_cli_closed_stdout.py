"""The CLI with its standard output closed (`tradeloom status >&-`): every command that
prints stops at once with one line on stderr and exit 2, before it does anything (`status`
exited 0 having shown nothing, `submit` started an execution nobody saw the id of, `tail`
failed with "unexpected AttributeError"); the daemon, which writes nothing to stdout, runs,
with fd 1 on the null device so that no file it opens takes that descriptor."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

from tests.daemon_process import (
    TRADELOOM,
    DaemonProcess,
    daemon_tables,
    environment,
    read_endpoints,
    running_daemon,
)

#: Runs the command after it with fd 1 closed, as `command >&-` does.
CLOSED_STDOUT = ["sh", "-c", 'exec "$@" >&-', "sh"]


def with_closed_stdout(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLOSED_STDOUT, *TRADELOOM, *args], stderr=subprocess.PIPE,
                          text=True, timeout=30, env=environment(), cwd=cwd, check=False)


def test_every_printing_command_refuses_a_closed_stdout_with_one_line_and_exit_2(
        tmp_path: Path) -> None:
    with running_daemon(tmp_path / "d") as daemon:
        done = json.loads(daemon.cli("submit", "cli_ok", "--wait", "--json").stdout)[
            "execution_id"]
        with daemon.client() as client:
            commands = [["status"], ["status", "--json"], ["executions"], ["show", done],
                        ["tail"], ["tail", "--json"], ["submit", "cli_ok"]]
            for command in commands:
                proc = with_closed_stdout([*command, *daemon.endpoints()], tmp_path)
                assert proc.returncode == 2, (command, proc.returncode, proc.stderr)
                assert proc.stderr.splitlines() == [
                    "tradeloom: error: standard output is closed (fd 1): nowhere to write "
                    "the output (use >/dev/null to discard it)"], (command, proc.stderr)
            # `submit` stopped before it submitted: no second execution
            assert [row["execution_id"] for row in client.executions()] == [done]
    for command in (["run", "nowhere:workflow"], ["keys", str(tmp_path / "keys")]):
        proc = with_closed_stdout(command, tmp_path)
        assert proc.returncode == 2 and "standard output is closed" in proc.stderr, (
            command, proc.returncode, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (tmp_path / "keys").exists()


FD1_WORKFLOW = textwrap.dedent("""
    import os

    from actors import Node, Workflow

    def where_fd1_goes(ctx):
        return {"fd1": os.readlink("/proc/self/fd/1")}

    workflow = Workflow("fd1", nodes=[Node("look", where_fd1_goes)])
""")


def test_the_daemon_runs_with_a_closed_stdout_and_fd_1_on_the_null_device(
        tmp_path: Path) -> None:
    # Before, the first file the daemon opened took fd 1: what a node's subprocess printed
    # would have gone into it (the journal, a socket).
    (tmp_path / "fd1_wf.py").write_text(FD1_WORKFLOW)
    config = tmp_path / "daemon.toml"
    config.write_text(daemon_tables(tmp_path, shutdown_grace_s=2.0)
                      + '[[workflows]]\nref = "fd1_wf:workflow"\n')
    daemon = DaemonProcess(config, *read_endpoints(config), close_stdout=True)
    daemon.start()
    try:
        proc = daemon.cli("submit", "fd1", "--wait", "--json")
        daemon.stop()  # exit 0 asserted
    finally:
        daemon.kill()
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert json.loads(proc.stdout)["results"]["look"] == {"fd1": "/dev/null"}, proc.stdout


#: Runs the command after it with fd 2 closed, as `command 2>&-` does.
CLOSED_STDERR = ["sh", "-c", 'exec "$@" 2>&-', "sh"]

FD2_WORKFLOW = FD1_WORKFLOW.replace("fd1", "fd2").replace("/fd/1", "/fd/2")


def test_a_closed_stderr_keeps_errors_out_of_stdout_and_fd_2_on_the_null_device(
        tmp_path: Path) -> None:
    # Before, `print(..., file=sys.stderr)` with no sys.stderr wrote the error line to
    # stdout (into `--json` output), and the next file opened took fd 2.
    proc = subprocess.run(
        [*CLOSED_STDERR, *TRADELOOM, "status", "--json", "--control",
         "tcp://127.0.0.1:9", "--timeout", "0.5"],
        stdout=subprocess.PIPE, text=True, timeout=30, env=environment(), cwd=tmp_path,
        check=False)
    assert (proc.returncode, proc.stdout) == (3, "")

    (tmp_path / "fd2_wf.py").write_text(FD2_WORKFLOW)
    proc = subprocess.run([*CLOSED_STDERR, *TRADELOOM, "run", "fd2_wf:workflow"],
                          stdout=subprocess.PIPE, text=True, timeout=60, env=environment(),
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout
    assert '"fd2": "/dev/null"' in proc.stdout, proc.stdout
