"""tradeloom's benchmarks: each script runs on its own (`python bench/core.py --help`), and
`python -m bench` (`make bench`) runs them all and writes docs/benchmarks.md.

The registry: a bench takes part in the report by defining, at module level,

    def run_for_report(quick: bool) -> dict: ...

returning a result as bench/results.py describes (figures with one value per repeat,
ratios against baselines measured in the same run, targets). `BENCHES` fixes the order of
the known ones; any other module in this directory whose source defines
`run_for_report` is picked up after them (so a new bench joins by defining it). A module
in `BENCHES` that is missing is reported as "not present", with the targets it should
measure (`PENDING_TARGETS`) marked "not measured".

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
    ("webhooks", "bench.webhooks", "Webhooks"),
    ("web", "bench.web", "WebSocket gateway"),
)

#: Targets of benches that may be missing: (issue, target), shown as "not measured".
PENDING_TARGETS: dict[str, tuple[tuple[int, str], ...]] = {
    "webhooks": ((12, "a slow endpoint (2 s per request) attached: throughput within 10 % "
                      "of without"),),
    "web": ((13, "events/s to a WebSocket client with zero loss, beside the ZeroMQ "
                 "subscriber figure"),
            (13, "a slow WebSocket client: in-process throughput within 10 %")),
    "soak": ((11, "soak: 10 minutes at 500 workflows/s, events lost 0, RSS flat after "
                  "warm-up, p99 drift"),),
}
