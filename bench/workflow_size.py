"""Big workflows: what a deep chain of nodes costs against a flat one of the same size.

A chain of n nodes (each depending on the one before) has n²/2 (node, ancestor) pairs:
every node's `ctx.upstream` holds every node before it. A flat workflow (n independent
nodes) has none. Each size is measured in a fresh process (peak RSS is per process): the
time to build the `Workflow`, the peak RSS after building it, and the wall time of one
execution, for the chain and for the flat baseline; ratios are chain / flat.

    .venv/bin/python bench/workflow_size.py [--sizes 500,2000,8000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _one(shape: str, size: int) -> dict[str, float]:
    from actors import Engine, Node, Workflow

    def step(ctx: object) -> int:
        return 1

    started = time.perf_counter()
    nodes = [Node(f"n{i}", step, depends_on=[f"n{i - 1}"] if shape == "chain" and i else [])
             for i in range(size)]
    workflow = Workflow(shape, nodes=nodes)
    built_s = time.perf_counter() - started
    built_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine = Engine.start()
    try:
        started = time.perf_counter()
        status = engine.submit(workflow).result(timeout=600).status
        run_s = time.perf_counter() - started
    finally:
        engine.stop()
    if status != "completed":
        raise SystemExit(f"{shape} of {size}: {status}")
    return {"build_s": built_s, "build_rss_mb": built_rss, "run_s": run_s,
            "run_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(shape: str, size: int) -> dict[str, float]:
    """One shape and size in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--worker", shape, str(size)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, check=True, timeout=900)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000,8000",
                        help="node counts, comma-separated (default 500,2000,8000)")
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_one(args.worker[0], int(args.worker[1]))))
        return
    print(f"{'nodes':>6} {'shape':<6} {'build s':>9} {'RSS MB':>8} {'run s':>8} "
          f"{'RSS MB':>8}   chain/flat: build, run")
    for size in (int(s) for s in args.sizes.split(",")):
        flat, chain = measure("flat", size), measure("chain", size)
        for shape, r in (("flat", flat), ("chain", chain)):
            print(f"{size:>6} {shape:<6} {r['build_s']:>9.3f} {r['build_rss_mb']:>8.0f} "
                  f"{r['run_s']:>8.3f} {r['run_rss_mb']:>8.0f}", end="")
            print(f"   {chain['build_s'] / flat['build_s']:.1f}x, "
                  f"{chain['run_s'] / flat['run_s']:.1f}x" if shape == "chain" else "")


if __name__ == "__main__":
    main()
