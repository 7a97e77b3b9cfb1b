"""structlog set-up for the command line: JSON lines (machines) or console (people), to stderr.

The library itself only calls `structlog.get_logger`; configuring output is the program's
job, so embedding applications keep their own logging.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(*, fmt: str = "json", level: str = "info") -> None:
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
