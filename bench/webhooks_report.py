"""bench/webhooks.py (issue 12) for the report: a slow endpoint (2 s per request) attached
to an engine with its journal on vs none, interleaved rounds, the ratio with/without.

It uses bench/webhooks.py's own `run_for_report` when that module defines one; otherwise
its `slow_endpoint` and `one_round`, as its CLI does. Without bench/webhooks.py the report
says "not present".
"""

from __future__ import annotations

import importlib
import statistics
from typing import Any

from bench.results import Result, figure, paired, result, target

TARGET_RATIO = 0.90
ENDPOINT_S = 2.0
CONCURRENCY = 50


def run_for_report(quick: bool) -> Result:
    webhooks = importlib.import_module("bench.webhooks")  # ModuleNotFoundError: not present
    own = getattr(webhooks, "run_for_report", None)
    if own is not None:
        delegated: Result = own(quick)
        return delegated
    rounds, total = (1, 200) if quick else (3, 3000)
    server = webhooks.slow_endpoint(ENDPOINT_S)
    port = server.server_address[1]
    rates: dict[bool, list[float]] = {False: [], True: []}
    behind: list[float] = []
    try:
        for i in range(rounds):
            for with_webhook in ((False, True) if i % 2 == 0 else (True, False)):
                one: dict[str, Any] = webhooks.one_round(with_webhook, port, CONCURRENCY, total)
                rates[with_webhook].append(one["wf_s"])
                if with_webhook:
                    behind.append(one.get("behind", 0.0))
    finally:
        stop = getattr(server, "stop_event", None)
        if stop is not None:
            stop.set()  # releases requests still sleeping in the slow endpoint
        server.shutdown()
        server.server_close()
    figures = [figure("without webhooks, journal on: wf/s", "wf/s", rates[False]),
               figure(f"with a {ENDPOINT_S:g} s endpoint attached: wf/s", "wf/s", rates[True]),
               figure("with / without wf/s", "x", paired(rates[True], rates[False])),
               figure("deliverer behind at the end of a round", "events", behind)]
    targets = [target(12, f"a slow endpoint ({ENDPOINT_S:g} s per request) attached: "
                          f"throughput within 10 % of without (>= {TARGET_RATIO}x)",
                      "with / without wf/s", ">=", TARGET_RATIO)]
    notes = [f"{total:,} workflows per round at c={CONCURRENCY}, rounds interleaved; median "
             f"without {statistics.median(rates[False]):,.0f} wf/s"]
    return result("webhooks", "Webhooks", "python bench/webhooks.py", rounds, figures,
                  targets, notes)
