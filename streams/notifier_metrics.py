"""The notifier's Prometheus instruments (its own `/metrics` port: docs/observability.md).

- `parley_notifier_batch_events`, `parley_notifier_events_total`: events read from the
  log per batch, and in all;
- `parley_notifier_record_seconds`: a batch recorded as pending pushes (PostgreSQL);
- `parley_notifier_consumer_lag{partition}`: events of the partition not yet read;
- `parley_notifier_pushes_total{outcome}`: pushes sent, by outcome (sent, retry, gone,
  rejected…).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from infra.metrics import REGISTRY, SIZE_BUCKETS, Counter, GaugeSet, Histogram

BATCH_EVENTS = REGISTRY.add(
    Histogram("parley_notifier_batch_events", "Events read from the log per batch.", SIZE_BUCKETS)
)
EVENTS = REGISTRY.add(Counter("parley_notifier_events_total", "Events read from the log."))
RECORD_SECONDS = REGISTRY.add(
    Histogram("parley_notifier_record_seconds", "A batch recorded as pending pushes.")
)
PUSHES = REGISTRY.add(
    Counter("parley_notifier_pushes_total", "Pushes sent to a provider, by outcome.", "outcome")
)
LAG = REGISTRY.add(
    GaugeSet(
        "parley_notifier_consumer_lag",
        "Events in the partition not yet read by this notifier.",
        "partition",
    )
)


def note_batch(consumer: Any, batches: Mapping[Any, Iterable[Any]], events: int) -> None:
    """A batch read: its size, and each partition's lag (high watermark less next offset)."""
    EVENTS.inc(amount=events)
    BATCH_EVENTS.observe(events)
    for tp, records in batches.items():
        last = None
        for record in records:
            last = record.offset
        end = consumer.highwater(tp)
        if last is not None and end is not None:
            LAG.set(str(tp.partition), float(max(0, end - last - 1)))
