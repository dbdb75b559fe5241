"""The processor's Prometheus instruments (its own `/metrics` port: docs/observability.md).

The stages of a command inside the processor, each observed once per batch (or once per
command, for the wait in Kafka) at the call sites of `consumer.py` and `processor.py`:

- `parley_processor_wait_seconds`: the gateway handed the command to Kafka (the record's
  timestamp) → the processor took it (gateway → processor);
- `parley_processor_batch_seconds`: a batch taken → decided, stored and answered;
- `parley_processor_commit_seconds`: the batch's one transaction (group commit);
- `parley_processor_publish_seconds`: the one Redis round trip of its replies and pushes;
- `parley_processor_batch_commands`: commands per batch;
- `parley_processor_consumer_lag{partition}`: commands not yet taken, per partition of
  the commands topic this processor owns (librdkafka's statistics, `STATS_INTERVAL_MS`).

And the commands topic's truncation behind the processor (`truncate.py`):
`parley_processor_commands_truncated_total` and `parley_processor_truncate_errors_total`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson

from commands.command import Outcome
from infra.metrics import REGISTRY, SIZE_BUCKETS, Counter, GaugeSet, Histogram

log = logging.getLogger("parley.processor")

STATS_INTERVAL_MS = 5_000
"""How often librdkafka reports its statistics (the lag per partition): a JSON document
of a few KiB parsed on the consumer's thread, every 5 s."""

WAIT_SECONDS = REGISTRY.add(
    Histogram(
        "parley_processor_wait_seconds",
        "A command's record appended to Kafka by its gateway → taken by the processor.",
    )
)
BATCH_SECONDS = REGISTRY.add(
    Histogram(
        "parley_processor_batch_seconds",
        "A batch taken → decided, committed and its replies and pushes published.",
    )
)
COMMIT_SECONDS = REGISTRY.add(
    Histogram("parley_processor_commit_seconds", "A batch's events stored (one transaction).")
)
PUBLISH_SECONDS = REGISTRY.add(
    Histogram(
        "parley_processor_publish_seconds",
        "A batch's replies and pushes published to the gateways (one Redis round trip).",
    )
)
BATCH_COMMANDS = REGISTRY.add(
    Histogram("parley_processor_batch_commands", "Commands per batch.", SIZE_BUCKETS)
)
COMMANDS = REGISTRY.add(
    Counter("parley_processor_commands_total", "Commands decided and answered.")
)
ERRORS = REGISTRY.add(
    Counter("parley_processor_errors_total", "Commands refused, by error code.", "code")
)
CONFLICTS = REGISTRY.add(
    Counter(
        "parley_processor_conflicts_total",
        "Batches decided again: another writer had appended to one of their chats.",
    )
)
STORE_RETRIES = REGISTRY.add(
    Counter("parley_processor_store_retries_total", "Batches retried while the database was away.")
)
LAG = REGISTRY.add(
    GaugeSet(
        "parley_processor_consumer_lag",
        "Commands in the partition not yet taken by this processor.",
        "partition",
    )
)


def count_outcomes(outcomes: Iterable[Outcome]) -> None:
    """Count a batch's outcomes, and its refusals by code."""
    total = 0
    for outcome in outcomes:
        total += 1
        if not outcome.ok:
            ERRORS.inc(outcome.error_code or "unknown")
    COMMANDS.inc(amount=total)


def observe_wait(timestamp: tuple[int, int]) -> None:
    """A command's time in Kafka from its record's (kind, milliseconds) timestamp, which
    the gateway's producer stamps on the same clock; none when the record has none."""
    kind, stamp_ms = timestamp
    if kind:
        WAIT_SECONDS.observe(max(0.0, time.time() * 1000 - stamp_ms) / 1000)


OWNED = frozenset({"active", "offset-query", "offset-wait"})
"""librdkafka's fetch states of a partition assigned to this consumer."""


def kafka_stats(document: str) -> None:
    """librdkafka's statistics (`stats_cb`): the lag of each partition assigned here, the
    high watermark less the next offset handed to the processor (or, before any, the
    committed offset, or the partition's first: a partition never written has lag 0)."""
    try:
        stats: Any = orjson.loads(document)
        lags = {}
        for topic in stats.get("topics", {}).values():
            for number, partition in topic.get("partitions", {}).items():
                if number == "-1" or partition.get("fetch_state") not in OWNED:
                    continue
                end = partition.get("hi_offset", -1)
                position = next(
                    (
                        offset
                        for key in ("app_offset", "committed_offset", "lo_offset")
                        if (offset := partition.get(key, -1)) >= 0
                    ),
                    -1,
                )
                if position >= 0 and end >= 0:
                    lags[number] = float(max(0, end - position))
    except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        log.warning("event=kafka_stats_unreadable error=%s", type(exc).__name__)
        return
    LAG.replace(lags)


TRUNCATED = REGISTRY.add(
    Counter(
        "parley_processor_commands_truncated_total",
        "Decided commands deleted from the commands topic, up to what this processor committed.",
    )
)
TRUNCATE_ERRORS = REGISTRY.add(
    Counter(
        "parley_processor_truncate_errors_total",
        "Passes of the commands topic's truncation that failed (Kafka away or refusing).",
    )
)
