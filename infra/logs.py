"""Structured logs: one event per line, key=value, with ids and never message bodies."""

from __future__ import annotations

import logging
import sys

PARLEY_LOGGERS = ("parley", "commands")
"""The loggers `PARLEY_LOG_LEVEL` sets: Parley's own, not its libraries'."""


def configure_logging(service: str, level: int = logging.INFO, parley_level: str = "info") -> None:
    """One key=value line per event on stderr; Parley's own loggers at `parley_level`
    (`debug` adds each command's trail: its ids at the gateway, the processor and the
    recipients' gateways)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"ts=%(asctime)s level=%(levelname)s service={service} logger=%(name)s %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "aiokafka", "eventsourcing"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Parley's loggers write through this handler themselves, at their own level, so that
    # a library that reconfigures the root (Faust's worker: its handlers at its level)
    # neither drops their debug lines nor reformats them.
    for name in PARLEY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(parley_level.upper())
        logger.handlers[:] = [handler]
        logger.propagate = False
