"""How far each projection is behind the log: checkpoint vs. end offset, per partition."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from infra.settings import Settings
from infra.topics import EVENTS
from projections.projector import ORDER
from projections.schema import LIVE_SCHEMA


@dataclass(frozen=True)
class Lag:
    projection: str
    partition: int
    checkpoint: int  # last applied offset, -1 if none
    log_end: int  # the offset the next record will get

    @property
    def lag(self) -> int:
        return max(0, self.log_end - 1 - self.checkpoint)


def projection_lag(settings: Settings, schema: str = LIVE_SCHEMA) -> list[Lag]:
    """One row per (projection, partition) of `parley.events`."""
    topic = settings.topic(EVENTS)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        consumer.close()
    marks: dict[tuple[str, int], int] = {}
    with psycopg.connect(settings.pg_conninfo) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.checkpoints",)).fetchone()
        if exists and exists[0]:
            rows = conn.execute(
                sql.SQL('SELECT projection, partition, "offset" FROM {s}.checkpoints').format(
                    s=sql.Identifier(schema)
                )
            ).fetchall()
            marks = {(r[0], r[1]): r[2] for r in rows}
    return [
        Lag(projection, tp.partition, marks.get((projection, tp.partition), -1), end)
        for projection in ORDER
        for tp, end in sorted(ends.items(), key=lambda item: item[0].partition)
    ]
