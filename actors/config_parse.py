"""Parsing and validating a config (`Config.from_dict`): every error names its key.

Each table is checked against its dataclass in `actors.config` (unknown keys, wrong types,
NaN or inf numbers, ranges), and the workflow refs are imported at load time, so a bad
config fails at start-up and never half-way through a trading day.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import sys
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from actors.config import (
    PRESETS,
    ClientConfig,
    Config,
    DaemonConfig,
    EmergencyConfig,
    JournalConfig,
    LimitConfig,
    MetricsConfig,
    OnHaltEntry,
    ResilienceConfig,
    TransportConfig,
    WorkflowEntry,
)
from actors.config_ranges import MIN_STALE_AFTER_S
from actors.errors import ConfigError, describe, shown, valid_text
from actors.web_config import parse_web
from actors.webhook_config import parse_webhooks


def parse(raw: Mapping[str, Any], *, base_dir: str | Path | None = None) -> Config:
    """`Config.from_dict`: every key checked, every error naming it."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config must be a table")
    _reject_unknown(raw, {"daemon", "transport", "resilience", "emergency", "journal",
                         "metrics", "client", "web", "webhooks", "workflows"}, "")
    resilience_raw = dict(_table(raw, "resilience"))
    preset = resilience_raw.pop("preset", None)
    resilience_base = ResilienceConfig()
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(f"resilience.preset must be one of {sorted(PRESETS)}")
        resilience_base = PRESETS[preset]()
    emergency_raw = dict(_table(raw, "emergency"))
    limits = _limits(emergency_raw.pop("limits", []))
    hooks = tuple(
        _import_hook(_build(OnHaltEntry, item, f"emergency.on_halt[{i}]",
                            exclude={"workflow"}), i, base_dir)
        for i, item in enumerate(_array(emergency_raw.pop("on_halt", []),
                                        "emergency.on_halt")))
    entries = tuple(
        _build(WorkflowEntry, item, f"workflows[{i}]", exclude={"workflow"})
        for i, item in enumerate(_array(raw.get("workflows", []), "workflows"))
    )
    config = Config(
        daemon=_build(DaemonConfig, _table(raw, "daemon"), "daemon"),
        transport=(_build(TransportConfig, _table(raw, "transport"), "transport")
                   if "transport" in raw else None),
        resilience=_build(ResilienceConfig, resilience_raw, "resilience", base=resilience_base),
        emergency=dataclasses.replace(
            _build(EmergencyConfig, emergency_raw, "emergency",
                   exclude={"limits", "on_halt"}),
            limits=limits, on_halt=hooks),
        journal=_build(JournalConfig, _table(raw, "journal"), "journal"),
        metrics=_build(MetricsConfig, _table(raw, "metrics"), "metrics"),
        client=_build(ClientConfig, _table(raw, "client"), "client"),
        web=parse_web(_table(raw, "web")),
        workflows=tuple(_import_entry(e, i, base_dir) for i, e in enumerate(entries)),
        webhooks=parse_webhooks(raw.get("webhooks", [])),
    )
    _check_workflow_ids(config)  # (the ranges: checked by Config itself, check_ranges)
    return config


def _check_workflow_ids(config: Config) -> None:
    """One Workflow per id: the engine refuses a second object under a registered id (a
    submit by id must never run something else), so say it here, naming the key, and not
    at registration (an "unexpected ValueError") or when HALT submits a hook."""
    first: dict[str, tuple[Any, str]] = {}
    refs = [(entry.workflow, f"workflows[{i}].ref") for i, entry in enumerate(config.workflows)]
    refs += [(hook.workflow, f"emergency.on_halt[{i}].ref")
             for i, hook in enumerate(config.emergency.on_halt)]
    for workflow, key in refs:
        seen = first.setdefault(workflow.id, (workflow, key))
        if seen[0] is not workflow:
            raise ConfigError(f"{key}: workflow id {workflow.id!r} is already taken by "
                              f"another Workflow ({seen[1]})")


def _limits(raw: Any) -> tuple[LimitConfig, ...]:
    """Parse `[[emergency.limits]]`; every error names the key."""
    limits: list[LimitConfig] = []
    for i, item in enumerate(_array(raw, "emergency.limits")):
        where = f"emergency.limits[{i}]"
        lim = _build(LimitConfig, item, where)
        if valid_text(lim.name) != lim.name:  # in-process only: TOML has no lone surrogates
            raise ConfigError(f"{where}.name: {lim.name!r} has a lone surrogate, which UTF-8 "
                              "(the metrics, the journal, the wire) cannot carry")
        if not lim.name:  # ctx.risk("") and a metrics label with no name: a typo's sign
            raise ConfigError(f"{where}.name must not be empty")
        if not lim.name.strip():  # (any other text is a name: the views escape it)
            raise ConfigError(f"{where}.name must not be blank")
        if any(lim.name == seen.name for seen in limits):
            raise ConfigError(f"{where}.name: duplicate limit name {lim.name!r}")
        if lim.threshold <= 0:
            raise ConfigError(f"{where}.threshold must be > 0")
        if lim.kind == "drawdown_pct" and lim.threshold > 100:
            raise ConfigError(f"{where}.threshold: a drawdown_pct limit is in percent "
                              f"(0-100); {lim.threshold:g} could never be reached")
        if lim.kind == "action_rate" and lim.threshold < 1:
            raise ConfigError(f"{where}.threshold: an action_rate limit "
                              "is action starts per second and must be >= 1")
        if lim.stale_after_s is not None:
            if lim.kind == "action_rate":
                raise ConfigError(f"{where}.stale_after_s: an action_rate limit is measured "
                                  "by the engine and is never stale")
            if lim.stale_after_s < MIN_STALE_AFTER_S:
                raise ConfigError(f"{where}.stale_after_s must be >= {MIN_STALE_AFTER_S:g}")
        for key in ("reset_at", "timezone"):
            if key in item and lim.kind != "daily_loss":
                raise ConfigError(f"{where}.{key}: only daily_loss limits reset daily")
        try:
            reset_minutes(lim.reset_at)
        except ValueError as exc:
            raise ConfigError(f"{where}.reset_at: {exc}") from None
        try:
            zone(lim.timezone)
        except ValueError as exc:
            raise ConfigError(f"{where}.timezone: {exc}") from None
        limits.append(lim)
    return tuple(limits)


_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def reset_minutes(reset_at: str) -> int:
    """Minutes after local midnight of a daily reset given as "HH:MM" (00:00-23:59)."""
    match = _HH_MM.fullmatch(reset_at) if isinstance(reset_at, str) else None
    if match is None:
        raise ValueError(f"must be a time of day \"HH:MM\" (00:00 to 23:59), not {reset_at!r}")
    return int(match[1]) * 60 + int(match[2])


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. "Europe/London"); ValueError if there is none."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"must be an IANA time zone name such as \"UTC\", not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown IANA time zone {name!r} (a system without a time zone "
                         "database needs the tzdata package)") from None


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _array(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be an array of tables ([[{key}]])")
    return value


def _reject_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in raw:
        if key not in known:
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown config key {name!r}")


def _build(cls: Any, raw: Any, where: str, *, exclude: Collection[str] = (),
           base: Any = None) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    _reject_unknown(raw, set(fields), where)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key '{where}.{name}'")
    if base is not None:
        return dataclasses.replace(base, **values)
    return cls(**values)


#: Keys whose values are not repeated in an error: a webhook's signing key typed without
#: quotes (a number) went to the system log in "must be a string, not 4929...".
_SECRET_WORDS = ("secret", "password", "token")


def _shown(key: str, value: Any) -> str:
    if any(word in key.rsplit(".", 1)[-1] for word in _SECRET_WORDS):
        return f"a value of type {type(value).__name__} (not shown: it may be a secret)"
    return shown(value)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            return _coerce(value, option, key)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(map(repr, allowed))
            raise ConfigError(f"{key} must be one of {choices}, not {_shown(key, value)}")
        return value
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be an array")
        return tuple(_coerce(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, not {_shown(key, value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, not {_shown(key, value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, not {_shown(key, value)}")
        # TOML can say nan and inf; no setting means anything with them (an infinite
        # threshold would disarm a limit), and a huge integer has no float.
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, not {_shown(key, value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, not {_shown(key, value)}")
        return value
    raise ConfigError(f"{key}: unsupported value {_shown(key, value)}")  # pragma: no cover


def _import_hook(entry: OnHaltEntry, index: int, base_dir: str | Path | None) -> OnHaltEntry:
    workflow = import_ref(entry.ref, base_dir=base_dir, key=f"emergency.on_halt[{index}].ref")
    return dataclasses.replace(entry, workflow=workflow)


def _import_entry(entry: WorkflowEntry, index: int, base_dir: str | Path | None) -> WorkflowEntry:
    workflow = import_ref(entry.ref, base_dir=base_dir, key=f"workflows[{index}].ref")
    return dataclasses.replace(entry, workflow=workflow)


def _import_roots(base_dir: str | Path | None) -> list[str]:
    """The working directory, base_dir, and, when base_dir is inside a package (it has an
    `__init__.py`, as examples/ does), that package's parent: so `examples.arbitrage` imports
    from examples/daemon.toml whatever the working directory."""
    roots = [str(Path.cwd())]
    if base_dir:
        base = Path(base_dir).resolve()
        roots.append(str(base))
        top = base
        while (top / "__init__.py").is_file() and top.parent != top:
            top = top.parent
        if top != base:
            roots.append(str(top))
    return roots


def import_ref(ref: str, *, base_dir: str | Path | None = None, key: str = "ref") -> Any:
    """Import `package.module:attr`, with base_dir (and the parent of the package it is
    in, if any) and the working directory on sys.path."""
    from actors.workflow import Workflow

    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}: {ref!r} is not of the form 'module:attribute'")
    for extra in _import_roots(base_dir):
        if extra not in sys.path:
            sys.path.insert(0, extra)
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - any import-time failure is a config error
        # BaseException: a module's SystemExit or KeyboardInterrupt (or a Ctrl-C while it
        # hangs) once ended the daemon with no word (exit 0 or the module's code), and a
        # GeneratorExit or an exception whose str() raises with a traceback.
        raise ConfigError(f"{key}: cannot import {module_name!r}: {_one_line(exc)}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}: module {module_name!r} has no attribute {attr!r}") from None
    except BaseException as exc:  # noqa: BLE001 - a module __getattr__ is user code too
        raise ConfigError(f"{key}: cannot get {attr!r} from {module_name!r}: "
                          f"{_one_line(exc)}") from None
    if not isinstance(obj, Workflow):
        raise ConfigError(f"{key}: {ref!r} is a {type(obj).__name__}, not a Workflow")
    return obj


def _one_line(exc: BaseException) -> str:
    """What user code raised, on one line: "Type: message" (a message may span several
    lines, or its `str()` raise), or just "Type" when it says nothing (KeyboardInterrupt)."""
    text = " ".join(describe(exc).split())
    name = type(exc).__name__
    return text if text == name else f"{name}: {text}"
