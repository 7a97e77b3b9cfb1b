"""A `Config` built by hand (or with `dataclasses.replace`) gets the TOML loader's range
checks and its one-line ConfigError messages: `Config(daemon=DaemonConfig(supervisors=0))`
once started an engine with no supervisor, and a daemon, that ran nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.config import (
    Config,
    DaemonConfig,
    EmergencyConfig,
    JournalConfig,
    MetricsConfig,
    ResilienceConfig,
    TransportConfig,
    WorkflowEntry,
)
from actors.config_ranges import COUNT_RANGES
from actors.errors import ConfigError

#: (the TOML loader's table, the same values built by hand)
OUT_OF_RANGE: list[tuple[dict[str, Any], Callable[[], Config]]] = [
    ({"daemon": {"supervisors": 0}}, lambda: Config(daemon=DaemonConfig(supervisors=0))),
    ({"daemon": {"node_actors": 10_001}},
     lambda: Config(daemon=DaemonConfig(node_actors=10_001))),
    ({"daemon": {"data_dir": ""}}, lambda: Config(daemon=DaemonConfig(data_dir=""))),
    ({"daemon": {"shutdown_grace_s": -1.0}},
     lambda: Config(daemon=DaemonConfig(shutdown_grace_s=-1.0))),
    ({"resilience": {"timeout_s": 0.0}},
     lambda: Config(resilience=ResilienceConfig(timeout_s=0.0))),
    ({"resilience": {"backoff_min_s": 5.0, "backoff_max_s": 1.0}},
     lambda: Config(resilience=ResilienceConfig(backoff_min_s=5.0, backoff_max_s=1.0))),
    ({"emergency": {"warn_at": 1.5}}, lambda: Config(emergency=EmergencyConfig(warn_at=1.5))),
    ({"journal": {"keep_days": 0.0}}, lambda: Config(journal=JournalConfig(keep_days=0.0))),
    ({"transport": {"heartbeat_s": 0.0}},
     lambda: Config(transport=TransportConfig(heartbeat_s=0.0))),
    ({"transport": {"control": "garbage"}},
     lambda: Config(transport=TransportConfig(control="garbage"))),
    ({"metrics": {"listen": "127.0.0.1:70000"}},
     lambda: Config(metrics=MetricsConfig(listen="127.0.0.1:70000"))),
]


@pytest.mark.parametrize(("raw", "build"), OUT_OF_RANGE)
def test_a_config_built_by_hand_is_refused_with_the_loaders_message(
        raw: dict[str, Any], build: Callable[[], Config]) -> None:
    with pytest.raises(ConfigError) as loaded:
        Config.from_dict(raw)
    with pytest.raises(ConfigError) as built:
        build()
    assert str(built.value) == str(loaded.value)
    assert len(str(built.value).splitlines()) == 1


def test_replace_on_a_good_config_is_checked_too() -> None:
    good = Config()
    with pytest.raises(ConfigError, match=r"^daemon\.supervisors must be an integer between"):
        dataclasses.replace(good, daemon=DaemonConfig(supervisors=0))
    # an interval trigger's floor (a workflow entry is not imported for the check)
    with pytest.raises(ConfigError, match=r"^workflows\[0\]\.every_s must be >= 0\.01$"):
        dataclasses.replace(good, workflows=(WorkflowEntry(ref="m:w", every_s=0.001),))
    # ids a submit over the control socket would refuse (empty, over 256 characters)
    with pytest.raises(ConfigError, match=r"^workflows\[0\]\.bot_id must be 1 to 256 "):
        dataclasses.replace(good, workflows=(WorkflowEntry(ref="m:w", bot_id=""),))
    with pytest.raises(ConfigError, match=r"^workflows\[0\]\.strategy_id must be 1 to 256 "):
        dataclasses.replace(good, workflows=(WorkflowEntry(ref="m:w", strategy_id="s" * 257),))
    assert dataclasses.replace(good, daemon=DaemonConfig(supervisors=2)).daemon.supervisors == 2


def test_a_daemon_cannot_be_given_a_config_out_of_range() -> None:
    from transport.daemon import Daemon

    with pytest.raises(ConfigError, match=r"^daemon\.node_actors must be an integer between"):
        Daemon(Config(daemon=DaemonConfig(node_actors=0)))


NEAR_BOUNDS = sorted({bound + step for low, high in COUNT_RANGES.values()
                      for bound in (low, high) for step in (-1, 0, 1)})
HAND_BUILT = {"daemon": DaemonConfig, "resilience": ResilienceConfig,
              "journal": JournalConfig}


@given(key=st.sampled_from(sorted(COUNT_RANGES)),
       value=st.sampled_from(NEAR_BOUNDS) | st.integers())
def test_counts_built_by_hand_and_loaded_are_refused_alike(key: str, value: int) -> None:
    table, name = key.split(".")
    builds: list[Callable[[], Config]] = [
        lambda: Config.from_dict({table: {name: value}}),
        lambda: Config(**{table: HAND_BUILT[table](**{name: value})})]
    outcomes: list[object] = []
    for build in builds:
        try:
            outcomes.append(getattr(getattr(build(), table), name))
        except ConfigError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
