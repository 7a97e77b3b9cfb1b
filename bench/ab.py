"""A/B mode of `bench/core.py`: two engines (or two sets of worker options), interleaved.

A is the engine at a git revision, checked out into a temporary worktree (removed at the
end, also on Ctrl-C or SIGTERM); B is the working tree. Both trees define the package
`actors`, so every measurement is a fresh worker process: this checkout's `bench/core.py
--worker` with PYTHONPATH (and cwd) set to one tree. The worker code is the same for both
sides; only the engine (and any --a-args/--b-args) differs.

Rounds alternate the order (AB, BA, AB, ...) so that drift on a shared machine, and
whatever the first process of a pair pays, fall on both sides alike. Per metric the
summary gives the median over rounds and the min-max spread of each side, the ratio of
medians B/A and the range of the paired ratios (B and A of the same round). A metric
regresses when B's median is worse than A's worst round: beyond the measured spread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORE = Path(__file__).resolve().with_name("core.py")
ROOT = CORE.parent.parent


class AbError(Exception):
    """The A/B run cannot go on (git, a worktree, or a worker failed)."""


@dataclass(frozen=True)
class Side:
    name: str
    label: str
    tree: Path
    args: tuple[str, ...]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    #: Counts towards the verdict; the others are there to explain it.
    in_verdict: bool
    fmt: str


METRICS = (
    Metric("latency_p50_ms", "latency p50 ms, c=1", False, True, ".3f"),
    Metric("latency_p99_ms", "latency p99 ms, c=1", False, False, ".3f"),
    Metric("wf_s_c50", "wf/s, c=50", True, True, ",.0f"),
    Metric("wf_s_c1000", "wf/s, c=1000", True, True, ",.0f"),
    Metric("cpu_us_per_wf_c50", "CPU us/wf, c=50", False, False, ".1f"),
    Metric("cpu_us_per_wf_c1000", "CPU us/wf, c=1000", False, False, ".1f"),
    Metric("gc_us_per_wf_c50", "GC us/wf, c=50", False, False, ".2f"),
    Metric("gc_us_per_wf_c1000", "GC us/wf, c=1000", False, False, ".2f"),
    Metric("gc_collections_c1000", "GC collections, c=1000", False, False, ",.0f"),
    Metric("gc_longest_ms_c1000", "GC longest ms, c=1000", False, False, ".2f"),
)


def git(*args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, check=False)
    except FileNotFoundError:
        raise AbError("A/B mode needs git on PATH") from None
    if proc.returncode:
        raise AbError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@contextlib.contextmanager
def rev_worktree(commit: str) -> Iterator[Path]:
    """`git worktree add --detach` into a temporary directory; removed however we leave."""
    parent = Path(tempfile.mkdtemp(prefix="tradeloom-ab-"))
    tree = parent / "tree"
    try:
        git("worktree", "add", "--detach", str(tree), commit)
        yield tree
    finally:
        # A second Ctrl-C must not leave a stale worktree behind: ignore SIGINT here (the
        # git children inherit the ignore).
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with contextlib.suppress(AbError):
                git("worktree", "remove", "--force", str(tree))
            shutil.rmtree(parent, ignore_errors=True)
            with contextlib.suppress(AbError):
                git("worktree", "prune")
        finally:
            signal.signal(signal.SIGINT, previous)


def worker_args(args: argparse.Namespace) -> list[str]:
    """The options both sides' workers get."""
    out = ["--quick"] if args.quick else []
    for cpu in args.cpu or ():
        out += ["--cpu", str(cpu)]
    if args.supervisors:
        out += ["--supervisors", str(args.supervisors)]
    if args.gc_threshold:
        out += ["--gc-threshold", ",".join(map(str, args.gc_threshold))]
    out += ["--gc-freeze"] * args.gc_freeze + ["--gc-disable"] * args.gc_disable
    return out


def glue_side_args(argv: list[str]) -> list[str]:
    """`--b-args "--gc-freeze"` as `--b-args=--gc-freeze`: argparse would take the value,
    which starts with "--", for an option of its own."""
    out: list[str] = []
    pending = iter(argv)
    for arg in pending:
        glued = arg in ("--a-args", "--b-args")
        out.append(f"{arg}={next(pending, '')}" if glued else arg)
    return out


def measure(side: Side, common: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(CORE), "--worker", "--expect-actors", str(side.tree / "actors"),
           *common, *side.args]
    env = {**os.environ, "PYTHONPATH": str(side.tree)}
    try:
        proc = subprocess.run(cmd, cwd=side.tree, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AbError(f"{side.name} worker did not finish within {timeout:.0f} s") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise AbError(f"{side.name} worker failed (exit {proc.returncode}): "
                      f"{shlex.join(cmd)}\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def compare(metric: Metric, a: list[float], b: list[float]) -> dict[str, Any]:
    a_med, b_med = statistics.median(a), statistics.median(b)
    paired = [y / x for x, y in zip(a, b, strict=True) if x]
    if metric.higher_is_better:
        worse, better = b_med < min(a), b_med > max(a)
    else:
        worse, better = b_med > max(a), b_med < min(a)
    return {
        "label": metric.label, "higher_is_better": metric.higher_is_better,
        "in_verdict": metric.in_verdict,
        "a": {"median": a_med, "min": min(a), "max": max(a), "values": a,
              "spread": (max(a) - min(a)) / a_med if a_med else 0.0},
        "b": {"median": b_med, "min": min(b), "max": max(b), "values": b,
              "spread": (max(b) - min(b)) / b_med if b_med else 0.0},
        "ratio": b_med / a_med if a_med else None,
        "paired": ({"median": statistics.median(paired), "min": min(paired),
                    "max": max(paired)} if paired else None),
        "verdict": ("worse beyond spread" if worse else
                    "better beyond spread" if better else "within spread"),
    }


def regression_note(metric: Metric, row: dict[str, Any]) -> str:
    worst = row["a"]["min" if metric.higher_is_better else "max"]
    return (f"{metric.label}: B median {row['b']['median']:{metric.fmt}} is worse than "
            f"A's worst round {worst:{metric.fmt}}")


def gc_by_generation(runs: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Collections of generations 0, 1, 2 per concurrency level, summed over rounds."""
    total: dict[str, list[int]] = {}
    for run in runs:
        for level, counts in run["gc"].get("collections_by_generation", {}).items():
            total[level] = [x + y for x, y in zip(total.get(level, [0, 0, 0]), counts,
                                                  strict=True)]
    return total


def summarize(sides: tuple[Side, Side], runs: dict[str, list[dict[str, Any]]],
              order: list[str]) -> dict[str, Any]:
    metrics = {m.key: compare(m, [r["metrics"][m.key] for r in runs["A"]],
                              [r["metrics"][m.key] for r in runs["B"]]) for m in METRICS}
    worse = [m for m in METRICS if m.in_verdict
             and metrics[m.key]["verdict"] == "worse beyond spread"]
    if worse:
        verdict = "REGRESSION beyond spread: " + "; ".join(
            regression_note(m, metrics[m.key]) for m in worse)
    else:
        verdict = "no regression beyond spread"
    return {
        "sides": {s.name: {"label": s.label, "tree": str(s.tree), "args": list(s.args),
                           "gc": runs[s.name][0]["gc"],
                           "gc_by_generation": gc_by_generation(runs[s.name]),
                           "events_per_run": runs[s.name][0]["events_per_run"]}
                  for s in sides},
        "rounds": len(order), "order": order, "metrics": metrics,
        "regression": bool(worse), "verdict": verdict, "runs": runs,
    }


def print_table(summary: dict[str, Any], common: list[str]) -> None:
    for name, side in summary["sides"].items():
        gc_info = side["gc"]
        print(f"{name} = {side['label']}  {shlex.join(side['args'])}".rstrip())
        by_gen = ", ".join(f"{level} {'/'.join(map(str, counts))}"
                           for level, counts in side["gc_by_generation"].items())
        print(f"    gc threshold {tuple(gc_info['threshold'])}, frozen {gc_info['frozen']:,}, "
              f"enabled {gc_info['enabled']}; collections gen0/1/2 over all rounds: "
              f"{by_gen}; {side['events_per_run']} events per run")
    print(f"{summary['rounds']} rounds ({' '.join(summary['order'])}), each side a fresh "
          f"process per round; worker options: {shlex.join(common) or 'none'}\n")
    head = (f"{'metric':<24}{'A median':>10}{'A min-max':^21}{'B median':>10}"
            f"{'B min-max':^21}{'B/A':>8}{'paired B/A':>15}  verdict")
    print(head)
    print("-" * (len(head) + 14))
    fmts = {m.key: m.fmt for m in METRICS}
    for key, row in summary["metrics"].items():
        f = fmts[key]
        a, b, paired = row["a"], row["b"], row["paired"]
        ratio = f"{row['ratio']:.3f}x" if row["ratio"] is not None else "-"
        spread = f"{paired['min']:.2f}-{paired['max']:.2f}x" if paired else "-"
        print(f"{row['label']:<24}{a['median']:>10{f}}{a['min']:>11{f}}-{a['max']:<9{f}}"
              f"{b['median']:>10{f}}{b['min']:>11{f}}-{b['max']:<9{f}}{ratio:>8}"
              f"{spread:>15}  {row['verdict'] if row['in_verdict'] else ''}")
    print("\nspread (max-min)/median: " + ", ".join(
        f"{row['label']} A {row['a']['spread']:.1%} B {row['b']['spread']:.1%}"
        for key, row in summary["metrics"].items() if row["in_verdict"]))
    print(f"verdict: {summary['verdict']}")


def run_rounds(sides: tuple[Side, Side], rounds: int, common: list[str],
               timeout: float) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    order = []
    for i in range(rounds):
        pair = sides if i % 2 == 0 else sides[::-1]
        order.append("".join(side.name for side in pair))
        for side in pair:
            result = measure(side, common, timeout)
            runs[side.name].append(result)
            m = result["metrics"]
            print(f"round {i + 1}/{rounds} {side.name}: p50 {m['latency_p50_ms']:.3f} ms  "
                  f"c=50 {m['wf_s_c50']:,.0f} wf/s  c=1000 {m['wf_s_c1000']:,.0f} wf/s  "
                  f"GC {m['gc_us_per_wf_c1000']:.1f} us/wf at c=1000",
                  file=sys.stderr, flush=True)
    return runs, order


def describe_working_tree() -> str:
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except AbError:  # --ab-same works without git
        return f"working tree {ROOT}"
    return f"working tree {ROOT} (HEAD {head}{', uncommitted changes' if dirty else ''})"


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the worktree's cleanup


def run_ab(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.ab is not None and args.ab_same:
        parser.error("--ab and --ab-same exclude each other")
    rounds = args.rounds or (2 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be >= 1")
    a_args, b_args = shlex.split(args.a_args), shlex.split(args.b_args)
    for extra in (a_args, b_args):
        parser.parse_args(["--worker", *extra])  # a typo fails here, not in round 1
    common = worker_args(args)
    timeout = 120.0 if args.quick else 600.0
    signal.signal(signal.SIGTERM, _terminate)
    try:
        b_label = describe_working_tree()
        b = Side("B", b_label, ROOT, tuple(b_args))
        if args.ab_same:
            a = Side("A", b_label, ROOT, tuple(a_args))
            runs, order = run_rounds((a, b), rounds, common, timeout)
        else:
            try:
                commit = git("rev-parse", "--verify", "--quiet", f"{args.ab}^{{commit}}")
            except AbError:
                raise AbError(f"--ab {args.ab}: not a commit in {ROOT}") from None
            with rev_worktree(commit) as tree:
                a = Side("A", f"{args.ab} @ {commit[:7]} (temporary worktree)", tree,
                         tuple(a_args))
                runs, order = run_rounds((a, b), rounds, common, timeout)
    except AbError as exc:
        print(f"bench/core.py A/B: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/core.py A/B: interrupted; the worktree is removed", file=sys.stderr)
        return 130
    summary = summarize((a, b), runs, order)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary, common)
    return 1 if args.fail_on_regression and summary["regression"] else 0
