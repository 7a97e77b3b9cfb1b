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


def test_a_cached_provider_is_keyed_by_the_outputs_it_depends_on(
        make_engine: EngineFactory) -> None:
    """The same inputs, another symbol picked upstream: the book is not the other's."""
    engine = make_engine()
    picks = iter(["BTC", "ETH", "BTC", "ETH"])
    calls: list[str] = []

    def book(ctx: NodeContext) -> dict[str, str]:
        calls.append(ctx.upstream["pick"]["symbol"])
        return {"book_of": ctx.upstream["pick"]["symbol"]}

    wf = Workflow("picked_book", nodes=[
        Node("pick", lambda ctx: {"symbol": next(picks)}, category="provider"),
        Node("book", book, category="provider", depends_on=["pick"], cache_ttl_s=30.0),
    ])
    results = [engine.submit(wf, {"desk": "a"}).result(timeout=5).results for _ in range(4)]
    assert [r["book"]["book_of"] for r in results] == ["BTC", "ETH", "BTC", "ETH"]
    assert [r["pick"]["symbol"] for r in results] == ["BTC", "ETH", "BTC", "ETH"]
    assert calls == ["BTC", "ETH"]  # the last two were hits, each of its own symbol


def test_a_workflow_rebuilt_with_another_function_does_not_share_its_cache(
        make_engine: EngineFactory) -> None:
    """A workflow rebuilt per submit under one id (allowed for a workflow submitted as an
    object): `functools.partial`s for two venues are two functions, one is reused."""
    import functools

    engine = make_engine()
    calls: list[str] = []

    def price(ctx: NodeContext, venue: str) -> dict[str, str]:
        calls.append(venue)
        return {"venue": venue}

    def quotes(fn: object) -> Workflow:
        return Workflow("quotes", nodes=[
            Node("price", fn, category="provider", cache_ttl_s=30.0)])  # type: ignore[arg-type]

    binance, coinbase = (functools.partial(price, venue=v) for v in ("binance", "coinbase"))
    got = [engine.submit(quotes(fn)).result(timeout=5).results["price"]["venue"]
           for fn in (binance, coinbase, binance, coinbase)]
    assert got == ["binance", "coinbase", "binance", "coinbase"]
    assert calls == ["binance", "coinbase"]  # the same function again is a hit
