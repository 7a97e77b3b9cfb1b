"""tradeloom's benchmarks: each script runs on its own (`python bench/core.py --help`), and
`python -m bench` (`make bench`) runs them all and writes docs/benchmarks.md.

The registry: a bench takes part in the report by defining, at module level,

    def run_for_report(quick: bool) -> dict: ...

returning a result as bench/results.py describes (figures with one value per repeat,
ratios against baselines measured in the same run, targets). `BENCHES` fixes the order of
the known ones; any other module in this directory whose source defines
`run_for_report` is picked up after them (so a new bench joins by defining it). A module
in `BENCHES` that is missing (or whose adapter imports a bench module that is missing) is
reported as "not present", with the targets it should measure (`PENDING_TARGETS`).

This file stays free of imports: every bench script imports the package.
"""

#: (name in the report, module, section title), in report order.
BENCHES: tuple[tuple[str, str, str], ...] = (
    ("core", "bench.core_report", "Core engine"),
    ("resilience", "bench.resilience", "Resilience overhead"),
    ("halt", "bench.halt", "Halt"),
    ("journal", "bench.journal", "Journal"),
    ("stream", "bench.stream", "Event stream"),
    ("daemon", "bench.daemon", "The daemon"),
    ("webhooks", "bench.webhooks_report", "Webhooks"),
    ("web", "bench.web", "WebSocket gateway"),
)

#: Bench modules an adapter in BENCHES runs (bench/webhooks_report.py runs bench/webhooks.py):
#: discovery does not add them a second time.
ADAPTED = frozenset({"bench.webhooks"})

#: Each bench's targets as (issue, target): shown with the bench's status ("not present",
#: "failed", "not run") when it gave no result, so no target drops out of the table.
PENDING_TARGETS: dict[str, tuple[tuple[int, str], ...]] = {
    "core": ((2, "p50 <= 0.2 ms at c=1 (journal off)"),
             (8, ">= 10,000 wf/s at c=50 and at c=1000, unpinned"),
             (9, "journal normal >= 0.75x journal off at c=50 and c=1000; p50 within "
                 "+0.1 ms")),
    "resilience": ((3, "resilience overhead <= 1.15x at c=1 and c=50"),),
    "halt": ((4, "halt p99 <= 50 ms, 1,000 in flight (cooperative, stuck nodes)"),
             (7, "halt p99 <= 50 ms with on-halt hooks configured"),
             (8, "halt p99 <= 50 ms with a subscriber sleeping 100 ms per event"),
             (9, "halt p99 <= 50 ms with the journal on")),
    "stream": ((10, "publisher >= 0.7x a bare pyzmq + msgpack pair, zero loss"),
               (10, "daemon: >= 50,000 events/s lossless; p99 <= 2 ms at 10,000 events/s")),
    "daemon": ((11, "submit -> terminal event p50 <= 1 ms at c=1; >= 0.5x in-process at "
                    "c=50; metrics on <= 5 % cost"),
               (10, "halt within 50 ms beside a 10,000-event replay")),
    "webhooks": ((12, "a slow endpoint (2 s per request) attached: throughput within 10 % "
                      "of without"),),
    "web": ((13, "events/s to a WebSocket client with zero loss, beside the ZeroMQ "
                 "subscriber figure"),
            (13, "a slow WebSocket client: in-process throughput within 10 %")),
    "soak": ((11, "soak: 10 minutes at 500 workflows/s, events lost 0, RSS flat after "
                  "warm-up, p99 drift"),),
}
