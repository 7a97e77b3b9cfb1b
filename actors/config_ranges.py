"""The ranges a config's values must be in (`Config` checks them on every build, so a
config made by hand or with `dataclasses.replace` is held to them too): every error names
its key in one line.
"""

from __future__ import annotations

import math
import re

from actors.config import Config
from actors.errors import ConfigError
from actors.journal_caps import MAX_EVENT_BYTES_RANGE
from actors.listen_address import parse_listen

#: The shortest `stale_after_s`: a feed is judged stale at most this often (a tinier one
#: had the watchdog wake, and re-report a dead feed, thousands of times a second).
MIN_STALE_AFTER_S = 0.01
#: The shortest interval trigger. A tinier `every_s` (1e-9) had the trigger thread spin
#: through a billion skipped turns a second, and a subnormal one (5e-324) overflowed its
#: turn count and killed the thread that serves every trigger.
MIN_EVERY_S = 0.01
#: `[[workflows]] bot_id` / `strategy_id`: at most this long, as the control socket's ids.
MAX_ID_CHARS = 256
#: `[transport] heartbeat_s` bounds: below, an idle daemon spins sending heartbeats; above,
#: a subscriber could not tell a dead daemon from a quiet one for hours.
HEARTBEAT_S_RANGE = (0.01, 3600.0)


#: The count and size keys' ranges (README, docs/operations.md). The upper bounds are far
#: past any real use: beyond them a value is a typo, and would fail far from the config
#: (a thread per supervisor and node actor; a SQLite INTEGER holds keep_events).
COUNT_RANGES: dict[str, tuple[int, int]] = {
    "daemon.max_concurrent_executions": (1, 1_000_000),
    "daemon.max_queued_executions": (0, 10_000_000),
    "daemon.supervisors": (1, 1024),
    "daemon.node_actors": (1, 10_000),
    "daemon.max_stuck_runs_per_node": (1, 10_000),
    "resilience.max_restarts": (0, 1000),
    "resilience.breaker_failure_threshold": (1, 1_000_000),
    "journal.keep_events": (1, 10 ** 12),
    "journal.max_event_bytes": MAX_EVENT_BYTES_RANGE,
}


def check_ranges(config: Config) -> None:
    """A ConfigError naming the key of a value out of its range (`Config` calls it)."""
    d, r, e, j = config.daemon, config.resilience, config.emergency, config.journal
    counts = {"daemon.max_concurrent_executions": d.max_concurrent_executions,
              "daemon.max_queued_executions": d.max_queued_executions,
              "daemon.supervisors": d.supervisors, "daemon.node_actors": d.node_actors,
              "daemon.max_stuck_runs_per_node": d.max_stuck_runs_per_node,
              "resilience.max_restarts": r.max_restarts,
              "resilience.breaker_failure_threshold": r.breaker_failure_threshold,
              "journal.keep_events": j.keep_events,
              "journal.max_event_bytes": j.max_event_bytes}
    for key, (low, high) in COUNT_RANGES.items():
        value = counts[key]
        if value is not None and not (type(value) is int and low <= value <= high):
            # The value is not printed: an int past 4300 digits has no str().
            raise ConfigError(f"{key} must be an integer between {low} and {high}")
    checks = [
        # "" would be the working directory for the daemon, and no journal in-process.
        (d.data_dir != "", "daemon.data_dir must not be empty (\".\" for the working "
                           "directory)"),
        ((d.data_dir or "x").strip() != "", "daemon.data_dir must not be blank"),
        # No shell reads the config: "~/x" made a directory named "~" in the working one.
        (not (d.data_dir or "").startswith("~"),
         "daemon.data_dir starts with '~', which is not expanded: give the full path"),
        ("\x00" not in (d.data_dir or ""), "daemon.data_dir must not hold a NUL character"),
        (d.shutdown_grace_s >= 0, "daemon.shutdown_grace_s must be >= 0"),
        # Bounded above too: past a C int, gc.set_threshold / sched_setaffinity raise an
        # OverflowError at start instead of this one line.
        (len(d.gc_threshold) <= 3 and all(0 <= g < 2 ** 31 for g in d.gc_threshold),
         "daemon.gc_threshold must be up to 3 integers >= 0 and < 2**31"),
        (all(0 <= c < 2 ** 31 for c in d.cpu_affinity),
         "daemon.cpu_affinity must be CPU ids >= 0 and < 2**31"),
        (r.timeout_s > 0, "resilience.timeout_s must be > 0"),
        (r.restart_within_s > 0, "resilience.restart_within_s must be > 0"),
        (0 <= r.backoff_min_s <= r.backoff_max_s,
         "resilience.backoff_min_s must be >= 0 and <= backoff_max_s"),
        (r.breaker_reset_timeout_s >= 0, "resilience.breaker_reset_timeout_s must be >= 0"),
        (0 < e.warn_at <= 1, "emergency.warn_at must be in (0, 1]"),
        (j.keep_days is None or (0 < j.keep_days < math.inf),
         "journal.keep_days must be a finite number > 0"),
    ]
    if config.transport is not None:
        # Both bound by the daemon: the second failed "Address already in use", which sent
        # one looking for another process.
        events, control = config.transport.events, config.transport.control
        checks.append((events != control or events.endswith((":*", ":0")),  # (OS-picked)
                       "transport.events and transport.control must be different addresses"))
        beat_low, beat_high = HEARTBEAT_S_RANGE
        checks.append((beat_low <= config.transport.heartbeat_s <= beat_high,
                       f"transport.heartbeat_s must be between {beat_low:g} and {beat_high:g}"))
        for key in ("events", "control"):
            endpoint = getattr(config.transport, key)
            checks.append((BIND_ENDPOINT.fullmatch(endpoint) is not None,
                           f"transport.{key} must be an endpoint such as "
                           f"tcp://127.0.0.1:7450, not {endpoint!r}"))
    for entry_index, entry in enumerate(config.workflows):
        if entry.every_s is not None:
            checks.append((entry.every_s >= MIN_EVERY_S,
                           f"workflows[{entry_index}].every_s must be >= {MIN_EVERY_S:g}"))
        for key in ("bot_id", "strategy_id"):  # as a submit over the control socket takes it
            value = getattr(entry, key)
            checks.append((value is None or 0 < len(value) <= MAX_ID_CHARS,
                           f"workflows[{entry_index}].{key} must be 1 to {MAX_ID_CHARS} "
                           "characters"))
    # "" for a key file turned CURVE off without a word: a typo's sign (omit the key).
    for section, keys in (("transport", ("curve_secret_key_file", "curve_authorized_keys_dir")),
                          ("client", ("curve_secret_key_file",
                                      "curve_server_public_key_file"))):
        table = getattr(config, section)
        for key in keys:
            value = getattr(table, key) if table is not None else None
            checks.append((value is None or value.strip() != "",
                           f"{section}.{key} must not be empty (leave it out for none)"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if config.metrics.listen is not None:  # at load, not when the daemon binds it
        parse_listen(config.metrics.listen, "metrics.listen")


def _endpoint(port: str) -> re.Pattern[str]:
    """tcp://[source;]host:port (`port` as given), ipc://path, or another transport
    ZeroMQ knows as `scheme://address`: anything else fails in zmq with "Invalid argument",
    not naming the key or flag it came from."""
    return re.compile(rf"tcp://(?:[^;\s]*;)?(?:[^\s:;\[\]]+|\[[0-9A-Fa-f:.]+\]):{port}"
                      r"|(?:ipc|inproc|ws|wss|pgm|epgm|tipc|vmci)://\S+")


#: 0 to 65535: libzmq takes a larger port modulo 65536 (7450 typed as 74500 bound 8964).
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
#: What the daemon can bind (a port may be `*`: any free one) and a client connect to.
BIND_ENDPOINT = _endpoint(rf"(?:{_PORT}|\*)")
CONNECT_ENDPOINT = _endpoint(_PORT)
