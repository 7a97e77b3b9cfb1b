"""`--input k=v` edges an operator can hit that the CLI tests do not cover: each bad one is
one line on stderr and exit 2, never a traceback nor an "unexpected" error (README, CLI).
The commands run as subprocesses: `main()` configures the process's logging."""

from __future__ import annotations

import subprocess
import sys

from actors.cli import parse_inputs

#: The longest one command may take before the test fails.
COMMAND_S = 30.0


def _tradeloom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actors.cli", *args], capture_output=True,
                          text=True, timeout=COMMAND_S, check=False)


def test_an_input_nested_past_the_recursion_limit_is_kept_as_a_string() -> None:
    """Python's json gives up on 3,000 nested brackets with a RecursionError, which is not
    a ValueError: the value is not JSON it can read, so it stays the string it was (as
    `1e999` does), rather than ending the command as an "unexpected" error with exit 1."""
    deep = "[" * 3000 + "]" * 3000
    assert parse_inputs([f"a={deep}", "b=2"]) == {"a": deep, "b": 2}


def test_submit_with_a_deeply_nested_input_reaches_the_daemon_not_an_unexpected_error(
) -> None:
    deep = "[" * 3000 + "]" * 3000
    # Nothing listens on port 1: the command gets past its input, then exits 3 (unreachable).
    done = _tradeloom("submit", "--control", "tcp://127.0.0.1:1", "--timeout", "0.2",
                      "wf", "--input", f"a={deep}")
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
    assert done.returncode == 3, done.stderr


def test_a_client_endpoint_with_a_port_past_65535_is_a_bad_argument() -> None:
    """libzmq would connect to the port modulo 65536 (74500: 8964)."""
    done = _tradeloom("status", "--control", "tcp://127.0.0.1:74500", "--timeout", "0.2")
    assert done.returncode == 2 and "--control" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_bad_client_argument_under_python_m_is_exit_2_not_an_unexpected_error() -> None:
    """`python -m actors.cli` is the same CLI as the `tradeloom` script: a bad `--input` of
    `submit`, or `intents --resolve` without `--outcome`, is a bad argument (exit 2, one
    line), found before the daemon is asked (nothing listens on port 1)."""
    for args in (("submit", "wf", "--input", "novalue"), ("intents", "--resolve", "k")):
        done = _tradeloom(*args, "--control", "tcp://127.0.0.1:1", "--timeout", "0.2")
        assert done.returncode == 2, (args, done.returncode, done.stderr)
        assert "unexpected" not in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
