"""The relay's Prometheus instruments (its own `/metrics` port: docs/observability.md).

- `parley_relay_publish_seconds`: a batch read from the event store → every record of
  it acknowledged by Kafka (acks=all);
- `parley_relay_batch_events`, `parley_relay_published_total`: batch sizes and events
  published;
- `parley_relay_lag`: events stored and not yet published, as of the last batch: 0 after
  a batch shorter than `relay_batch_max` (it read up to the head), else the head's
  position less the batch's last (one indexed `max` query, only while behind).
"""

from __future__ import annotations

from collections.abc import Callable

from infra.metrics import REGISTRY, SIZE_BUCKETS, Counter, GaugeSet, Histogram
from infra.settings import Settings

PUBLISH_SECONDS = REGISTRY.add(
    Histogram(
        "parley_relay_publish_seconds",
        "A batch of stored events published to Kafka and acknowledged by it.",
    )
)
BATCH_EVENTS = REGISTRY.add(
    Histogram("parley_relay_batch_events", "Events per published batch.", SIZE_BUCKETS)
)
PUBLISHED = REGISTRY.add(Counter("parley_relay_published_total", "Events published to Kafka."))
ERRORS = REGISTRY.add(
    Counter("parley_relay_errors_total", "Relay terms ended by an error, by error.", "error")
)
LAG = REGISTRY.add(
    GaugeSet("parley_relay_lag", "Events stored and not yet published, by relay name.", "relay")
)


def note_batch(settings: Settings, events: int, position: int, head: Callable[[], int]) -> None:
    """A batch of `events` published up to `position`; a full one may have more behind."""
    PUBLISHED.inc(amount=events)
    BATCH_EVENTS.observe(events)
    behind = head() - position if events >= settings.relay_batch_max else 0
    LAG.set(settings.relay_name, float(max(0, behind)))
