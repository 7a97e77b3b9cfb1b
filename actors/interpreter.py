"""A halt's hold on the interpreter: a short GIL switch interval while the kill switch works.

A thread that wants the GIL while another runs Python waits up to the switch interval
(CPython's default: 5 ms) before the holder is asked to let go. A halt with 1,000
executions in flight is a crowd of such hand-offs: the supervisors ending executions,
the node threads being woken, the journal writer (which gives the GIL up around every
SQLite call) committing the HALT. At 5 ms each, `bench/halt.py` measured the worst of 30
halts at 56-310 ms; with 1 ms throughout, 33-39 ms, but that cost ~10 % of throughput
all the time. So the interval is short only while a halt is under way: from the call
until its reply (supervisors' acknowledgements and the HALT's commit included).

Overlapping halts share it: the first sets it, the last puts back what it found.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The switch interval while a halt is under way.
HALT_SWITCH_INTERVAL_S = 0.0005

_lock = threading.Lock()
_holders = 0
_found = 0.0


@contextmanager
def quick_handoffs() -> Iterator[None]:
    """Within: the GIL changes hands every HALT_SWITCH_INTERVAL_S at most."""
    global _holders, _found
    with _lock:
        if _holders == 0:
            _found = sys.getswitchinterval()
            sys.setswitchinterval(min(_found, HALT_SWITCH_INTERVAL_S))
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                sys.setswitchinterval(_found)
