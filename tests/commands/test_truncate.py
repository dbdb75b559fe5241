"""The commands topic emptied behind the processors (commands/processor/truncate.py),
on the real Kafka: only what the consumer committed and the group accepted goes, only
forward; a pass with nothing due asks nothing; a broker that is away is logged once and
holds up neither the consumer's thread nor the shutdown; a decided send's body leaves
the topic of a running processor, also across a Kafka killed and restarted."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaPartition
from kafka.admin import NewTopic

from bench.servers import free_port
from commands.gateway.bus import CommandBus
from commands.processor import metrics, truncate
from commands.processor.truncate import CommandTruncator, open_admin, truncating
from domain.ids import direct_chat_id
from infra.settings import Settings, load_settings
from infra.stack.kafka import Kafka
from infra.topics import COMMANDS, ensure_topics, topic_specs
from parley.wiring import open_truncator
from tests.actions.traces import in_topic, out_of_commands_topic
from tests.commands.client import new_users, send, send_until_acked
from tests.metrics_text import scrape
from tests.private_kafka import private_kafka
from tests.services import running

PARTITIONS = 2
RECORDS = 10  # per partition
MEMBER = "truncate-test-member"


@dataclass
class Scratch:
    """A topic of its own with `RECORDS` records in each partition, and a group whose one
    member (`MEMBER`) owns every partition and commits what a test says, telling the
    truncator as a processor's consumer does."""

    settings: Settings
    topic: str
    member: Consumer
    truncator: CommandTruncator

    def commit(self, **offsets: int) -> None:
        """Commit `p0=6, p1=3`…: the offset of the next record to decide, per partition;
        asynchronously, as the processor does, and wait until the truncator is told."""
        wanted = {int(p[1:]): o for p, o in offsets.items()}
        parts = [TopicPartition(self.topic, p, o) for p, o in wanted.items()]
        self.member.commit(offsets=parts, asynchronous=True)
        deadline = time.monotonic() + 10
        while not self._told(wanted):
            assert time.monotonic() < deadline, f"the commit of {offsets} was never reported"
            self.member.consume(num_messages=100, timeout=0.05)  # serves the callback

    def _told(self, wanted: dict[int, int]) -> bool:
        due, done = self.truncator.due(), self.truncator.truncated_to
        return all(max(due.get(p, -1), done.get(p, -1)) >= o for p, o in wanted.items())

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


def joined(settings: Settings, group: str, client_id: str, **config: object) -> Consumer:
    """A consumer of `group` that has been assigned every partition of `group` (the
    scratch topic's name)."""
    member = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **config,
        }
    )
    assigned = threading.Event()

    def on_assign(_: Consumer, parts: list[TopicPartition]) -> None:
        if parts:
            assigned.set()

    member.subscribe([group], on_assign=on_assign)
    deadline = time.monotonic() + 30
    while not assigned.is_set():
        assert time.monotonic() < deadline, "the member was never assigned the partitions"
        member.poll(0.1)
    return member


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
    truncator = CommandTruncator(partial(open_admin, topics, MEMBER), name)
    member = joined(topics, name, MEMBER, on_commit=truncator.committed)
    try:
        yield Scratch(topics, name, member, truncator)
    finally:
        truncator.close()
        member.close()
        admin.delete_topics([name])
        admin.close()


def truncated_total() -> float:
    return sum(metrics.TRUNCATED.values.values())


def test_only_what_the_consumer_committed_goes(scratch: Scratch) -> None:
    truncator = scratch.truncator
    assert truncator.truncate() == 0  # nothing committed: nothing goes
    assert truncator.admin is None  # and nothing was asked: a quiet pass costs no request
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


def test_only_forward(scratch: Scratch) -> None:
    truncator = scratch.truncator
    scratch.commit(p0=8, p1=2)
    assert truncator.truncate() == 10

    scratch.commit(p0=4, p1=5)  # the group's offset moved back on p0 (a reset, by hand)
    assert truncator.truncate() == 3  # p1 only: nothing comes back, nothing more goes
    assert scratch.kept() == {
        0: [body(0, i) for i in range(8, RECORDS)],
        1: [body(1, i) for i in range(5, RECORDS)],
    }
    # A truncator new to the partitions (a processor taking them over) counts only what
    # it deletes itself.
    successor = CommandTruncator(partial(open_admin, scratch.settings, "successor"), scratch.topic)
    try:
        successor.committed(
            None, [TopicPartition(scratch.topic, 0, 8), TopicPartition(scratch.topic, 1, 7)]
        )
        assert successor.truncate() == 2
    finally:
        successor.close()


def test_a_commit_the_group_refuses_hands_nothing_over(scratch: Scratch) -> None:
    """A consumer that is not (or no longer) the partitions' member, as a processor that
    lost them without noticing: the group refuses its commit, and nothing is deleted."""
    outsider = CommandTruncator(partial(open_admin, scratch.settings, "outsider"), scratch.topic)
    reports: list[KafkaError | None] = []

    def on_commit(error: KafkaError | None, parts: list[TopicPartition] | None) -> None:
        reports.append(error)
        outsider.committed(error, parts)

    stranger = Consumer(
        {
            "bootstrap.servers": scratch.settings.kafka_bootstrap,
            "group.id": scratch.topic,  # the member's group, which has a live member
            "enable.auto.commit": False,
            "on_commit": on_commit,
        }
    )
    try:
        parts = [TopicPartition(scratch.topic, p, 7) for p in range(PARTITIONS)]
        stranger.commit(offsets=parts, asynchronous=True)
        deadline = time.monotonic() + 10
        while not reports:
            assert time.monotonic() < deadline, "the commit was never reported"
            stranger.poll(0.05)
        assert reports[0] is not None, "the group accepted a stranger's commit"
        assert outsider.truncate() == 0
        assert outsider.admin is None
        assert [len(v) for v in scratch.kept().values()] == [RECORDS, RECORDS]
    finally:
        stranger.close()
        outsider.close()


@pytest.mark.unit
def test_only_the_accepted_offsets_of_its_topic_become_due() -> None:
    truncator = CommandTruncator(_no_admin, "x.parley.commands")
    truncator.committed(
        KafkaError(KafkaError.ILLEGAL_GENERATION), [TopicPartition("x.parley.commands", 0, 5)]
    )
    truncator.committed(None, None)
    truncator.committed(
        None, [TopicPartition("other", 0, 9), TopicPartition("x.parley.commands", 1, -1001)]
    )
    assert truncator.due() == {}
    truncator.committed(None, [TopicPartition("x.parley.commands", 2, 4)])
    truncator.committed(None, [TopicPartition("x.parley.commands", 2, 3)])  # never back
    assert truncator.due() == {2: 4}


def _no_admin() -> KafkaAdminClient:
    raise AssertionError("no admin client wanted here")


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_broker_away_is_logged_once_and_the_passes_go_on(
    scratch: Scratch, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(truncate, "REQUEST_TIMEOUT_S", 0.3)
    away = scratch.settings.replace(kafka_bootstrap="127.0.0.1:9")
    broker = [away]  # where the next admin client connects
    truncator = scratch.truncator
    truncator.open_admin = lambda: open_admin(broker[0], MEMBER)
    errors = sum(metrics.TRUNCATE_ERRORS.values.values())
    scratch.commit(p0=5, p1=5)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="parley.processor")
    thread = threading.Thread(target=truncator.run, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        wait_for(lambda: sum(metrics.TRUNCATE_ERRORS.values.values()) >= errors + 3, "3 failures")
        assert [len(v) for v in scratch.kept().values()] == [RECORDS, RECORDS]
        assert io_threads(f"{MEMBER}-truncate") <= 1  # the one connecting now, if any
        broker[0] = scratch.settings  # the broker is back
        wait_for(lambda: [len(v) for v in scratch.kept().values()] == [5, 5], "truncated")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert io_threads(f"{MEMBER}-truncate") == 0  # none left by failed connections, or after
    lines = [r.getMessage() for r in caplog.records if r.name == "parley.processor"]
    assert len([m for m in lines if "event=commands_truncate_failed" in m]) == 1, lines
    assert len([m for m in lines if "event=commands_truncate_resumed" in m]) == 1, lines


def io_threads(client_id: str) -> int:
    """kafka-python's IO threads of the clients named `client_id`, alive."""
    return sum(t.name == f"kafka-io-{client_id}" for t in threading.enumerate())


@pytest.mark.unit
def test_a_stuck_pass_holds_up_neither_the_commits_nor_the_shutdown() -> None:
    """An admin client stuck on a broker that does not answer: the consumer's commit
    callback still returns at once, and the processor's shutdown waits `LAST_PASS_S`."""
    entered, release = threading.Event(), threading.Event()

    def stuck() -> KafkaAdminClient:
        entered.set()
        release.wait(30)
        raise TimeoutError("no broker")

    topic = "x.parley.commands"
    truncator = CommandTruncator(stuck, topic)
    try:
        with truncating(truncator, 0.01):
            truncator.committed(None, [TopicPartition(topic, 0, 5)])
            assert entered.wait(10), "the pass never started"
            started = time.monotonic()
            for offset in range(6, 1006):
                truncator.committed(None, [TopicPartition(topic, 0, offset)])
            assert time.monotonic() - started < 0.5  # a thousand commits, never waiting
            stopping = time.monotonic()
        assert time.monotonic() - stopping < truncate.LAST_PASS_S + 0.5
    finally:
        release.set()


def processor_env(port: int, **more: str) -> dict[str, str]:
    return {"PARLEY_PROCESSOR_METRICS_PORT": str(port), **more}


def test_a_decided_send_leaves_the_commands_topic(
    topics: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A running processor: the bodies of the sends it acked are soon unreadable from
    the commands topic, the last one too (acked within a commit interval of the one
    before it, with no traffic after it), and `/metrics` counts what went."""
    port = free_port()
    env = processor_env(port, PARLEY_COMMANDS_TRUNCATE_INTERVAL_S="0.5")
    log = tmp_path_factory.mktemp("truncate") / "processor.log"
    alice, bob = new_users(topics, 2)
    secrets = [f"plaintext {i} {uuid.uuid4().hex}" for i in range(3)]
    with running("processor", log, env) as processor:
        processor.wait_for_log(r"partitions_assigned partitions=\[\d")
        asyncio.run(_send(topics, alice, bob, secrets))
        for secret in secrets:
            out_of_commands_topic(topics, secret.encode())
        assert scrape(f"http://127.0.0.1:{port}")["parley_processor_commands_truncated_total"] >= 1
        assert "commands_truncate_failed" not in processor.text()


def test_a_stopping_processor_deletes_what_it_committed_last(
    topics: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With the default interval (5 s) and no command after the last: the processor's
    last commit, made as it stops, is cut before it exits."""
    assert load_settings({}).commands_truncate_interval_s == 5.0
    log = tmp_path_factory.mktemp("truncate") / "processor.log"
    alice, bob = new_users(topics, 2)
    secret = f"plaintext {uuid.uuid4().hex}"
    with running("processor", log, processor_env(free_port())) as processor:
        processor.wait_for_log(r"partitions_assigned partitions=\[\d")
        asyncio.run(_send(topics, alice, bob, [secret]))
    assert processor.proc is not None and processor.proc.returncode == 0, processor.text()[-2000:]
    assert "event=offsets_committed_on_stop" in processor.text()
    assert not in_topic(topics, topics.topic(COMMANDS), secret.encode())


async def _send(settings: Settings, alice: uuid.UUID, bob: uuid.UUID, texts: list[str]) -> None:
    bus = CommandBus(settings, reply_to=f"test-{uuid.uuid4().hex[:8]}")
    await bus.start()
    try:
        chat = direct_chat_id(alice, bob)
        for i, text in enumerate(texts):
            assert (await bus.submit(send(chat, alice, f"s{i}", text, bus.reply_to, to=bob))).ok
    finally:
        await bus.stop()


KILLS = 2


def test_a_processor_that_truncates_survives_kafka_killed_and_restarted(
    topics: Settings, base_settings: Settings, tmp_path: Path
) -> None:
    """Kafka (a broker of the test's own) SIGKILLed under sends and started again, twice:
    the processor lives on, acks the sends made once Kafka is back, and goes on
    deleting what it decides. (librdkafka's admin client, which the truncator used,
    aborted the processor on an assertion right after Kafka came back: docs/log.md.)"""
    with private_kafka(base_settings, tmp_path) as kafka:
        settings = topics.replace(kafka_bootstrap=kafka.settings.kafka_bootstrap)
        ensure_topics(settings)
        env = processor_env(
            free_port(),
            PARLEY_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
            PARLEY_COMMANDS_TRUNCATE_INTERVAL_S="0.5",
        )
        alice, bob = new_users(settings, 2)
        with running("processor", tmp_path / "processor.log", env) as processor:
            processor.wait_for_log(r"partitions_assigned partitions=\[\d")
            asyncio.run(_sends_across_kills(settings, kafka, alice, bob))
            assert processor.proc is not None and processor.proc.poll() is None, "it died"
            after = f"after the kills {uuid.uuid4().hex}"
            asyncio.run(_send(settings, alice, bob, [after]))
            out_of_commands_topic(settings, after.encode())
            text = processor.text()
        assert "Assertion" not in text
        print(f"\n{KILLS} kills: {text.count('event=commands_truncate_failed')} outages logged")


async def _sends_across_kills(
    settings: Settings, kafka: Kafka, alice: uuid.UUID, bob: uuid.UUID
) -> None:
    """Sends one after another while Kafka is killed and restarted `KILLS` times."""
    bus = CommandBus(settings, reply_to=f"test-{uuid.uuid4().hex[:8]}")
    await bus.start()
    progress: list[int] = []
    try:
        sender = asyncio.create_task(send_until_acked(bus, alice, bob, 10_000, progress))
        for _ in range(KILLS):
            await _until(lambda: len(progress) >= 20, sender)
            pid = kafka.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(_wait_dead, kafka)
            await asyncio.to_thread(kafka.up)
            progress.clear()
        await _until(lambda: len(progress) >= 20, sender)  # acked again after the last
        sender.cancel()
    finally:
        await bus.stop()


async def _until(
    condition: Callable[[], bool], sender: asyncio.Task[object], deadline_s: float = 60.0
) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if sender.done():
            sender.result()  # its failure, raised
        assert time.monotonic() < deadline, "no progress"
        await asyncio.sleep(0.05)


def _wait_dead(kafka: Kafka) -> None:
    deadline = time.monotonic() + 10
    while kafka.pid() is not None:  # (a killed child of this process is a zombie: dead)
        assert time.monotonic() < deadline, "kafka outlived SIGKILL"
        time.sleep(0.05)


@pytest.mark.unit
def test_the_truncation_is_on_by_default_and_0_turns_it_off() -> None:
    on = load_settings({"PARLEY_TOPIC_PREFIX": "x."})
    assert on.commands_truncate_interval_s == 5.0
    truncator = open_truncator(on, "parley-processor-1")
    assert truncator is not None
    assert truncator.topic == "x.parley.commands"
    assert truncator.admin is None  # it connects in its own thread, on its first pass
    off = load_settings({"PARLEY_COMMANDS_TRUNCATE_INTERVAL_S": "0", "PARLEY_TOPIC_PREFIX": "x."})
    assert open_truncator(off, "parley-processor-1") is None


@pytest.mark.unit
def test_the_commands_topic_closes_its_segments_hourly_and_keeps_a_week_at_most() -> None:
    (commands,) = [s for s in topic_specs(Settings()) if s.name == COMMANDS]
    assert int(commands.config["segment.ms"]) == 3600 * 1000
    assert int(commands.config["retention.ms"]) == 7 * 24 * 3600 * 1000
