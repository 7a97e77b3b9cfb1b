"""The docs name what the code has: every control op, error code, event type and event
field in docs/protocol.md; every CLI command and option, and every metric, in the README.
A new op, code, field, flag or metric without a line in the docs fails here (the docs must
state the protocol themselves: other languages' clients have nothing else)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest

from actors.cli import build_parser
from actors.event_types import EVENT_TYPES, SequencedEvent, WorkflowEvent
from transport.errors import INTERNAL, SERVER_CODES
from transport.ops import OPS

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: Fields every sequenced event has (protocol section 1, "Fields every event has", and the
#: workflow events' table under it): not repeated in each type's row.
COMMON_FIELDS = set(get_type_hints(WorkflowEvent)) | set(get_type_hints(SequencedEvent)) | {
    "type"}
#: In-process only, never on the wire (README: engine.subscribe's gap notices).
NOT_PUBLISHED = {"gap"}


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole line) up to the next heading of the same level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = text.find(f"\n{level} ", start)
    return text[start:] if end < 0 else text[start:end]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in `text` (header and rule rows included); an
    escaped `\\|` stays inside its cell."""
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            for line in text.splitlines() if line.lstrip().startswith("|")]


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", text))


def test_every_control_op_has_a_paragraph() -> None:
    ops_section = section(PROTOCOL, "### Ops")
    documented = set(re.findall(r"\*\*`([a-z_]+)`\*\*", ops_section))
    assert set(OPS) - documented == set()


def test_every_error_code_is_in_the_table() -> None:
    rows = table_rows(section(PROTOCOL, "### Error codes"))
    documented = {row[0].strip("`") for row in rows}
    assert ({code for _cls, code in SERVER_CODES} | {INTERNAL}) - documented == set()


def event_rows() -> dict[str, str]:
    """type -> the fields cell of its row in the event types table."""
    rows = table_rows(section(PROTOCOL, "### Event types"))
    found: dict[str, str] = {}
    for row in rows:
        for name in re.findall(r"`([a-z_]+)`", row[0]):
            found[name] = row[-1]
    return found


@pytest.mark.parametrize("event_type", sorted(set(EVENT_TYPES) - NOT_PUBLISHED))
def test_every_event_type_and_field_is_documented(event_type: str) -> None:
    rows = event_rows()
    assert event_type in rows, f"no row for {event_type} in docs/protocol.md's event table"
    if event_type == "heartbeat":  # its fields are section 2's
        fields_text = section(PROTOCOL, "## 2. Heartbeats and epochs")
    else:
        fields_text = rows[event_type]
        if "the same as" in fields_text:  # `risk_limit_exceeded`: the warning's fields
            fields_text = rows[re.findall(r"`([a-z_]+)`", fields_text)[-1]]
    fields = set(get_type_hints(EVENT_TYPES[event_type])) - COMMON_FIELDS
    named = backticked(fields_text) | set(re.findall(r'"([a-z_]+)"', fields_text))
    assert fields - named == set(), f"{event_type}: fields missing from its row"


def test_the_common_event_fields_are_documented() -> None:
    fields_text = section(PROTOCOL, "### Fields every event has")
    assert COMMON_FIELDS - backticked(fields_text) == set()


def commands() -> dict[str, argparse.ArgumentParser]:
    """'status', 'webhooks failed', ... -> its parser (every leaf command)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{prefix} {name}".strip())
                return
        found[prefix] = parser

    walk(build_parser(), "")
    return found


def own_options(parser: argparse.ArgumentParser) -> set[str]:
    """The command's long options, without --help and the shared "reaching the daemon"
    ones (the paragraph under the README's command table names those once)."""
    shared = {opt for group in parser._action_groups if group.title == "reaching the daemon"
              for action in group._group_actions for opt in action.option_strings}
    return {opt for action in parser._actions for opt in action.option_strings
            if opt.startswith("--") and opt != "--help"} - shared


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_cli_command_and_option_is_in_the_readme_table(command: str) -> None:
    cli = section(README, "## Command line")
    # A row names a command as `tradeloom CMD ...` or, after a "/", as `CMD ...`; its
    # options may be named in any of its cells.
    pattern = re.compile(rf"`(?:tradeloom )?{re.escape(command)}\b")
    rows = [" | ".join(row) for row in table_rows(cli) if pattern.search(row[0])]
    assert rows, f"no row of the README's command table names `{command}`"
    missing = {opt for opt in own_options(commands()[command])
               if not any(re.search(rf"{re.escape(opt)}\b", row) for row in rows)}
    assert missing == set(), f"`tradeloom {command}` options not in its README row"


def test_the_global_and_shared_options_are_in_the_readme() -> None:
    cli = section(README, "## Command line")
    status = commands()["status"]
    shared = {opt for group in status._action_groups if group.title == "reaching the daemon"
              for action in group._group_actions for opt in action.option_strings}
    assert len(shared) >= 5
    everywhere = own_options(build_parser())  # --version, --log-format, --log-level
    assert {opt for opt in shared | everywhere if opt not in cli} == set()


def metric_names() -> set[str]:
    """Every metric family transport/metrics.py exposes (read from its source: starting a
    daemon for a scrape would test the daemon, not the docs)."""
    source = (ROOT / "transport" / "metrics.py").read_text(encoding="utf-8")
    names = set(re.findall(r'"(tradeloom_[a-z_]+)"', source))
    names = {f"{n}_info" if n == "tradeloom_build" else n for n in names}  # an Info
    # The interval triggers' counters: f"tradeloom_trigger_{field}_total" over the fields
    # listed just above that line.
    assert 'f"tradeloom_trigger_{field}_total"' in source
    fields = re.findall(r'\("([a-z]+)", "[A-Z][^"]*"', source.split("def _triggers", 1)[1])
    names |= {f"tradeloom_trigger_{field}_total" for field in fields}
    assert len(names) > 30, "the metric names could not be read from transport/metrics.py"
    return names


def test_every_metric_is_in_the_readme_table() -> None:
    rows = table_rows(section(README, "## Metrics"))

    def documented(name: str) -> bool:
        for row in rows:
            cell = row[0]
            if f"`{name}`" in cell:
                return True
            # "`tradeloom_executions_running` / `_queued`": a suffix of a full name's stem.
            fulls = re.findall(r"`(tradeloom_[a-z_]+)`", cell)
            for suffix in re.findall(r"`(_[a-z_]+)`", cell):
                stem = name[:-len(suffix)] if name.endswith(suffix) else None
                if stem and any(full.startswith(stem + "_") for full in fulls):
                    return True
        return False

    assert {name for name in metric_names() if not documented(name)} == set()


DOCS = ("README.md", "docs/protocol.md", "docs/operations.md", "docs/architecture.md")


@pytest.mark.parametrize("doc", DOCS)
def test_every_link_and_repo_path_exists(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    base = (ROOT / doc).parent
    links = [target for target in re.findall(r"\]\(([^)#\s]+)", text)
             if not re.match(r"[a-z]+:", target)]
    paths = {path.rstrip(".,:;") for path in re.findall(
        r"(?<![\w/.])(?:actors|transport|examples|tests|bench|docs)/[\w./*-]*[\w*]", text)}
    # Bare module names (`engine_journal.py`): a file of that name in one of the packages.
    modules = set(re.findall(r"`([a-z_]+\.py)`", text))
    missing = [link for link in links if not (base / link).exists()]
    missing += sorted(path for path in paths if not list(ROOT.glob(path)))
    missing += sorted(name for name in modules if not any(
        (ROOT / package / name).exists()
        for package in ("actors", "transport", "transport/web", "examples", "bench")))
    assert missing == []


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_stand_on_their_own(doc: str) -> None:
    """No pointer to a contract or spec file outside the repository: the docs state the
    protocol and the config themselves."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert re.findall(r"(?i)contract\.md|/work/|shared/|\bCONTRACT\b", text) == []


def test_every_web_gateway_op_is_in_its_table() -> None:
    from transport.web.actions import WEB_OPS

    requests = section(PROTOCOL, "### Requests")
    named = {name for row in table_rows(requests) for name in backticked(row[0])}
    assert set(WEB_OPS) - named == set()
    assert named - set(OPS) == set(), "a web op the control socket does not have"


def test_the_readme_python_api_example_runs_as_pasted_and_places_its_order() -> None:
    """Pasted into `python -` at the repo root, as a newcomer would: it once called an
    `exchange` it never defined (its condition was False, so nothing noticed)."""
    snippet = README.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```")[0]
    done = subprocess.run([sys.executable, "-"], input=snippet, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\ncompleted {'id': 'binance-1', 'side': 'buy'" in done.stdout, done.stdout[-2000:]
