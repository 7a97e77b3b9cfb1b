"""`--input k=v` edges an operator can hit that the CLI tests do not cover: each bad one is
one line on stderr and exit 2, never a traceback nor an "unexpected" error (README, CLI)."""

from __future__ import annotations

import pytest

from actors.cli import main, parse_inputs


def test_an_input_nested_past_the_recursion_limit_is_kept_as_a_string() -> None:
    """Python's json gives up on 3,000 nested brackets with a RecursionError, which is not
    a ValueError: the value is not JSON it can read, so it stays the string it was (as
    `1e999` does), rather than ending the command as an "unexpected" error with exit 1."""
    deep = "[" * 3000 + "]" * 3000
    assert parse_inputs([f"a={deep}", "b=2"]) == {"a": deep, "b": 2}


def test_submit_with_a_deeply_nested_input_reaches_the_daemon_not_an_unexpected_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    deep = "[" * 3000 + "]" * 3000
    # Nothing listens on port 1: the command gets past its input, then exits 3 (unreachable).
    code = main(["submit", "--control", "tcp://127.0.0.1:1", "--timeout", "0.2",
                 "wf", "--input", f"a={deep}"])
    err = capsys.readouterr().err
    assert "unexpected" not in err and "Traceback" not in err
    assert code == 3, err


def test_a_client_endpoint_with_a_port_past_65535_is_a_bad_argument(
        capsys: pytest.CaptureFixture[str]) -> None:
    """libzmq would connect to the port modulo 65536 (74500: 8964)."""
    code = main(["status", "--control", "tcp://127.0.0.1:74500", "--timeout", "0.2"])
    err = capsys.readouterr().err
    assert code == 2 and "--control" in err and len(err.strip().splitlines()) == 1
