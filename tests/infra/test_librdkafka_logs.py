"""librdkafka's repeated log lines are held back (`infra.producer.Repeats`): no server."""

from __future__ import annotations

import logging

import pytest

from infra.producer import Repeats

pytestmark = pytest.mark.unit


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("parley.processor.librdkafka", logging.ERROR, "", 0, message, (), None)


def test_a_repeated_line_passes_once_per_interval_and_a_new_one_at_once() -> None:
    refused = "FAIL [consumer-1] [thrd:bootstrap]: Connect to 127.0.0.1:19092 failed: refused"
    repeats = Repeats(every_s=60.0)
    assert repeats.filter(record(refused))
    assert not any(repeats.filter(record(refused)) for _ in range(100))
    assert repeats.filter(record("SESSTMOUT [consumer-1] [thrd:main]: session timed out"))
    assert Repeats(every_s=0.0).filter(record(refused))  # no interval: every line
