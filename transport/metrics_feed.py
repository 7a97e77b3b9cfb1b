"""What the metrics endpoint accumulates itself, off the engine's hot path.

- `NodeDurations`: node run durations by category, read in batches from the committed log
  (a `LogReader`, drained every 10 ms by the metrics thread and at each scrape), so no
  engine thread does anything per event for it. `node_completed`/`node_failed` carry the
  duration and the node id; the category comes from the node's `node_started`, which the
  log always holds before them: a small map (workflow_id, node_id) -> category, bounded.
- `SubscriptionTotals`: the in-process subscriptions' gap and failure counters summed over
  live subscriptions and those already closed, so the exported counters never go down.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from actors.eventlog import LogReader, Subscription

#: Upper bounds, in milliseconds, of the node duration buckets: from an in-memory transform
#: (microseconds) to a slow exchange call (the node timeout defaults to 30 s).
NODE_BUCKETS_MS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
                   100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0)
#: Nodes whose category is remembered; past this, new ones are reported as "unknown".
MAX_NODES = 10_000
#: Events read per batch (about 0.5 ms of work: the GIL is offered to the engine's threads
#: between two), and batches per drain (the rest waits for the next drain).
_BATCH = 1024
_MAX_BATCHES = 256

_NODE_ENDS = {"node_completed": "completed", "node_failed": "failed"}


class NodeDurations:
    """Node run durations, by (category, status), as histogram buckets. Thread-safe."""

    def __init__(self, reader: LogReader, buckets_ms: Sequence[float] = NODE_BUCKETS_MS,
                 max_nodes: int = MAX_NODES) -> None:
        self._reader = reader
        self._next_seq = reader.next_seq
        self.buckets_ms = tuple(buckets_ms)
        self._max_nodes = max_nodes
        self._lock = threading.Lock()
        self._categories: dict[tuple[str, str], str] = {}
        #: (category, event type) -> [count per bucket, count past the last bound, sum ms]
        self._series: dict[tuple[str, str], list[float]] = {}

    @property
    def drained_seq(self) -> int:
        """The last seq read so far."""
        return self._next_seq - 1

    def drain(self) -> int:
        """Read what was committed since the last drain; returns how many events."""
        with self._lock:
            read = 0
            for _ in range(_MAX_BATCHES):
                events = self._reader.read(self._next_seq, _BATCH)
                if not events:
                    break
                self._observe(events)
                read += len(events)
                self._next_seq = events[-1]["seq"] + 1
                if len(events) < _BATCH:
                    break
                time.sleep(0)
            self._reader.next_seq = self._next_seq  # the log may let go of what we read
            return read

    def _observe(self, events: Iterable[dict[str, Any]]) -> None:
        # Per event: one type check; per node end: two lookups and a bisect (~0.5 us).
        categories, series, bounds = self._categories, self._series, self.buckets_ms
        for event in events:
            kind = event["type"]
            if kind == "node_started":
                key = (event["workflow_id"], event["node_id"])
                category = event["node_category"]
                if categories.get(key) != category and (
                        len(categories) < self._max_nodes or key in categories):
                    categories[key] = category
            elif kind == "node_completed" or kind == "node_failed":
                if "cached" in event:
                    continue  # a cache hit ran nothing: its 0 ms would only skew the buckets
                series_key = (categories.get((event["workflow_id"], event["node_id"]),
                                             "unknown"), kind)
                counts = series.get(series_key)
                if counts is None:
                    counts = series[series_key] = [0.0] * (len(bounds) + 2)
                duration_ms = event["duration_ms"]
                counts[bisect_left(bounds, duration_ms)] += 1
                counts[-1] += duration_ms

    def snapshot(self) -> dict[tuple[str, str], list[float]]:
        """(category, status) -> [count per bucket..., count past the last bound, sum ms];
        status is `completed` or `failed`."""
        with self._lock:
            return {(category, _NODE_ENDS[kind]): list(counts)
                    for (category, kind), counts in self._series.items()}

    def close(self) -> None:
        self._reader.close()


class SubscriptionTotals:
    """Gap and failure counts of in-process subscriptions, closed ones included: a closed
    subscription's last counts are kept once it leaves the live set (one that opens and
    closes between two looks, a second apart, is not seen)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, Subscription] = {}
        self._closed = {"gaps": 0, "missed": 0, "failures": 0}

    def observe(self, live: Sequence[Subscription]) -> dict[str, int]:
        """Totals over `live` and every subscription seen before: gaps, missed, failures."""
        with self._lock:
            current = {id(sub): sub for sub in live}
            for key, sub in list(self._seen.items()):
                if key not in current:  # closed: its counters no longer move
                    self._closed["gaps"] += sub.gaps
                    self._closed["missed"] += sub.missed
                    self._closed["failures"] += sub.failures
                    del self._seen[key]
            self._seen.update(current)
            totals = dict(self._closed)
            for sub in self._seen.values():
                totals["gaps"] += sub.gaps
                totals["missed"] += sub.missed
                totals["failures"] += sub.failures
            return totals
