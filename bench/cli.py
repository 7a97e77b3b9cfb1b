"""CLI start-up benchmark: how long a `tradeloom` command takes from exec to exit when it
has next to nothing to do, against a bare interpreter's start measured in the same run.

Each command runs in a fresh interpreter (as an operator's shell or a script runs it), the
commands and the baseline alternating, `--rounds` times; the figure is the median wall time.
`status` asks an address nobody listens on with `--timeout 0.05`, so it includes that wait.
With `--ab REV` the same commands also run from the engine at git revision REV (a temporary
worktree), alternating with this tree.

    .venv/bin/python bench/cli.py                  # this tree, 15 rounds
    .venv/bin/python bench/cli.py --ab 13a2aa7     # against a revision
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.ab import ROOT, AbError, rev_worktree

#: What each command is called with, and the exit code it must give (a command that
#: failed early would look fast).
COMMANDS = {
    "tradeloom --version": (["--version"], 0),
    "tradeloom halt --help": (["halt", "--help"], 0),
    "tradeloom status (nobody listening, --timeout 0.05)": (
        ["status", "--timeout", "0.05", "--control", "tcp://127.0.0.1:1"], 3),
}
ENTRY = "import sys; from actors.cli_entry import main; sys.exit(main())"


def run(tree: Path, code: str, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=tree,
                          env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True,
                          check=False, timeout=60)


def wall_s(tree: Path | None, args: list[str], exit_code: int = 0) -> float:
    """One run's wall time: `tradeloom ARGS` from `tree`, or a bare `python -c pass`."""
    started = time.perf_counter()
    done = run(ROOT, "pass", []) if tree is None else run(tree, ENTRY, args)
    took = time.perf_counter() - started
    if done.returncode != exit_code:
        raise SystemExit(f"bench/cli.py: {args} exited {done.returncode}, not {exit_code}: "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    return took


def measure(trees: dict[str, Path], rounds: int) -> dict[tuple[str, str], list[float]]:
    for tree in trees.values():  # byte-compiled first, as `make` does (else each run compiles)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "actors", "transport"],
                       cwd=tree, check=True, capture_output=True)
        where = run(tree, "import actors; print(actors.__file__)", []).stdout.decode()
        if Path(where.strip()).resolve().parent != (tree / "actors").resolve():
            raise SystemExit(f"bench/cli.py: {tree} imports actors from {where.strip()!r}")
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        samples.setdefault(("baseline", "python -c pass"), []).append(wall_s(None, []))
        for name, tree in trees.items():
            for label, (args, exit_code) in COMMANDS.items():
                samples.setdefault((name, label), []).append(wall_s(tree, args, exit_code))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ab", metavar="REV", help="also run the engine at git revision REV")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = {"this tree": ROOT}
        if args.ab:
            try:
                trees = {args.ab: stack.enter_context(rev_worktree(args.ab)), **trees}
            except AbError as exc:
                raise SystemExit(f"bench/cli.py: {exc}") from None
        samples = measure(trees, args.rounds)
    base = statistics.median(samples[("baseline", "python -c pass")])
    print(f"baseline: python -c pass, median {base * 1e3:.0f} ms ({args.rounds} runs)\n")
    names = list(trees)
    print("| command | " + " | ".join(f"{n} ms (x baseline)" for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for label in COMMANDS:
        cells = []
        for name in names:
            median = statistics.median(samples[(name, label)])
            cells.append(f"{median * 1e3:.0f} ({median / base:.1f}x)")
        print(f"| `{label}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
