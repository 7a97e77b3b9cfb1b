"""docs/operations.md, "Every config key": the reference config loads, and it names every
key the config dataclasses accept (a new key without a line there fails here); the
README's configuration table names every key too."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

import actors.config as config_module
from actors import Config
from actors.web_config import WebConfig
from actors.webhook_config import WebhookConfig

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"

#: Fields that hold a parsed object, not a key of the file.
NOT_KEYS = {"workflow"}


def reference_block() -> str:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("## Every config key", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match is not None, "no ```toml block under 'Every config key'"
    return match.group(1)


def config_classes() -> list[type]:
    found = [obj for obj in vars(config_module).values()
             if isinstance(obj, type) and dataclasses.is_dataclass(obj)
             and obj.__module__ == config_module.__name__]
    return [*found, WebConfig, WebhookConfig]


def test_the_reference_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_HOOK_SECRET", "s")
    monkeypatch.setenv("OPS_HOOK_TOKEN", "t")
    config = Config.from_dict(tomllib.loads(reference_block()))
    assert config.web.listen == "127.0.0.1:8450"
    assert config.webhooks[0].name == "ops-slack"


def test_the_reference_names_every_key() -> None:
    block = reference_block()
    keys = set(re.findall(r"^#?\s*([a-z_]+)\s*=", block, re.M))
    tables = set(re.findall(r"^\[\[?([a-z_.]+)\]\]?", block, re.M))
    wanted = {f.name for cls in config_classes() for f in dataclasses.fields(cls)}
    named = keys | {t.rsplit(".", 1)[-1] for t in tables}
    assert wanted - NOT_KEYS - named == set()


def test_the_readme_configuration_table_names_every_key() -> None:
    readme = (OPERATIONS.parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    named = {word for code in re.findall(r"`([^`]+)`", table)
             for word in re.findall(r"[a-z_]+", code)}
    wanted = {f.name for cls in config_classes() for f in dataclasses.fields(cls)}
    assert wanted - NOT_KEYS - named == set()
