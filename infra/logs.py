"""Structured logs: one event per line, key=value, with ids and never message bodies."""

from __future__ import annotations

import logging
import sys


def configure_logging(service: str, level: int = logging.INFO) -> None:
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
