"""Configuration (README): defaults, TOML loading, presets, and bad configs refused with
a `ConfigError` whose message names the key."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Config, ConfigError, Engine, Workflow
from actors.errors import TradeloomError
from tests.conftest import Recorder

WORKFLOW_MODULE = textwrap.dedent("""
    from actors import Node, Workflow

    def price(ctx):
        return {"price": 1.0}

    workflow = Workflow("cfg_wf", nodes=[Node("price", price, category="provider")])
    not_a_workflow = 42
""")


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A directory with a uniquely named workflow module, not on sys.path yet.

    sys.path and sys.modules are restored afterwards (the loader adds the config's
    directory to sys.path)."""
    name = f"cfgmod_{uuid.uuid4().hex[:12]}"
    directory = tmp_path / "conf"
    directory.mkdir()
    (directory / f"{name}.py").write_text(WORKFLOW_MODULE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield directory, name
    sys.modules.pop(name, None)


# -- defaults ------------------------------------------------------------------------------

def check_contract_defaults(config: Config) -> None:
    d, r, e = config.daemon, config.resilience, config.emergency
    assert d.data_dir == ".tradeloom"
    assert d.max_concurrent_executions == 1000
    assert d.max_queued_executions == 10000
    assert r.timeout_s == 30.0
    assert r.max_restarts == 2
    assert r.restart_within_s == 60.0
    assert r.backoff_min_s == 1.0
    assert r.backoff_max_s == 60.0
    assert r.breaker_failure_threshold == 5
    assert r.breaker_reset_timeout_s == 60.0
    assert e.warn_at == 0.8
    assert tuple(e.limits) == ()
    assert tuple(config.workflows) == ()


def test_defaults_match_the_contract() -> None:
    check_contract_defaults(Config())
    check_contract_defaults(Config.from_dict({}))


def test_empty_sections_take_the_defaults() -> None:
    config = Config.from_dict({"daemon": {}, "resilience": {}, "emergency": {},
                               "workflows": []})
    check_contract_defaults(config)


def test_no_transport_section_means_no_transport() -> None:
    assert Config().transport is None
    assert Config.from_dict({"daemon": {"data_dir": "x"}}).transport is None


def test_transport_defaults_match_the_contract() -> None:
    transport = Config.from_dict({"transport": {}}).transport
    assert transport is not None
    assert transport.events == "tcp://127.0.0.1:7450"
    assert transport.control == "tcp://127.0.0.1:7451"
    assert transport.heartbeat_s == 1.0


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:7450", "tcp://127.0.0.1:*", "tcp://*:7450", "tcp://[::1]:7450",
    "tcp://lo:7450", "tcp://localhost:7450", "ipc:///tmp/tradeloom.sock", "inproc://x"])
def test_bindable_endpoints_are_accepted(endpoint: str) -> None:
    transport = Config.from_dict({"transport": {"events": endpoint}}).transport
    assert transport is not None and transport.events == endpoint


#: Digits Python's `\d` and `int()` take that are not ASCII ("١٢" reads as 12, "²" raises).
ODD_DIGITS = ["\u0661\u0662", "\u00b2", "\uff18\uff10"]


@pytest.mark.parametrize("digits", ODD_DIGITS)
@pytest.mark.parametrize(("table", "key", "value"), [
    ("metrics", "listen", "127.0.0.1:{}"),
    ("web", "listen", "127.0.0.1:{}"),
    ("transport", "events", "tcp://127.0.0.1:{}"),
])
def test_a_port_in_other_scripts_digits_is_refused_naming_the_key(
        table: str, key: str, value: str, digits: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{table}\.{key} ") as exc:
        Config.from_dict({table: {key: value.format(digits)}})
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("listen", ["127.0.0.1:70000", "a\x00b:9464", "a\tb:9464", "9464"])
def test_a_bad_metrics_listen_is_refused_when_the_config_loads(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"^metrics\.listen must be \"host:port\""):
        Config.from_dict({"metrics": {"listen": listen}})


def test_a_daily_reset_in_other_scripts_digits_is_refused() -> None:
    limit = {"name": "loss", "kind": "daily_loss", "threshold": 1.0,
             "reset_at": "1\u0667:00"}
    with pytest.raises(ConfigError, match="reset_at"):
        Config.from_dict({"emergency": {"limits": [limit]}})


def test_an_integer_is_accepted_where_a_number_is_expected() -> None:
    config = Config.from_dict({"resilience": {"timeout_s": 5}, "emergency": {"warn_at": 1}})
    assert config.resilience.timeout_s == 5.0 and isinstance(config.resilience.timeout_s, float)
    assert config.emergency.warn_at == 1.0


# -- loading TOML --------------------------------------------------------------------------

def test_load_the_contract_example_from_a_toml_file(tmp_path: Path,
                                                    module_dir: tuple[Path, str]) -> None:
    directory, module = module_dir
    path = directory / "daemon.toml"
    path.write_text(textwrap.dedent(f"""
        [daemon]
        data_dir = "{tmp_path / 'data'}"
        max_concurrent_executions = 50
        max_queued_executions = 7

        [transport]
        events = "tcp://127.0.0.1:17450"
        control = "tcp://127.0.0.1:17451"
        heartbeat_s = 0.5

        [resilience]
        timeout_s = 3.5
        max_restarts = 4
        restart_within_s = 30.0
        backoff_min_s = 0.5
        backoff_max_s = 8.0
        breaker_failure_threshold = 3
        breaker_reset_timeout_s = 15.0

        [emergency]
        warn_at = 0.9

        [[emergency.limits]]
        name = "daily_loss"
        kind = "daily_loss"
        threshold = 1000.0
        auto_halt = true

        [[emergency.limits]]
        name = "exposure"
        kind = "position_size"
        threshold = 2.5
        auto_halt = false

        [[workflows]]
        ref = "{module}:workflow"
        every_s = 1.0
        bot_id = "bot_001"
        strategy_id = "arbitrage_v1"
    """))
    config = Config.load(path)
    assert config.daemon.data_dir == str(tmp_path / "data")
    assert (config.daemon.max_concurrent_executions, config.daemon.max_queued_executions) == (
        50, 7)
    assert config.transport is not None
    assert (config.transport.events, config.transport.control, config.transport.heartbeat_s) == (
        "tcp://127.0.0.1:17450", "tcp://127.0.0.1:17451", 0.5)
    r = config.resilience
    assert (r.timeout_s, r.max_restarts, r.restart_within_s, r.backoff_min_s, r.backoff_max_s,
            r.breaker_failure_threshold, r.breaker_reset_timeout_s) == (
        3.5, 4, 30.0, 0.5, 8.0, 3, 15.0)
    assert config.emergency.warn_at == 0.9
    limits = config.emergency.limits
    assert [(lim.name, lim.kind, lim.threshold, lim.auto_halt) for lim in limits] == [
        ("daily_loss", "daily_loss", 1000.0, True), ("exposure", "position_size", 2.5, False)]
    (entry,) = config.workflows
    assert (entry.ref, entry.every_s, entry.bot_id, entry.strategy_id) == (
        f"{module}:workflow", 1.0, "bot_001", "arbitrage_v1")
    assert isinstance(entry.workflow, Workflow) and entry.workflow.id == "cfg_wf"


def test_workflow_refs_resolve_against_the_config_files_directory(
        tmp_path: Path, module_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, module = module_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the module is not in the working directory
    path = directory / "wf.toml"
    path.write_text(f'[[workflows]]\nref = "{module}:workflow"\n')
    (entry,) = Config.load(path).workflows
    assert entry.workflow.id == "cfg_wf"


def test_workflow_refs_resolve_against_the_working_directory(
        module_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, module = module_dir
    monkeypatch.chdir(directory)
    config = Config.from_dict({"workflows": [{"ref": f"{module}:workflow"}]})
    assert config.workflows[0].workflow.id == "cfg_wf"


def test_limit_kinds_of_the_contract_are_accepted() -> None:
    kinds = ["daily_loss", "position_size", "drawdown_pct", "action_rate", "custom"]
    config = Config.from_dict({"emergency": {"limits": [
        {"name": f"l_{kind}", "kind": kind, "threshold": 10.0} for kind in kinds]}})
    assert [lim.kind for lim in config.emergency.limits] == kinds


def test_config_workflow_entries_are_registered_with_their_bot_and_strategy(
        module_dir: tuple[Path, str]) -> None:
    directory, module = module_dir
    path = directory / "engine.toml"
    path.write_text(f'[[workflows]]\nref = "{module}:workflow"\nbot_id = "bot_7"\n'
                    f'strategy_id = "strat_7"\n')
    engine = Engine.start(Config.load(path))
    try:
        rec = Recorder()
        rec.follow(engine)
        assert engine.workflows == ["cfg_wf"]
        handle = engine.submit("cfg_wf")
        assert handle.result(timeout=5).status == "completed"
        evs = rec.for_execution(handle.execution_id)
        assert evs and {(e["bot_id"], e["strategy_id"]) for e in evs} == {("bot_7", "strat_7")}
    finally:
        engine.stop()


# -- presets -------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["development", "staging", "production"])
def test_presets_set_the_resilience_defaults(preset: str) -> None:
    config = Config.from_dict({"resilience": {"preset": preset}})
    r = config.resilience
    expected = {
        "development": (2, 60.0, 5, 60.0),
        "staging": (3, 120.0, 10, 120.0),
        "production": (3, 120.0, 10, 120.0),
    }[preset]
    assert (r.max_restarts, r.backoff_max_s, r.breaker_failure_threshold,
            r.breaker_reset_timeout_s) == expected
    assert r.timeout_s == 30.0


def test_explicit_keys_win_over_the_preset() -> None:
    r = Config.from_dict({"resilience": {"preset": "production", "max_restarts": 1,
                                         "timeout_s": 2.0}}).resilience
    assert (r.max_restarts, r.timeout_s, r.breaker_failure_threshold) == (1, 2.0, 10)


def test_unknown_preset_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="preset"):
        Config.from_dict({"resilience": {"preset": "yolo"}})


# -- bad configs ---------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "key"), [
    ({"bogus": 1}, "bogus"),
    ({"daemon": {"max_concurent_executions": 5}}, "max_concurent_executions"),
    ({"transport": {"event": "tcp://127.0.0.1:1"}}, "event"),
    ({"resilience": {"timeout": 1.0}}, "timeout"),
    ({"emergency": {"warn": 0.5}}, "warn"),
    ({"emergency": {"limits": [{"name": "x", "kind": "custom", "threshold": 1.0,
                                "halt": True}]}}, "halt"),
    ({"workflows": [{"ref": "m:w", "every": 1.0}]}, "every"),
])
def test_unknown_key_is_refused_naming_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(raw)
    assert key in str(exc.value)


@pytest.mark.parametrize(("raw", "key"), [
    ({"daemon": {"max_concurrent_executions": "many"}}, "max_concurrent_executions"),
    ({"daemon": {"max_concurrent_executions": 1.5}}, "max_concurrent_executions"),
    ({"daemon": {"max_queued_executions": True}}, "max_queued_executions"),
    ({"daemon": {"data_dir": 7}}, "data_dir"),
    ({"transport": {"heartbeat_s": "1s"}}, "heartbeat_s"),
    ({"resilience": {"timeout_s": "30"}}, "timeout_s"),
    ({"resilience": {"max_restarts": False}}, "max_restarts"),
    ({"emergency": {"warn_at": [0.8]}}, "warn_at"),
    ({"emergency": {"limits": [{"name": "x", "kind": "loss", "threshold": 1.0}]}}, "kind"),
    ({"emergency": {"limits": [{"name": "x", "kind": "custom", "threshold": "1"}]}},
     "threshold"),
    ({"emergency": {"limits": [{"name": "x", "kind": "custom", "threshold": 1.0,
                                "auto_halt": "yes"}]}}, "auto_halt"),
    ({"workflows": [{"ref": 5}]}, "ref"),
    ({"daemon": "fast"}, "daemon"),
    ({"workflows": {"ref": "m:w"}}, "workflows"),
])
def test_wrong_type_is_refused_naming_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(raw)
    assert key in str(exc.value)


@pytest.mark.parametrize(("raw", "key"), [
    ({"emergency": {"limits": [{"kind": "custom", "threshold": 1.0}]}},
     "'emergency.limits[0].name'"),
    ({"emergency": {"limits": [{"name": "x", "kind": "custom"}]}},
     "'emergency.limits[0].threshold'"),
    ({"workflows": [{"bot_id": "b"}]}, "'workflows[0].ref'"),
])
def test_missing_required_key_is_refused_naming_it(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(raw)
    assert key in str(exc.value)


@pytest.mark.parametrize(("raw", "key"), [
    ({"daemon": {"max_concurrent_executions": 0}}, "max_concurrent_executions"),
    # The daemon put its journal in the working directory; in-process it meant none.
    ({"daemon": {"data_dir": ""}}, "daemon.data_dir"),
    ({"daemon": {"data_dir": "  "}}, "daemon.data_dir must not be blank"),
    ({"transport": {"curve_secret_key_file": ""}}, "transport.curve_secret_key_file must not"),
    ({"transport": {"events": "tcp://127.0.0.1:7451"}},
     "transport.events and transport.control must be different"),
    ({"client": {"curve_server_public_key_file": " "}},
     "client.curve_server_public_key_file must not"),
    ({"emergency": {"limits": [{"name": " ", "kind": "custom", "threshold": 1.0}]}},
     "emergency.limits[0].name must not be blank"),
    ({"daemon": {"data_dir": "~/tradeloom"}}, "'~', which is not expanded"),
    # An idle daemon spun sending heartbeats; or a dead one looked quiet for hours.
    ({"transport": {"heartbeat_s": 1e-300}}, "transport.heartbeat_s must be between 0.01"),
    ({"transport": {"heartbeat_s": 1e300}}, "transport.heartbeat_s must be between 0.01"),
    # zmq's bind said "Invalid argument", or "garbage ... is not a loopback address".
    ({"transport": {"events": "garbage"}}, "transport.events"),
    ({"transport": {"control": "tcp://127.0.0.1:port"}}, "transport.control"),
    ({"transport": {"control": "tcp://127.0.0.1"}}, "transport.control"),
    ({"resilience": {"timeout_s": 0}}, "timeout_s"),
    ({"resilience": {"backoff_min_s": 5.0, "backoff_max_s": 1.0}}, "backoff_min_s"),
    ({"emergency": {"warn_at": 1.5}}, "warn_at"),
    ({"emergency": {"limits": [{"name": "x", "kind": "custom", "threshold": -1.0}]}},
     "threshold"),
    ({"emergency": {"limits": [{"name": "", "kind": "custom", "threshold": 1.0}]}},
     "emergency.limits[0].name"),
    # A drawdown is at most 100 %: such a limit was accepted and could never trip.
    ({"emergency": {"limits": [{"name": "x", "kind": "drawdown_pct", "threshold": 100.5}]}},
     "emergency.limits[0].threshold"),
])
def test_out_of_range_value_is_refused_naming_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(raw)
    assert key in str(exc.value)


#: Every count and size key with its range (README, docs/operations.md).
COUNT_RANGES = [
    ("daemon", "max_concurrent_executions", 1, 1_000_000),
    ("daemon", "max_queued_executions", 0, 10_000_000),
    ("daemon", "supervisors", 1, 1024),
    ("daemon", "node_actors", 1, 10_000),
    ("daemon", "max_stuck_runs_per_node", 1, 10_000),
    ("resilience", "max_restarts", 0, 1000),
    ("resilience", "breaker_failure_threshold", 1, 1_000_000),
    ("journal", "keep_events", 1, 10 ** 12),
]


@pytest.mark.parametrize(("table", "key", "low", "high"), COUNT_RANGES)
@pytest.mark.parametrize("excess", [1, 10 ** 19 - 1, 10 ** 5000], ids=["+1", "1e19", "huge"])
def test_an_absurd_count_is_refused_naming_the_key_and_its_range(
        table: str, key: str, low: int, high: int, excess: int) -> None:
    """`supervisors = 10**19` was accepted (and would have started a thread each)."""
    for bad in (high + excess, low - excess):
        with pytest.raises(ConfigError) as caught:
            Config.from_dict({table: {key: bad}})
        assert str(caught.value) == f"{table}.{key} must be an integer between {low} and {high}"
    assert getattr(getattr(Config.from_dict({table: {key: high}}), table), key) == high


def test_duplicate_limit_names_are_refused() -> None:
    limit = {"name": "same", "kind": "custom", "threshold": 1.0}
    with pytest.raises(ConfigError, match="same"):
        Config.from_dict({"emergency": {"limits": [limit, dict(limit)]}})


@pytest.mark.parametrize("ref", [
    "no_such_module_tradeloom_xyz:workflow",
    "{module}:missing",
    "{module}:not_a_workflow",
    "{module}",
    ":workflow",
    "{module}:",
])
def test_unimportable_workflow_ref_is_refused_naming_the_key(
        ref: str, module_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, module = module_dir
    monkeypatch.chdir(directory)
    ok = {"ref": f"{module}:workflow"}
    bad = {"ref": ref.format(module=module)}
    with pytest.raises(ConfigError) as exc:
        Config.from_dict({"workflows": [ok, bad]})
    message = str(exc.value)
    assert "workflows[1].ref" in message
    assert "\n" not in message


@pytest.mark.parametrize("raises, ends", [
    ("RuntimeError('cannot start')", "cannot start"),
    ("RuntimeError('first\\n  second')", "first second"),  # one line, whatever it says
], ids=["one_line", "multi_line"])
def test_a_module_that_fails_on_import_is_a_one_line_config_error(
        module_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, raises: str,
        ends: str) -> None:
    directory, _ = module_dir
    name = f"broken_{uuid.uuid4().hex[:12]}"
    (directory / f"{name}.py").write_text(f"raise {raises}\n")
    monkeypatch.chdir(directory)
    try:
        with pytest.raises(ConfigError) as exc:
            Config.from_dict({"workflows": [{"ref": f"{name}:workflow"}]})
    finally:
        sys.modules.pop(name, None)
    message = str(exc.value)
    assert "workflows[0].ref" in message and message.endswith(ends) and "\n" not in message


def test_two_workflows_under_one_id_are_refused_naming_the_key(
        module_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, module = module_dir
    (directory / f"{module}.py").write_text(WORKFLOW_MODULE + textwrap.dedent("""
        other = Workflow("cfg_wf", nodes=[Node("price", price, category="provider")])
    """))
    monkeypatch.chdir(directory)
    same_twice = Config.from_dict({"workflows": [{"ref": f"{module}:workflow"},
                                                 {"ref": f"{module}:workflow"}]})
    assert len(same_twice.workflows) == 2  # one Workflow listed twice is fine
    with pytest.raises(ConfigError, match=r"^workflows\[1\]\.ref: .*'cfg_wf'.*workflows\[0\]"):
        Config.from_dict({"workflows": [{"ref": f"{module}:workflow"},
                                        {"ref": f"{module}:other"}]})
    with pytest.raises(ConfigError, match=r"^emergency\.on_halt\[0\]\.ref: .*'cfg_wf'"):
        Config.from_dict({"workflows": [{"ref": f"{module}:workflow"}],
                          "emergency": {"on_halt": [{"ref": f"{module}:other"}]}})


def test_load_of_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[daemon\nmax_concurrent_executions = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        Config.load(path)


def test_load_of_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[daemon]\ndata_dir = \"caf\xe9\"\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8"):
        Config.load(path)


def test_load_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        Config.load(tmp_path / "nowhere.toml")


def test_unknown_key_in_a_toml_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[resilience]\ntimeout_s = 3.0\nbackof_min_s = 1.0\n")
    with pytest.raises(ConfigError, match="backof_min_s"):
        Config.load(path)


def test_config_error_is_a_tradeloom_error() -> None:
    assert issubclass(ConfigError, TradeloomError)


def test_an_empty_config_path_is_named_as_such() -> None:
    with pytest.raises(ConfigError, match=r"^--config '': no file named$"):
        Config.load("")


@pytest.mark.parametrize("port", ["*", "0"])
def test_two_os_picked_ports_may_be_written_the_same(port: str) -> None:
    endpoint = f"tcp://127.0.0.1:{port}"
    transport = Config.from_dict({"transport": {"events": endpoint,
                                                "control": endpoint}}).transport
    assert transport is not None and transport.events == transport.control == endpoint
