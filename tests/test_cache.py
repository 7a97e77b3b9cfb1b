"""`Node(cache_ttl_s=...)`: a provider's output is reused across executions for that long."""

from actors import ManualClock, Node, NodeContext, Workflow
from tests.conftest import EngineFactory, Recorder


def test_a_cached_provider_runs_once_per_ttl_and_per_inputs(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine = make_engine(clock=clock)
    rec = Recorder()
    rec.follow(engine)
    calls: list[str] = []

    def price(ctx: NodeContext) -> float:
        calls.append(ctx.inputs["symbol"])
        return 100.0 + len(calls)

    wf = Workflow("cached_price", nodes=[
        Node("price", price, category="provider", cache_ttl_s=5.0),
        Node("use", lambda ctx: ctx.upstream["price"] * 2, depends_on=["price"]),
    ])
    first = engine.submit(wf, {"symbol": "BTC"}).result(timeout=5)
    again = engine.submit(wf, {"symbol": "BTC"}).result(timeout=5)
    other = engine.submit(wf, {"symbol": "ETH"}).result(timeout=5)
    assert calls == ["BTC", "ETH"]
    assert again.results == first.results == {"price": 101.0, "use": 202.0}
    assert other.results["price"] == 102.0
    cached = [e for e in rec.for_execution(again.execution_id) if e.get("cached")]
    assert [e["type"] for e in cached] == ["node_started", "node_completed"]

    clock.advance(5.0)  # the entry expires: the provider runs again
    later = engine.submit(wf, {"symbol": "BTC"}).result(timeout=5)
    assert calls == ["BTC", "ETH", "BTC"]
    assert later.results["price"] == 103.0
