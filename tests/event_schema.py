"""The event schema the tests check against, written once: docs/protocol.md's event
table, every type and the fields it lists beyond the common ones."""

from __future__ import annotations

#: docs/protocol.md's event table: every type and the fields it lists (beyond the common ones).
SCHEMA_FIELDS: dict[str, set[str]] = {
    "execution_started": {"node_count", "inputs"},
    "node_started": {"node_id", "node_name", "node_category", "attempt"},
    "node_completed": {"node_id", "duration_ms", "status", "outputs", "attempt"},
    "node_failed": {"node_id", "duration_ms", "error", "error_type", "attempt", "final"},
    "node_retrying": {"node_id", "attempt", "delay_ms", "error_type"},
    "node_skipped": {"node_id", "reason"},
    "progress": {"nodes_completed", "nodes_total", "nodes_in_progress", "eta_ms"},
    "execution_completed": {"duration_ms", "status", "results", "error_type"},
    "execution_failed": {"duration_ms", "status", "error", "error_type"},
    "execution_halted": {"duration_ms", "status", "error", "error_type"},
    "execution_cancelled": {"duration_ms", "status", "error", "error_type"},
    "circuit_opened": {"breaker", "failures"},
    "circuit_half_open": {"breaker", "failures"},
    "circuit_closed": {"breaker", "failures"},
    "emergency_state_changed": {"state", "previous_state", "reason", "source", "origin"},
    "risk_limit_warning": {"limit", "value", "threshold", "utilization"},
    "risk_limit_exceeded": {"limit", "value", "threshold", "utilization"},
    "daemon_started": {"version", "pid"},
    "daemon_stopping": {"version", "pid"},
    "heartbeat": {"last_seq", "epoch", "timestamp", "state"},
}
