"""Every command's `--help` (README, "Command line"): it ends with an example of that
command, and every `--flag` its text mentions is one the command takes (a help that
advertises a flag the parser refuses sends the operator to a usage error mid-incident)."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from actors.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public walk over its subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for name, parser in _subparsers(build_parser()).items():
        found[name] = parser
        for inner, child in _subparsers(parser).items():
            found[f"{name} {inner}"] = child
    return found


COMMANDS = _commands()


def test_every_command_of_the_contract_is_there() -> None:
    assert {"daemon", "status", "submit", "halt", "resume", "alert", "reduce-only", "tail",
            "executions", "show", "run", "keys", "intents"} <= set(COMMANDS)


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    epilog = parser.epilog or ""
    assert epilog.startswith("example"), epilog
    lines = [line.strip() for line in epilog.split(":", 1)[1].splitlines()]
    # The command itself, without the shell's redirection or pipe after it.
    return [re.split(r" [>|] ", line)[0] for line in lines if line.startswith("tradeloom ")]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_ends_with_an_example_the_parser_takes(name: str) -> None:
    examples = _examples(COMMANDS[name])
    assert examples, COMMANDS[name].epilog
    for example in examples:
        args = build_parser().parse_args(shlex.split(example)[1:])  # SystemExit if not
        assert args.handler is not None
        words = shlex.split(example)
        assert all(word in words for word in name.split()), example


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_the_help_mentions_is_an_option_of_the_command(name: str) -> None:
    parser = COMMANDS[name]
    taken = {flag for action in parser._actions for flag in action.option_strings}
    text = " ".join([parser.description or "", *(action.help or "" for action in
                                                  parser._actions)])
    mentioned = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))
    assert mentioned - taken == set()


@pytest.mark.parametrize("args", [["status"], ["halt", "--reason", "r"], ["tail"]])
def test_an_unknown_option_points_at_its_commands_help(
        args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from actors.cli import main

    name = args[0]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--bogus"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (f"tradeloom {name}: error: unrecognized arguments: "
                                       f"--bogus (see tradeloom {name} --help)\n")
