"""Configuration: small keyword-only frozen dataclasses, parsed once from TOML.

`Config.load(path)` / `Config.from_dict(mapping)` validate every key (unknown keys and wrong
types are errors that name the key) and import the `[[workflows]]` refs, so a bad config
fails at start-up and never half-way through a trading day. The ranges of counts, sizes and
durations are checked by `Config` itself, so a Config built by hand gets the same errors.
"""

from __future__ import annotations

import os
import stat
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from actors.clock import Clock, SystemClock
from actors.errors import ConfigError
from actors.journal_caps import DEFAULT_MAX_EVENT_BYTES
from actors.web_config import WebConfig
from actors.webhook_config import WebhookConfig

LimitKind = Literal["daily_loss", "position_size", "drawdown_pct", "action_rate", "custom"]
LIMIT_KINDS: tuple[str, ...] = typing.get_args(LimitKind)


class _DefaultDir(str):
    """The data_dir nobody gave: equal to ".tradeloom", and known to be the default."""

    __slots__ = ()


DEFAULT_DATA_DIR = _DefaultDir(".tradeloom")


@dataclass(frozen=True, kw_only=True, slots=True)
class DaemonConfig:
    #: The journal's directory (data_dir/journal.db). The daemon always keeps a journal
    #: (here by default); an in-process engine only when data_dir is given.
    data_dir: str = field(default_factory=lambda: DEFAULT_DATA_DIR)
    max_concurrent_executions: int = 1000
    max_queued_executions: int = 10000
    #: Long-lived supervisor actors that share the executions (each owns many). Under the
    #: GIL one is fastest (bench/core.py --supervisors N); more isolate, they do not speed up.
    supervisors: int = 1
    #: Most node actors per supervisor: how many node functions may block at once.
    node_actors: int = 256
    #: A node with this many runs still stuck past their timeout (abandoned threads, per
    #: supervisor) is not run again (`NodeStuck`) until one of them returns: a node that
    #: hangs on every run holds this many threads, not one more per run.
    max_stuck_runs_per_node: int = 16
    #: CPU ids to pin the process to (os.sched_setaffinity); empty leaves it alone.
    cpu_affinity: tuple[int, ...] = ()
    #: On SIGTERM/SIGINT, how long running executions may take to finish before the rest
    #: end cancelled.
    shutdown_grace_s: float = 10.0
    #: gc.set_threshold(...) at daemon start (e.g. [50000, 20, 100]); empty leaves
    #: Python's. Fewer gen-0 collections walking the executions in flight (bench/core.py).
    gc_threshold: tuple[int, ...] = ()

    @property
    def journal_dir(self) -> str | None:
        """Where an in-process engine keeps its journal: data_dir if it was given."""
        return None if type(self.data_dir) is _DefaultDir else self.data_dir


@dataclass(frozen=True, kw_only=True, slots=True)
class TransportConfig:
    events: str = "tcp://127.0.0.1:7450"
    control: str = "tcp://127.0.0.1:7451"
    heartbeat_s: float = 1.0
    curve_secret_key_file: str | None = None
    curve_authorized_keys_dir: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsConfig:
    #: "host:port" for the Prometheus text endpoint (/metrics); None: no endpoint.
    listen: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientConfig:
    """What the CLI's client commands use to reach a daemon with CURVE on."""

    #: The client's secret key file (`tradeloom keys DIR --name NAME` writes NAME.key_secret).
    curve_secret_key_file: str | None = None
    #: The daemon's public key file (its `.key`).
    curve_server_public_key_file: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ResilienceConfig:
    """Per-node defaults for timeouts, restarts and breakers; nodes may override each."""

    timeout_s: float = 30.0
    max_restarts: int = 2
    restart_within_s: float = 60.0
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    breaker_failure_threshold: int = 5
    breaker_reset_timeout_s: float = 60.0

    @classmethod
    def development(cls) -> ResilienceConfig:
        return cls(max_restarts=2, backoff_min_s=1.0, backoff_max_s=60.0,
                   breaker_failure_threshold=5, breaker_reset_timeout_s=60.0)

    @classmethod
    def staging(cls) -> ResilienceConfig:
        return cls(max_restarts=3, backoff_min_s=1.0, backoff_max_s=120.0,
                   breaker_failure_threshold=10, breaker_reset_timeout_s=120.0)

    @classmethod
    def production(cls) -> ResilienceConfig:
        return cls(max_restarts=3, backoff_min_s=1.0, backoff_max_s=120.0,
                   breaker_failure_threshold=10, breaker_reset_timeout_s=120.0)


PRESETS = {
    "development": ResilienceConfig.development,
    "staging": ResilienceConfig.staging,
    "production": ResilienceConfig.production,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitConfig:
    """One `[[emergency.limits]]` table."""

    name: str
    kind: LimitKind
    threshold: float
    #: Reaching the threshold halts the engine (source "risk_limit"). On by default: safe side.
    auto_halt: bool = True
    #: No update for this long raises the state to ALERT (HALT with auto_halt), source
    #: "stale_feed": a dead risk feed is not a safe one. None: never stale.
    stale_after_s: float | None = None
    #: daily_loss only: the local wall-clock time ("HH:MM") at which the trading day starts ...
    reset_at: str = "00:00"
    #: ... in this IANA time zone (stdlib zoneinfo), so the reset follows DST.
    timezone: str = "UTC"


@dataclass(frozen=True, kw_only=True, slots=True)
class OnHaltEntry:
    """One `[[emergency.on_halt]]` table: a workflow run each time HALT is entered."""

    ref: str
    #: The imported Workflow object (filled by the loader; not a config key).
    workflow: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class EmergencyConfig:
    warn_at: float = 0.8
    limits: tuple[LimitConfig, ...] = ()
    on_halt: tuple[OnHaltEntry, ...] = ()


JournalSync = Literal["normal", "full"]


@dataclass(frozen=True, kw_only=True, slots=True)
class JournalConfig:
    """`[journal]`: the SQLite journal under `[daemon] data_dir` (actors/journal.py)."""

    #: "normal" survives a process crash; "full" also a power loss (an fsync per commit).
    sync: JournalSync = "normal"
    #: Retention: keep about this many newest events (None: no count limit).
    keep_events: int | None = 10_000_000
    #: Retention: keep events this many days (None: no age limit). Either limit prunes.
    keep_days: float | None = None
    #: Start in HALT while action intents from before a restart have no known outcome.
    halt_on_unresolved_intents: bool = False
    #: An event bigger than this, packed, has its user data cut before it is committed
    #: (actors/journal_caps.py): one huge output must not stop the journal.
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowEntry:
    ref: str
    every_s: float | None = None
    bot_id: str | None = None
    strategy_id: str | None = None
    #: The imported Workflow object (filled by the loader; not a config key).
    workflow: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    daemon: DaemonConfig = DaemonConfig()
    transport: TransportConfig | None = None
    resilience: ResilienceConfig = ResilienceConfig()
    emergency: EmergencyConfig = EmergencyConfig()
    journal: JournalConfig = JournalConfig()
    metrics: MetricsConfig = MetricsConfig()
    client: ClientConfig = ClientConfig()
    #: `[web]`: the WebSocket gateway and dashboard (actors/web_config.py); off by default.
    web: WebConfig = field(default_factory=WebConfig)
    workflows: tuple[WorkflowEntry, ...] = ()
    #: `[[webhooks]]`: outbound endpoints (actors/webhook_config.py); the daemon runs them.
    webhooks: tuple[WebhookConfig, ...] = ()

    def __post_init__(self) -> None:
        # The ranges hold however the Config was built (the TOML loader, by hand, or
        # `dataclasses.replace`), with the loader's one-line ConfigError naming the key: a
        # hand-built one with supervisors=0 started an engine that ran nothing. Once per
        # Config (at start), never per execution.
        from actors.config_ranges import check_ranges

        check_ranges(self)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        if str(path) == "":  # (Path("") is ".": "config .: not a regular file")
            raise ConfigError("--config '': no file named")
        path = Path(path)
        try:
            raw = tomllib.loads(read_config_text(path))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        return cls.from_dict(raw, base_dir=path.resolve().parent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, base_dir: str | Path | None = None) -> Config:
        """Validate `raw` (the TOML's tables) key by key; `base_dir` is put on sys.path
        for the workflow refs. Raises ConfigError naming the key."""
        from actors.config_parse import parse

        return parse(raw, base_dir=base_dir)


#: A config file is a few KiB; past this it is something else (`--config /dev/zero` read
#: gigabytes before failing).
MAX_CONFIG_BYTES = 1024 * 1024


def read_config_text(path: str | Path) -> str:
    """A config file's text: a regular file (a FIFO would wait for a writer, past any
    --timeout) of at most MAX_CONFIG_BYTES, or a ConfigError naming it; OSError and
    UnicodeDecodeError as reading raises them."""
    if str(path) == "":
        raise ConfigError("--config '': no file named")
    if not stat.S_ISREG(os.stat(path).st_mode):  # (before open: a FIFO's open waits)
        raise ConfigError(f"config {path}: not a regular file")
    with open(path, "rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    return data.decode("utf-8")


def start_args(config: object, clock: object) -> tuple[Config, Clock]:
    """`Engine.start`'s config and clock, defaulted, or a TypeError naming the one that is
    not what it should be (an empty dict passed as config once read as "no config")."""
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise TypeError("config must be a Config (Config.from_dict(...) or "
                        f"Config.load(path)), not {type(config).__name__}")
    if clock is None:
        return config, SystemClock()
    if not (hasattr(clock, "real") and all(
            callable(getattr(clock, m, None)) for m in ("monotonic", "time", "on_advance"))):
        raise TypeError(f"clock must be a Clock (actors.clock), not {type(clock).__name__}")
    return config, cast(Clock, clock)
