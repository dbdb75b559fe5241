"""Parley's Kafka topics, created with explicit settings (the broker never auto-creates)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from infra.settings import Settings

EVENTS = "parley.events"
COMMANDS = "parley.commands"
PUSH_DEAD = "parley.push.dead"

COMMANDS_SEGMENT_MS = 3600 * 1000
"""How long the commands topic writes to one segment file (docs/log.md)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The events log keeps everything forever; commands are a work queue, emptied behind
    the processors (`commands/processor/truncate.py`) and kept a week at most."""
    durable = {
        "min.insync.replicas": str(settings.min_insync_replicas),
        "unclean.leader.election.enable": "false",
    }
    return [
        TopicSpec(
            settings.topic(EVENTS),
            settings.events_partitions,
            {
                **durable,
                "cleanup.policy": "delete",
                "retention.ms": "-1",
                "retention.bytes": "-1",
                # Each event is stamped with its append to the log: the workers' lag
                # (`taken_ms`, `done_ms`) and `parley replay --from-time` read that.
                "message.timestamp.type": "LogAppendTime",
            },
        ),
        TopicSpec(
            settings.topic(COMMANDS),
            settings.commands_partitions,
            {
                **durable,
                "cleanup.policy": "delete",
                "retention.ms": str(7 * 24 * 3600 * 1000),
                # A deleted command can no longer be fetched, but its bytes stay in the
                # segment file until the segment is closed and removed: closed hourly,
                # not weekly (Kafka's default), so a send's plaintext leaves the disk too.
                "segment.ms": str(COMMANDS_SEGMENT_MS),
            },
        ),
        # Push notifications that failed every try (docs/push.md), kept a month.
        TopicSpec(
            settings.topic(PUSH_DEAD),
            1,
            {**durable, "cleanup.policy": "delete", "retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
    ]


def ensure_topics(settings: Settings) -> list[tuple[str, str]]:
    """Create missing topics; report each as created or present (never altered silently)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="parley-topics")
    outcome: list[tuple[str, str]] = []
    try:
        existing = set(admin.list_topics())
        for spec in topic_specs(settings):
            if spec.name in existing:
                outcome.append((spec.name, "present"))
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            settings.replication_factor,
                            topic_configs=spec.config,
                        )
                    ]
                )
                outcome.append((spec.name, "created"))
            except TopicAlreadyExistsError:
                outcome.append((spec.name, "present"))
    finally:
        admin.close()
    return outcome
