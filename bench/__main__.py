"""One entry point for every benchmark: runs them, writes docs/benchmarks.md.

    python -m bench                         # full run (make bench): docs/benchmarks.md
    python -m bench --quick --out /tmp/b.md # a few seconds per bench (CI keeps them working)
    python -m bench --quick                 # the same, report to stdout
    python -m bench --only core --only halt # some benches; the others say "not run"
    python -m bench --soak --soak-minutes 10  # and the soak (bench/soak.py), not in CI

Each bench runs in a fresh process (`python -m bench --one MODULE`): its
`run_for_report(quick)` returns structured results (bench/results.py), never scraped from
printed output. The report: the machine, every issue target with pass/short, one section
per bench, then docs/benchmarks-notes.md verbatim. Exit status 1 when a bench failed (its
section says why; the report is still written).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ADAPTED, BENCHES, PENDING_TARGETS
from bench.results import problems

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
MARK = "BENCH-RESULT "
#: Per bench: quick runs are meant to take seconds; full ones minutes.
TIMEOUT_S = {True: 180.0, False: 3600.0}
SOAK = ("soak", "bench.soak", "Soak")
#: Modules that are not benches of the report (the soak runs only with --soak).
NOT_BENCHES = {"__init__", "__main__", "soak"}


def discover() -> list[tuple[str, str, str]]:
    """BENCHES in order, then any other module here whose source defines run_for_report."""
    found = list(BENCHES)
    known = {module for _, module, _ in found}
    for path in sorted(BENCH_DIR.glob("*.py")):
        module = f"bench.{path.stem}"
        if module in known or module in ADAPTED or path.stem in NOT_BENCHES:
            continue
        if "def run_for_report(" in path.read_text(encoding="utf-8", errors="replace"):
            found.append((path.stem, module, path.stem))
    return found


def module_path(module: str) -> Path:
    return BENCH_DIR / f"{module.rsplit('.', 1)[-1]}.py"


def run_one(name: str, module: str, title: str, *, quick: bool, soak_minutes: float
            ) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "title": title, "status": "ok"}
    path = module_path(module)
    if not path.exists():
        return {**entry, "status": "not present", "detail": f"{path.relative_to(ROOT)} does "
                "not exist (yet)"}
    if "def run_for_report(" not in path.read_text(encoding="utf-8", errors="replace"):
        return {**entry, "status": "not measured", "command": f"python bench/{path.name}",
                "detail": f"{path.relative_to(ROOT)} defines no run_for_report(quick); "
                f"run it by hand"}
    args = [sys.executable, "-m", "bench", "--one", module, "--soak-minutes",
            str(soak_minutes)] + (["--quick"] if quick else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S[quick] + soak_minutes * 60 * (name == "soak"),
                              check=False)
    except subprocess.TimeoutExpired as exc:
        return {**entry, "status": "failed", "detail": f"timed out after {exc.timeout:.0f} s"}
    entry["seconds"] = time.monotonic() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-600:]
        return {**entry, "status": "failed", "detail": f"exit {proc.returncode}: {tail}"}
    result = json.loads(lines[-1][len(MARK):])
    if "not_present" in result:
        missing = f"bench/{result['not_present'].rsplit('.', 1)[-1]}.py"
        return {**entry, "status": "not present", "detail": f"{missing} does not exist (yet)"}
    wrong = problems(result)
    if wrong:
        return {**entry, "status": "failed", "detail": "run_for_report returned a malformed "
                f"result: {'; '.join(wrong[:3])}"}
    result.setdefault("targets", [])
    return {**entry, "result": result, "command": result.get("command", "")}


def child(module: str, quick: bool, soak_minutes: float) -> None:
    """`--one MODULE`: run its run_for_report; the result is the stdout line after MARK
    (anything the bench prints goes to stderr)."""
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        try:
            bench = importlib.import_module(module)
            if module == SOAK[1]:
                result = bench.run_for_report(quick, minutes=soak_minutes)
            else:
                result = bench.run_for_report(quick)
        except ModuleNotFoundError as exc:  # an adapter's bench module is not here (yet)
            if not (exc.name or "").startswith("bench."):
                raise
            result = {"not_present": exc.name}
    out.write(MARK + json.dumps(result) + "\n")
    out.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--quick", action="store_true",
                   help="one repeat at small sizes (seconds per bench); writes --out, or "
                        "stdout without it (never docs/benchmarks.md by default)")
    p.add_argument("--out", metavar="PATH",
                   help="where to write the report ('-': stdout); default "
                        "docs/benchmarks.md, or stdout with --quick")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this bench (repeatable); the others say 'not run'")
    p.add_argument("--soak", action="store_true",
                   help="also run bench/soak.py and report it (minutes; not in CI)")
    p.add_argument("--soak-minutes", type=float, default=10.0, metavar="N",
                   help="soak duration (default 10)")
    p.add_argument("--one", metavar="MODULE", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.one:
        child(args.one, args.quick, args.soak_minutes)
        return 0
    from bench import machine, report

    benches = [*discover(), SOAK]
    names = {name for name, _, _ in benches}
    unknown = set(args.only or ()) - names
    if unknown:
        parser().error(f"unknown bench {sorted(unknown)}; known: {sorted(names)}")
    about = machine.describe()
    entries = []
    for name, module, title in benches:
        selected = (args.soak if name == "soak"
                    else not args.only or name in args.only)
        if not selected:
            hint = "run with --soak" if name == "soak" else "not selected with --only"
            entries.append({"name": name, "title": title, "status": "not run",
                            "detail": hint, "command": f"python bench/{name}.py"})
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        entry = run_one(name, module, title, quick=args.quick, soak_minutes=args.soak_minutes)
        print(f"bench: {name}: {entry['status']} ({entry.get('seconds', 0):.1f} s)"
              + (f" {entry['detail']}" if entry.get("detail") else ""),
              file=sys.stderr, flush=True)
        entries.append(entry)
    command = "python -m bench" + (" --quick" if args.quick else "") + (
        f" --soak --soak-minutes {args.soak_minutes:g}" if args.soak else "")
    text = report.render(entries, about, quick=args.quick, command=command,
                         pending=PENDING_TARGETS)
    out = args.out or ("-" if args.quick else str(DEFAULT_OUT))
    if out == "-":
        sys.stdout.write(text)
    else:
        path = Path(out)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
        print(f"bench: wrote {path}", file=sys.stderr)
    return 1 if any(entry["status"] == "failed" for entry in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
