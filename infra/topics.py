"""Parley's Kafka topics, created with explicit settings (the broker never auto-creates);
an existing topic's settings compared with them, and aligned on demand."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

from infra.settings import Settings

EVENTS = "parley.events"
COMMANDS = "parley.commands"
PUSH_DEAD = "parley.push.dead"

COMMANDS_SEGMENT_MS = 3600 * 1000
"""How long the commands topic writes to one segment file (docs/log.md)."""

PARTITIONS = "partitions"
"""The key of a `Difference` in a topic's partition count rather than a config."""

ALIGN_VISIBLE_S = 10.0
"""How long `align_topics` waits for the broker to show what it set: a changed config
reaches the brokers through the metadata log, after the controller has answered."""


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


class TopicOutcome(StrEnum):
    CREATED = "created"
    PRESENT = "present"
    ABSENT = "absent"
    ALIGNED = "aligned"
    NOTHING_TO_ALIGN = "nothing to align"


@dataclass(frozen=True)
class Difference:
    """A setting of an existing topic that is not the one Parley creates it with."""

    key: str  # a config key, or PARTITIONS
    actual: str
    wanted: str

    def __str__(self) -> str:
        return f"{self.key}={self.actual} (Parley sets {self.wanted})"


@dataclass(frozen=True)
class TopicReport:
    """What `ensure_topics` or `align_topics` found or did to one topic. `differences`
    are those found before an alignment: what `ALIGNED` changed, and partitions, which
    nothing changes (more partitions move chats; docs/log.md)."""

    name: str
    outcome: TopicOutcome
    differences: tuple[Difference, ...] = ()

    @property
    def config_differences(self) -> tuple[Difference, ...]:
        return _configs(self.differences)

    def __str__(self) -> str:
        configs = self.config_differences
        partitions = [d for d in self.differences if d.key == PARTITIONS]
        if self.outcome is TopicOutcome.PRESENT and self.differences:
            text = "present, differs: " + ", ".join(map(str, self.differences))
            if configs:
                text += "; run parley topics align"
        elif self.outcome is TopicOutcome.ALIGNED:
            text = "aligned: " + ", ".join(f"{d.key}={d.wanted} (was {d.actual})" for d in configs)
        elif self.outcome is TopicOutcome.ABSENT:
            text = "absent; run parley topics ensure"
        else:
            text = self.outcome.value
        if partitions and self.outcome is not TopicOutcome.PRESENT:
            text += f"; {partitions[0]}"
        if partitions:
            text += "; partitions are never changed (docs/log.md)"
        return text


class TopicsError(Exception):
    """The broker refused an alignment, or did not show it in time."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="parley-topics")


def ensure_topics(settings: Settings) -> list[TopicReport]:
    """Create missing topics; report each existing one as present, with how it differs
    from Parley's settings (never altered here: `align_topics` does that, when asked)."""
    admin = _admin(settings)
    outcome: list[TopicReport] = []
    try:
        existing = set(admin.list_topics())
        specs = topic_specs(settings)
        drift = _differences(admin, [s for s in specs if s.name in existing])
        for spec in specs:
            if spec.name in existing:
                outcome.append(TopicReport(spec.name, TopicOutcome.PRESENT, drift[spec.name]))
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
                outcome.append(TopicReport(spec.name, TopicOutcome.CREATED))
            except TopicAlreadyExistsError:
                outcome.append(TopicReport(spec.name, TopicOutcome.PRESENT))
    finally:
        admin.close()
    return outcome


def align_topics(settings: Settings) -> list[TopicReport]:
    """Set, on each existing topic, the config keys that differ from Parley's, and only
    those (an incremental alter: the topic's other configs stay as the operator set
    them). Partitions are reported, never changed; a missing topic is left to `ensure`."""
    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        specs = topic_specs(settings)
        present = [s for s in specs if s.name in existing]
        drift = _differences(admin, present)
        changes = {
            name: {d.key: d.wanted for d in _configs(found)}
            for name, found in drift.items()
            if _configs(found)
        }
        if changes:
            _alter(admin, changes)
            _await_visible(admin, [s for s in present if s.name in changes])
    finally:
        admin.close()
    outcome: list[TopicReport] = []
    for spec in specs:
        if spec.name not in existing:
            outcome.append(TopicReport(spec.name, TopicOutcome.ABSENT))
        elif spec.name in changes:
            outcome.append(TopicReport(spec.name, TopicOutcome.ALIGNED, drift[spec.name]))
        else:
            outcome.append(TopicReport(spec.name, TopicOutcome.NOTHING_TO_ALIGN, drift[spec.name]))
    return outcome


def _configs(found: tuple[Difference, ...]) -> tuple[Difference, ...]:
    """The differences `align_topics` can set: all but the partition count's."""
    return tuple(d for d in found if d.key != PARTITIONS)


def _differences(
    admin: KafkaAdminClient, specs: list[TopicSpec]
) -> dict[str, tuple[Difference, ...]]:
    """How each existing topic differs from its spec: the effective value of each key
    Parley sets (whether set on the topic or inherited from the broker), and fewer
    partitions than Parley creates (more are the operator's choice, not drift)."""
    if not specs:
        return {}
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name, list(s.config)) for s in specs],
        config_filter="all",
    )["topic"]
    partitions = {
        t["name"]: len(t["partitions"]) for t in admin.describe_topics([s.name for s in specs])
    }
    drift: dict[str, tuple[Difference, ...]] = {}
    for spec in specs:
        configs = described[spec.name]
        found = [
            Difference(key, str(configs[key]["value"]) if key in configs else "unknown", wanted)
            for key, wanted in spec.config.items()
            if key not in configs or configs[key]["value"] != wanted
        ]
        if partitions[spec.name] < spec.partitions:
            found.append(Difference(PARTITIONS, str(partitions[spec.name]), str(spec.partitions)))
        drift[spec.name] = tuple(found)
    return drift


def _alter(admin: KafkaAdminClient, changes: dict[str, dict[str, str]]) -> None:
    # Incremental (KIP-339): only the keys given are set. The older AlterConfigs replaces
    # every dynamic config of the topic with the set sent, so it is never used here.
    result = admin.alter_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, name, configs)
            for name, configs in changes.items()
        ],
        incremental=True,
    )["topic"]
    refused = {name: answer for name, answer in result.items() if answer != "OK"}
    if refused:
        raise TopicsError("topic_align_refused", f"the broker refused {refused}")


def _await_visible(admin: KafkaAdminClient, specs: list[TopicSpec]) -> None:
    deadline = time.monotonic() + ALIGN_VISIBLE_S
    while True:
        drift = _differences(admin, specs)
        left = {name: found for name, found in drift.items() if _configs(found)}
        if not left:
            return
        if time.monotonic() > deadline:
            shown = {name: [str(d) for d in found] for name, found in left.items()}
            raise TopicsError(
                "topic_align_unconfirmed",
                f"accepted, but still not shown after {ALIGN_VISIBLE_S:.0f} s: {shown}",
            )
        time.sleep(0.1)
