"""The kill switch's state can be saved and put back (what the journal will persist)."""

from actors import Config, EmergencyState, Engine, Node, Workflow
from tests.conftest import EngineFactory

LIMITS = {"emergency": {"limits": [
    {"name": "daily_loss", "kind": "daily_loss", "threshold": 100.0},
    {"name": "dd", "kind": "drawdown_pct", "threshold": 50.0},
    {"name": "rate", "kind": "action_rate", "threshold": 10.0},
]}}


def test_a_restored_engine_comes_back_halted_with_its_limit_figures(
        make_engine: EngineFactory) -> None:
    first = make_engine(LIMITS)
    first.risk_update("dd", equity=1000.0)
    first.risk_update("dd", equity=900.0)
    first.risk_update("daily_loss", value=120.0)  # over: auto_halt
    assert first.state is EmergencyState.HALT
    saved = first.gate.snapshot()
    assert saved["state"] == "HALT" and saved["source"] == "risk_limit"
    first.stop()

    second = Engine.start(Config.from_dict(LIMITS))
    try:
        second.gate.restore(saved)
        assert second.state is EmergencyState.HALT
        limits = second.status()["limits"]
        assert limits["daily_loss"]["value"] == 120.0
        assert limits["dd"]["value"] == 10.0
        refused = second.submit(Workflow("w", nodes=[Node("n", lambda ctx: 1)])).result(5)
        assert refused.status == "refused"
        second.risk_update("dd", equity=800.0)  # the peak came back too: 20 % from 1,000
        assert second.status()["limits"]["dd"]["value"] == 20.0
    finally:
        second.stop()
