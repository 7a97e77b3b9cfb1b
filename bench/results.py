"""Structured benchmark results: what each bench's `run_for_report(quick)` returns and
`python -m bench` renders into docs/benchmarks.md.

A result is a plain dict (it crosses a process boundary as JSON):

    {"name": "core", "title": "Core engine", "command": "python bench/core.py",
     "repeats": 3,
     "figures": [{"name": "wf/s, c=50", "unit": "wf/s", "values": [9500.0, 9900.0, 9700.0]},
                 {"name": "engine / asyncio wf/s, c=50", "unit": "x", "values": [...]}],
     "targets": [{"issue": 8, "target": ">= 10,000 wf/s at c=50", "figure": "wf/s, c=50",
                  "op": ">=", "threshold": 10000, "stat": "median"}],
     "notes": ["..."]}

- a figure's `values` hold one number per repeat (or per sample, e.g. halt times per
  round); the report shows their median and min-max. Unit "x" marks a ratio against a
  baseline measured in the same run (paired per round where the bench interleaves).
- a target compares one statistic of one figure (`stat`: "median", "p99" by nearest rank,
  or "max") with `threshold` by `op` ("<=" or ">="): pass or short.
"""

from __future__ import annotations

import statistics
from typing import Any

Result = dict[str, Any]


def figure(name: str, unit: str, values: list[float] | float) -> dict[str, Any]:
    """One measured figure; a single number is one repeat."""
    listed = [float(values)] if isinstance(values, int | float) else [float(v) for v in values]
    return {"name": name, "unit": unit, "values": listed}


def target(issue: int, text: str, figure_name: str, op: str, threshold: float,
           stat: str = "median") -> dict[str, Any]:
    if op not in ("<=", ">="):
        raise ValueError(f"op must be <= or >=, not {op!r}")
    return {"issue": issue, "target": text, "figure": figure_name, "op": op,
            "threshold": threshold, "stat": stat}


def result(name: str, title: str, command: str, repeats: int, figures: list[dict[str, Any]],
           targets: list[dict[str, Any]] | None = None,
           notes: list[str] | None = None) -> Result:
    return {"name": name, "title": title, "command": command, "repeats": repeats,
            "figures": figures, "targets": targets or [], "notes": notes or []}


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def stat_of(values: list[float], stat: str) -> float:
    if stat == "median":
        return statistics.median(values)
    if stat == "p99":
        return nearest_rank(values, 99)
    if stat == "max":
        return max(values)
    raise ValueError(f"unknown stat {stat!r}")


def paired(a: list[float], b: list[float]) -> list[float]:
    """Per-round ratios a/b (rounds interleaved, so drift hits both alike)."""
    return [x / y if y else float("nan") for x, y in zip(a, b, strict=True)]


def problems(res: Any) -> list[str]:
    """What is wrong with a result from a bench's run_for_report (empty: usable)."""
    if not isinstance(res, dict):
        return [f"not a dict: {type(res).__name__}"]
    found = [f"missing key {key!r}" for key in ("name", "title", "repeats", "figures")
             if key not in res]
    for f in res.get("figures", []):
        if not (isinstance(f, dict) and isinstance(f.get("name"), str)
                and isinstance(f.get("values"), list)
                and all(isinstance(v, int | float) for v in f["values"])):
            found.append(f"bad figure {f!r:.80}")
    names = {f.get("name") for f in res.get("figures", []) if isinstance(f, dict)}
    for t in res.get("targets", []):
        if not (isinstance(t, dict) and t.get("op") in ("<=", ">=")
                and isinstance(t.get("threshold"), int | float)
                and {"issue", "target", "figure"} <= t.keys()):
            found.append(f"bad target {t!r:.80}")
        elif t["figure"] not in names:
            found.append(f"target {t['target']!r} names no figure: {t['figure']!r}")
    return found
