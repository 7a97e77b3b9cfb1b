"""What the gateway logs about connections it refuses: short, and at most a line a minute.

A refusal costs whoever asks nothing (no token is needed to be refused), so its log line
must cost the daemon little: one handshake with 120 `Origin` headers of 8 KB each logged
about 1 MB, and a few hundred a second filled the disk the journal lives on. So each kind
of refusal is logged at most once every `LOG_EVERY_S` (the ones in between counted, told in
the next line or at the stop) and what the peer sent is cut to `SHOWN_CHARS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from actors.logs import get_logger
from actors.throttled_log import ThrottledWarning

__all__ = ["RefusalLog", "shown"]

log = get_logger("tradeloom.transport.web")

LOG_EVERY_S = 60.0
#: The most of a peer's text (an Origin, a refusal reason quoting it) a line carries.
SHOWN_CHARS = 200


def shown(text: str) -> str:
    """`text` cut to SHOWN_CHARS (marked when cut)."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...(cut)"


class RefusalLog:
    """One throttled warning per kind of refusal (its event name); thread-safe."""

    def __init__(self, *, every_s: float = LOG_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str | None], ThrottledWarning] = {}

    def refused(self, event: str, code: str | None = None, **details: Any) -> None:
        """Count one refusal of this kind (`event`, and `code` when given: wrong tokens are
        not hidden behind junk hellos); log it unless one was logged within every_s."""
        with self._lock:
            kind = self._kinds.get((event, code))
            if kind is None:
                fixed = {} if code is None else {"code": code}
                kind = self._kinds[(event, code)] = ThrottledWarning(
                    log, event, every_s=self._every_s, monotonic=self._monotonic,
                    since_key="refused_since_last_line", total_key="refused_total", **fixed)
            kind.add(1, **details)

    def flush(self, *, now: bool = False) -> None:
        """Tell what was held back once every_s is up (the gateway's watchdog calls it every
        half second); `now`: at once (the gateway's stop)."""
        with self._lock:
            for kind in self._kinds.values():
                kind.flush(now=now)
