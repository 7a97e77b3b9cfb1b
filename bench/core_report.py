"""`bench/core.py` for the report (`python -m bench`): the engine with the journal off,
`normal` and `full`, each round a fresh worker process (`bench/core.py --worker`, the A/B
mode's worker: latency at c=1, throughput at c=50 and c=1000), beside the asyncio
sequential executor and the bare pykka ask chain measured in this process in the same
rounds. Orders rotate per round so drift on a shared machine hits every side alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.results import Result, figure, paired, result, target

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "bench" / "core.py"
JOURNAL_MODES = ("off", "normal", "full")
WORKER_TIMEOUT_S = 600


def worker(journal: str, quick: bool) -> dict[str, float]:
    """One fresh process measuring the working tree's engine; its metrics."""
    args = [sys.executable, str(CORE), "--worker", "--journal", journal]
    if quick:
        args.append("--quick")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"core worker (journal {journal}) failed: {proc.stderr[-2000:]}")
    metrics: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])["metrics"]
    return metrics


def baselines(quick: bool) -> dict[str, float]:
    from bench.baselines import asyncio_latency, asyncio_throughput, pykka_chain_latency
    from bench.core import WORKFLOW, Counter

    latency_n = 300 if quick else 2000
    totals = {50: 1000, 1000: 2000} if quick else {50: 6000, 1000: 10_000}
    out = {"asyncio_p50_ms": statistics.median(
               asyncio_latency(WORKFLOW, Counter(), latency_n)) * 1e3,
           "pykka_p50_ms": statistics.median(pykka_chain_latency(latency_n)) * 1e3}
    for level, total in totals.items():
        out[f"asyncio_wf_s_c{level}"] = asyncio_throughput(WORKFLOW, Counter(), level, total)
    return out


def run_for_report(quick: bool) -> Result:
    rounds = 1 if quick else 3
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in JOURNAL_MODES}
    base: list[dict[str, float]] = []
    for r in range(rounds):
        order = JOURNAL_MODES[r % 3:] + JOURNAL_MODES[:r % 3]
        for mode in order:
            runs[mode].append(worker(mode, quick))
        base.append(baselines(quick))

    def of(mode: str, key: str) -> list[float]:
        return [run[key] for run in runs[mode]]

    def b(key: str) -> list[float]:
        return [run[key] for run in base]

    figures: list[dict[str, Any]] = []
    for mode in JOURNAL_MODES:
        label = "journal off" if mode == "off" else f"journal {mode}"
        figures += [figure(f"engine ({label}) latency p50, c=1", "ms",
                           of(mode, "latency_p50_ms")),
                    figure(f"engine ({label}) latency p99, c=1", "ms",
                           of(mode, "latency_p99_ms")),
                    figure(f"engine ({label}) wf/s, c=50", "wf/s", of(mode, "wf_s_c50")),
                    figure(f"engine ({label}) wf/s, c=1000", "wf/s", of(mode, "wf_s_c1000"))]
    figures += [figure("asyncio sequential executor latency p50, c=1", "ms",
                       b("asyncio_p50_ms")),
                figure("asyncio sequential executor wf/s, c=50", "wf/s", b("asyncio_wf_s_c50")),
                figure("asyncio sequential executor wf/s, c=1000", "wf/s",
                       b("asyncio_wf_s_c1000")),
                figure("bare pykka ask chain, 3 actors, p50", "ms", b("pykka_p50_ms")),
                figure("engine / asyncio wf/s, c=50", "x",
                       paired(of("off", "wf_s_c50"), b("asyncio_wf_s_c50"))),
                figure("engine / asyncio wf/s, c=1000", "x",
                       paired(of("off", "wf_s_c1000"), b("asyncio_wf_s_c1000"))),
                figure("engine / asyncio latency p50", "x",
                       paired(of("off", "latency_p50_ms"), b("asyncio_p50_ms"))),
                figure("engine / pykka chain latency p50", "x",
                       paired(of("off", "latency_p50_ms"), b("pykka_p50_ms")))]
    for mode in ("normal", "full"):
        for level in (50, 1000):
            figures.append(figure(f"journal {mode} / off wf/s, c={level}", "x",
                                  paired(of(mode, f"wf_s_c{level}"), of("off",
                                                                        f"wf_s_c{level}"))))
    figures.append(figure("journal normal - off latency p50, c=1", "ms",
                          [n - o for n, o in zip(of("normal", "latency_p50_ms"),
                                                 of("off", "latency_p50_ms"), strict=True)]))
    targets = [
        target(2, "p50 <= 0.2 ms at c=1 (journal off)", "engine (journal off) latency p50, c=1",
               "<=", 0.2),
        target(8, ">= 10,000 wf/s at c=50, unpinned", "engine (journal off) wf/s, c=50",
               ">=", 10_000),
        target(8, ">= 10,000 wf/s at c=1000, unpinned", "engine (journal off) wf/s, c=1000",
               ">=", 10_000),
        target(9, "journal normal >= 0.75x journal off at c=50",
               "journal normal / off wf/s, c=50", ">=", 0.75),
        target(9, "journal normal >= 0.75x journal off at c=1000",
               "journal normal / off wf/s, c=1000", ">=", 0.75),
        target(9, "journal normal p50 at c=1 within +0.1 ms of journal off",
               "journal normal - off latency p50, c=1", "<=", 0.1),
    ]
    notes = [f"each round: a fresh worker process per journal mode ({'quick' if quick else 'full'}"
             " sizes of `bench/core.py --worker`), Python's default GC thresholds, unpinned; "
             "the asyncio and pykka baselines in the same rounds",
             "the full level sweep (c=1 to 1,000) and the A/B mode: `python bench/core.py`, "
             "`python bench/core.py --ab REV`"]
    return result("core", "Core engine", "python bench/core.py", rounds, figures, targets,
                  notes)
