"""`parley push status`: what the notifier has sent, failed and is retrying, per
provider, and how far behind the log it is."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from kafka import KafkaConsumer, TopicPartition

from infra.settings import Settings
from infra.topics import EVENTS
from projections.push_store import PUSH_SCHEMA


@dataclass
class PushStatus:
    # provider -> state (sent, skipped, gone, failed, dead, due, retrying) -> notifications
    by_provider: dict[str, dict[str, int]] = field(default_factory=dict)
    pending: int = 0  # messages still inside their grace period (or waiting on receipts)
    due_now: int = 0  # notifications ready to send at this moment
    due: int = 0  # notifications not sent yet, retries included
    lag: int = 0  # events on the log the notifier has not consumed yet
    targets: dict[str, int] = field(default_factory=dict)  # provider -> registered devices

    @property
    def settled(self) -> bool:
        """Nothing is left to decide, send or retry."""
        return self.lag == 0 and self.pending == 0 and self.due == 0


def push_status(settings: Settings) -> PushStatus:
    status = PushStatus()
    with psycopg.connect(settings.pg_conninfo) as conn:
        for provider, state, count in conn.execute(
            "SELECT provider, CASE WHEN state = 'due' AND tries > 0 THEN 'retrying' "
            f"ELSE state END, count(*) FROM {PUSH_SCHEMA}.notifications GROUP BY 1, 2"
        ):
            status.by_provider.setdefault(provider, {})[state] = count
        row = conn.execute(f"SELECT count(*) FROM {PUSH_SCHEMA}.pending").fetchone()
        status.pending = row[0] if row else 0
        row = conn.execute(
            f"SELECT count(*), count(*) FILTER (WHERE next_at <= now()) "
            f"FROM {PUSH_SCHEMA}.notifications WHERE state = 'due'"
        ).fetchone()
        status.due, status.due_now = row if row else (0, 0)
        for provider, count in conn.execute(
            f"SELECT provider, count(*) FROM {PUSH_SCHEMA}.targets GROUP BY 1"
        ):
            status.targets[provider] = count
    status.lag = notifier_lag(settings)
    return status


def notifier_lag(settings: Settings) -> int:
    """Events on `parley.events` past the notifier group's committed offsets."""
    topic = settings.topic(EVENTS)
    # Asking for the group's committed offsets does not join the group.
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.notifier_group_id,
        enable_auto_commit=False,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        ends = consumer.end_offsets(partitions)
        return sum(end - (consumer.committed(tp) or 0) for tp, end in ends.items())
    finally:
        consumer.close(autocommit=False)
