"""The Faust workers' Prometheus instruments (their own `/metrics` port:
docs/observability.md), observed where `Pace` already measures each batch:

- `parley_workers_projected_seconds`: an event appended to `parley.events` (the record's
  timestamp, the relay's publish) → projected and cached, per event;
- `parley_workers_batch_seconds`, `parley_workers_batch_events`: a batch applied, and
  its size;
- `parley_workers_postgres_seconds`, `parley_workers_redis_seconds`: its two stages;
- `parley_workers_consumer_lag{partition}`: events of the partition not yet taken by
  this worker (the partition's high watermark less the batch's last offset + 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from infra.metrics import REGISTRY, SIZE_BUCKETS, Counter, GaugeSet, Histogram

PROJECTED_SECONDS = REGISTRY.add(
    Histogram(
        "parley_workers_projected_seconds",
        "An event appended to the events topic → projected and cached.",
    )
)
BATCH_SECONDS = REGISTRY.add(
    Histogram("parley_workers_batch_seconds", "A batch of events projected and cached.")
)
BATCH_EVENTS = REGISTRY.add(
    Histogram("parley_workers_batch_events", "Events per batch.", SIZE_BUCKETS)
)
POSTGRES_SECONDS = REGISTRY.add(
    Histogram(
        "parley_workers_postgres_seconds",
        "A batch's projections, checkpoints and reads in PostgreSQL (one transaction).",
    )
)
REDIS_SECONDS = REGISTRY.add(
    Histogram("parley_workers_redis_seconds", "A batch's cache writes in Redis (one MULTI).")
)
EVENTS = REGISTRY.add(Counter("parley_workers_events_total", "Events projected."))
RETRIES = REGISTRY.add(
    Counter(
        "parley_workers_retries_total",
        "Batches applied again after PostgreSQL or Redis failed, by error.",
        "error",
    )
)
BAD_ENVELOPES = REGISTRY.add(
    Counter("parley_workers_bad_envelopes_total", "Events left out: their envelope is unreadable.")
)
LAG = REGISTRY.add(
    GaugeSet(
        "parley_workers_consumer_lag",
        "Events in the partition not yet taken by this worker.",
        "partition",
    )
)


def note_lags(consumer: Any, events: Iterable[Any]) -> None:
    """Each partition's lag after a batch, from the Faust consumer's high watermarks."""
    last: dict[Any, int] = {}
    for event in events:
        last[event.message.tp] = event.message.offset
    for tp, offset in last.items():
        try:
            end = consumer.highwater(tp)
        except (AssertionError, KeyError):  # revoked meanwhile: aiokafka asserts it owns tp
            continue
        if end is not None and end >= 0:
            LAG.set(str(tp.partition), float(max(0, end - offset - 1)))
