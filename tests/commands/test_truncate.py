"""The commands topic emptied behind the processors (commands/processor/truncate.py),
on the real Kafka: only what the group committed goes, only forward, only the partitions
the processor owns; a broker that is away is logged once; a decided send's body leaves
the topic of a running processor."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaPartition
from kafka.admin import NewTopic

from commands.gateway.bus import CommandBus
from commands.processor import metrics, truncate
from commands.processor.truncate import CommandTruncator, admin_config
from domain.ids import direct_chat_id
from infra.settings import Settings, load_settings
from infra.topics import COMMANDS, topic_specs
from parley.wiring import open_truncator
from tests.actions.traces import out_of_commands_topic
from tests.commands.client import new_users, send
from tests.fullstack import free_port
from tests.metrics_text import scrape
from tests.services import running

PARTITIONS = 2
RECORDS = 10  # per partition
MEMBER = "truncate-test-member"


@dataclass
class Scratch:
    """A topic of its own with `RECORDS` records in each partition, and a group whose one
    member (`MEMBER`) owns every partition and commits what a test says."""

    settings: Settings
    topic: str
    group: str
    member: Consumer

    def commit(self, **offsets: int) -> None:
        """Commit `p0=6, p1=3`…: the offset of the next record to decide, per partition."""
        parts = [TopicPartition(self.topic, int(p[1:]), o) for p, o in offsets.items()]
        self.member.commit(offsets=parts, asynchronous=False)

    def truncator(self, member: str = MEMBER) -> CommandTruncator:
        admin = AdminClient(admin_config(self.settings, member))
        return CommandTruncator(admin, self.topic, self.group, member)

    def kept(self) -> dict[int, list[bytes]]:
        """partition -> the values still readable, from the partition's first kept one."""
        reader = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False
        )
        try:
            parts = [KafkaPartition(self.topic, p) for p in range(PARTITIONS)]
            reader.assign(parts)
            reader.seek_to_beginning(*parts)
            ends = reader.end_offsets(parts)
            kept: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
            while any(reader.position(tp) < ends[tp] for tp in parts):
                for tp, records in reader.poll(timeout_ms=500).items():
                    kept[tp.partition] += [r.value for r in records]
            return kept
        finally:
            reader.close()


def body(partition: int, i: int) -> bytes:
    return f"body-{partition}-{i}".encode()


@pytest.fixture
def scratch(topics: Settings) -> Iterator[Scratch]:
    name = f"{topics.topic_prefix}truncate-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=topics.kafka_bootstrap)
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    producer = Producer({"bootstrap.servers": topics.kafka_bootstrap})
    for p in range(PARTITIONS):
        for i in range(RECORDS):
            producer.produce(name, value=body(p, i), partition=p)
    assert producer.flush(30) == 0
    member = Consumer(
        {
            "bootstrap.servers": topics.kafka_bootstrap,
            "group.id": name,
            "client.id": MEMBER,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    assigned = threading.Event()

    def on_assign(_: Consumer, parts: list[TopicPartition]) -> None:
        if parts:
            assigned.set()

    member.subscribe([name], on_assign=on_assign)
    deadline = time.monotonic() + 30
    while not assigned.is_set():
        assert time.monotonic() < deadline, "the member was never assigned the partitions"
        member.poll(0.1)
    try:
        yield Scratch(topics, name, name, member)
    finally:
        member.close()
        admin.delete_topics([name])
        admin.close()


def truncated_total() -> float:
    return sum(metrics.TRUNCATED.values.values())


def test_only_what_the_group_committed_goes(scratch: Scratch) -> None:
    truncator = scratch.truncator()
    assert truncator.truncate() == 0  # nothing committed: nothing goes
    assert scratch.kept() == {p: [body(p, i) for i in range(RECORDS)] for p in range(PARTITIONS)}

    before = truncated_total()
    scratch.commit(p0=6, p1=3)
    assert truncator.truncate() == 9
    assert truncated_total() - before == 9
    # Everything from the committed offset on is still there, to be redelivered.
    assert scratch.kept() == {
        0: [body(0, i) for i in range(6, RECORDS)],
        1: [body(1, i) for i in range(3, RECORDS)],
    }
    assert truncator.truncate() == 0  # nothing moved


def test_only_forward_and_only_the_partitions_it_owns(scratch: Scratch) -> None:
    truncator = scratch.truncator()
    scratch.commit(p0=8, p1=2)
    assert scratch.truncator(member="another-processor").truncate() == 0  # owns nothing
    assert [len(v) for v in scratch.kept().values()] == [RECORDS, RECORDS]
    assert truncator.truncate() == 10

    scratch.commit(p0=4, p1=5)  # the group's offset moved back on p0 (a reset, by hand)
    assert truncator.truncate() == 3  # p1 only: nothing comes back, nothing more goes
    assert scratch.kept() == {
        0: [body(0, i) for i in range(8, RECORDS)],
        1: [body(1, i) for i in range(5, RECORDS)],
    }
    # A truncator new to the partitions (a processor taking them over) counts only what
    # it deletes itself.
    scratch.commit(p0=8, p1=7)
    assert CommandTruncator(truncator.admin, scratch.topic, scratch.group, MEMBER).truncate() == 2


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_broker_away_is_logged_once_and_the_passes_go_on(
    scratch: Scratch, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(truncate, "REQUEST_TIMEOUT_S", 0.3)
    truncator = scratch.truncator()
    working = truncator.admin
    truncator.admin = AdminClient(
        admin_config(scratch.settings.replace(kafka_bootstrap="127.0.0.1:9"), MEMBER)
    )
    errors = sum(metrics.TRUNCATE_ERRORS.values.values())
    scratch.commit(p0=5, p1=5)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="parley.processor")
    thread = threading.Thread(target=truncator.run, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        wait_for(lambda: sum(metrics.TRUNCATE_ERRORS.values.values()) >= errors + 3, "3 failures")
        assert [len(v) for v in scratch.kept().values()] == [RECORDS, RECORDS]
        truncator.admin = working  # the broker is back
        wait_for(lambda: [len(v) for v in scratch.kept().values()] == [5, 5], "truncated")
    finally:
        stop.set()
        thread.join(timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "parley.processor"]
    assert len([m for m in lines if "event=commands_truncate_failed" in m]) == 1, lines
    assert len([m for m in lines if "event=commands_truncate_resumed" in m]) == 1, lines


def test_a_decided_send_leaves_the_commands_topic(
    topics: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A running processor: the bodies of the sends it acked are soon unreadable from
    the commands topic, the last one too (acked within a commit interval of the one
    before it, with no traffic after it), and `/metrics` counts what went."""
    port = free_port()
    env = {
        "PARLEY_COMMANDS_TRUNCATE_INTERVAL_S": "0.5",
        "PARLEY_PROCESSOR_METRICS_PORT": str(port),
    }
    log = tmp_path_factory.mktemp("truncate") / "processor.log"
    alice, bob = new_users(topics, 2)
    secrets = [f"plaintext {i} {uuid.uuid4().hex}" for i in range(3)]
    with running("processor", log, env) as processor:
        processor.wait_for_log(r"partitions_assigned partitions=\[\d")

        async def scenario() -> None:
            bus = CommandBus(topics, reply_to=f"test-{uuid.uuid4().hex[:8]}")
            await bus.start()
            try:
                chat = direct_chat_id(alice, bob)
                for i, secret in enumerate(secrets):
                    sent = send(chat, alice, f"s{i}", secret, bus.reply_to, to=bob)
                    assert (await bus.submit(sent)).ok
            finally:
                await bus.stop()

        asyncio.run(scenario())
        for secret in secrets:
            out_of_commands_topic(topics, secret.encode())
        assert scrape(f"http://127.0.0.1:{port}")["parley_processor_commands_truncated_total"] >= 1
        assert "commands_truncate_failed" not in processor.text()


@pytest.mark.unit
def test_the_interval_setting_turns_the_truncation_on_and_off() -> None:
    off = load_settings({"PARLEY_COMMANDS_TRUNCATE_INTERVAL_S": "0", "PARLEY_TOPIC_PREFIX": "x."})
    assert open_truncator(off, "parley-processor-1") is None
    on = off.replace(commands_truncate_interval_s=5.0)
    truncator = open_truncator(on, "parley-processor-1")
    assert truncator is not None
    assert (truncator.topic, truncator.group, truncator.member) == (
        "x.parley.commands",
        "x.parley-processor",
        "parley-processor-1",
    )


@pytest.mark.unit
def test_the_commands_topic_closes_its_segments_hourly_and_keeps_a_week_at_most() -> None:
    (commands,) = [s for s in topic_specs(Settings()) if s.name == COMMANDS]
    assert int(commands.config["segment.ms"]) == 3600 * 1000
    assert int(commands.config["retention.ms"]) == 7 * 24 * 3600 * 1000
