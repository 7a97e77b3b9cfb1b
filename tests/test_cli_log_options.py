"""`--log-format` / `--log-level` of `tradeloom daemon`: accepted before the command (the
global options) and after it (`tradeloom daemon --config F --log-format console`)."""

from __future__ import annotations

import pytest

from actors.cli import build_parser


@pytest.mark.parametrize("argv", [
    ["--log-format", "console", "--log-level", "debug", "daemon", "--config", "d.toml"],
    ["daemon", "--config", "d.toml", "--log-format", "console", "--log-level", "debug"],
])
def test_daemon_log_options_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.log_format, args.log_level) == ("console", "debug")


def test_daemon_log_options_default_when_not_given() -> None:
    args = build_parser().parse_args(["daemon", "--config", "d.toml"])
    assert (args.log_format, args.log_level) == ("json", None)
