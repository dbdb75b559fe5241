"""The command processor over the real Kafka and PostgreSQL: acks, order, idempotency."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from commands.command import Command, CommandType, Outcome
from commands.gateway.bus import CommandBus
from domain.chat import Chat
from domain.ids import direct_chat_id
from infra.event_store import chat_position
from infra.settings import Settings
from tests.commands.client import (
    create_group,
    fresh_store,
    new_users,
    send,
    send_until_acked,
    sent_events,
)
from tests.services import Service, running


@pytest.fixture(scope="module")
def processor(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    log = tmp_path_factory.mktemp("processor") / "processor.log"
    with running("processor", log) as service:
        service.wait_for_log(r"partitions_assigned partitions=\[\d")
        yield service


def test_a_fresh_processor_takes_every_partition_at_its_first_join(
    topics: Settings, processor: Service
) -> None:
    """kafka-python joins with the partitions its metadata held; a processor that joined
    before knowing them got none, then relied on a rejoin that sometimes hung."""
    log = processor.text()
    first = re.search(r"event=partitions_assigned partitions=\[([\d, ]*)\]", log)
    assert first is not None
    assert len(first.group(1).split(",")) == topics.commands_partitions
    assert "No partition metadata" not in log


async def _bus(settings: Settings) -> CommandBus:
    bus = CommandBus(settings, reply_to=f"test-{uuid.uuid4().hex[:8]}")
    await bus.start()
    return bus


def test_concurrent_senders_in_one_group_get_gapless_seqs(
    topics: Settings, processor: Service
) -> None:
    admin, *others = new_users(topics, 20)
    chat_id = uuid.uuid4()
    per_sender = 25

    async def scenario() -> list[Outcome]:
        bus = await _bus(topics)
        try:
            created = await bus.submit(create_group(chat_id, admin, others, bus.reply_to))
            assert created.ok, created
            sends = [
                bus.submit(send(chat_id, user, f"{user}-{i}", f"hi {i}", bus.reply_to))
                for user in [admin, *others]
                for i in range(per_sender)
            ]
            return await asyncio.gather(*sends)
        finally:
            await bus.stop()

    outcomes = asyncio.run(scenario())
    assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:3]
    seqs = sorted(o.result["seq"] for o in outcomes)
    assert seqs == list(range(1, 20 * per_sender + 1))
    assert len({o.result["message_id"] for o in outcomes}) == len(outcomes)
    assert all(isinstance(o.position, int) and o.position > 0 for o in outcomes)

    store = fresh_store(topics)
    events = sent_events(store, chat_id)
    assert [e.seq for e in events] == list(range(1, 20 * per_sender + 1))
    # Snapshots were taken on the way (every 200 events) and a cold load from them
    # gives the same chat as the events.
    assert store.snapshots is not None
    assert list(store.snapshots.get(chat_id, desc=True, limit=1))
    loaded: Chat = store.repository.get(chat_id)
    assert (loaded.last_seq, len(loaded.sent)) == (20 * per_sender, 20 * per_sender)
    by_local = {e.local_id: (str(e.message_id), e.seq) for e in events}
    assert by_local == {
        o.result["local_id"]: (o.result["message_id"], o.result["seq"]) for o in outcomes
    }
    store.close()


def test_a_resend_returns_the_original_and_stores_nothing(
    topics: Settings, processor: Service
) -> None:
    alice, bob = new_users(topics, 2)
    chat_id = direct_chat_id(alice, bob)

    async def scenario() -> tuple[Outcome, Outcome, Outcome]:
        bus = await _bus(topics)
        try:
            first = await bus.submit(send(chat_id, alice, "m1", "hello", bus.reply_to, to=bob))
            again = await bus.submit(send(chat_id, alice, "m1", "hello", bus.reply_to, to=bob))
            other = await bus.submit(send(chat_id, alice, "m2", "there", bus.reply_to, to=bob))
            return first, again, other
        finally:
            await bus.stop()

    first, again, other = asyncio.run(scenario())
    assert first.ok and again.ok and other.ok
    assert (again.result["message_id"], again.result["seq"]) == (
        first.result["message_id"],
        first.result["seq"],
    )
    assert again.result["duplicate"] is True and first.result["duplicate"] is False
    assert other.result["seq"] == first.result["seq"] + 1
    assert again.position is not None and first.position is not None
    # The resend's position is the chat's own (read-your-writes waits on it per chat).
    assert again.position == first.position
    store = fresh_store(topics)
    assert [e.local_id for e in sent_events(store, chat_id)] == ["m1", "m2"]
    assert chat_position(store, chat_id) == other.position
    store.close()


def test_rejections_come_back_with_stable_codes(topics: Settings, processor: Service) -> None:
    admin, member, stranger = new_users(topics, 3)
    chat_id = uuid.uuid4()

    async def scenario() -> dict[str, Outcome]:
        bus = await _bus(topics)
        try:
            assert (await bus.submit(create_group(chat_id, admin, [member], bus.reply_to))).ok
            r = bus.reply_to
            return {
                "stranger_sends": await bus.submit(send(chat_id, stranger, "x", "hi", r)),
                "unknown_chat": await bus.submit(send(uuid.uuid4(), admin, "y", "hi", r)),
                "member_adds": await bus.submit(
                    Command(
                        CommandType.ADD_MEMBER,
                        chat_id,
                        member,
                        {"user_id": str(stranger)},
                        reply_to=r,
                    )
                ),
                "read_future": await bus.submit(
                    Command(CommandType.MARK_READ, chat_id, member, {"up_to": 5}, reply_to=r)
                ),
                "bad_args": await bus.submit(
                    Command(CommandType.MARK_READ, chat_id, member, {"up_to": "x"}, reply_to=r)
                ),
                "too_large": await bus.submit(send(chat_id, admin, "z", "a" * 70_000, r)),
            }
        finally:
            await bus.stop()

    outcomes = asyncio.run(scenario())
    codes = {name: o.error_code for name, o in outcomes.items()}
    assert codes == {
        "stranger_sends": "unknown_chat",  # never in it: not told it exists
        "unknown_chat": "unknown_chat",
        "member_adds": "not_admin",
        "read_future": "invalid_seq",
        "bad_args": "bad_command",
        "too_large": "too_large",
    }
    assert not any(o.ok for o in outcomes.values())


def test_processor_survives_an_unreadable_command(topics: Settings, processor: Service) -> None:
    from kafka import KafkaProducer

    from infra.topics import COMMANDS

    producer = KafkaProducer(bootstrap_servers=topics.kafka_bootstrap)
    producer.send(topics.topic(COMMANDS), key=b"x", value=b"{not json").get(timeout=10)
    producer.close()
    alice, bob = new_users(topics, 2)

    async def scenario() -> Outcome:
        bus = await _bus(topics)
        try:
            return await bus.submit(
                send(direct_chat_id(alice, bob), alice, "after", "ok", bus.reply_to, to=bob)
            )
        finally:
            await bus.stop()

    assert asyncio.run(scenario()).ok
    assert processor.proc is not None and processor.proc.poll() is None


def test_a_processor_killed_mid_batch_loses_and_duplicates_nothing(
    topics: Settings, processor: Service, tmp_path: Path
) -> None:
    """Two processors share the topic; one is SIGKILLed while clients keep sending.

    Clients resend whatever got no answer (same local id) until acked, as the protocol
    says. In the end every message is stored exactly once, with gapless seqs per chat.
    """
    settings = topics.replace(command_timeout_s=3.0)
    pairs = [new_users(topics, 2) for _ in range(24)]
    per_chat = 30
    progress: list[int] = []
    killed_at: list[int] = []
    with running("processor", tmp_path / "second.log") as second:
        second.wait_for_log(r"partitions_assigned partitions=\[\d")

        async def client(a: uuid.UUID, b: uuid.UUID, bus: CommandBus) -> list[Outcome]:
            return await send_until_acked(bus, a, b, per_chat, progress)

        async def scenario() -> list[list[Outcome]]:
            bus = await _bus(settings)
            try:
                work = asyncio.gather(*(client(a, b, bus) for a, b in pairs))
                # Kill the second processor while traffic flows through both: a fifth in.
                async with asyncio.timeout(60):
                    while len(progress) < len(pairs) * per_chat // 5:
                        await asyncio.sleep(0.01)
                second.kill()
                killed_at.append(len(progress))
                return await work
            finally:
                await bus.stop()

        results = asyncio.run(scenario())

    assert killed_at and killed_at[0] < len(pairs) * per_chat  # the kill came mid-stream
    store = fresh_store(topics)
    for (a, b), acked in zip(pairs, results, strict=True):
        events = sent_events(store, direct_chat_id(a, b))
        assert [e.seq for e in events] == list(range(1, per_chat + 1))
        assert [e.local_id for e in events] == [f"m{i}" for i in range(per_chat)]
        assert [(o.result["message_id"], o.result["seq"]) for o in acked] == [
            (str(e.message_id), e.seq) for e in events
        ]
    store.close()


def test_a_processor_told_to_stop_commits_what_it_decided_before_leaving(
    topics: Settings, processor: Service
) -> None:
    """SIGTERM: the processor finishes its batch and commits (unless its idle loop has
    committed already), so the group's committed offsets reach the end of the commands
    topic and its successor decides nothing twice."""
    users = new_users(topics, 2)
    chat_id = direct_chat_id(*users)

    async def scenario() -> None:
        bus = await _bus(topics)
        try:
            for i in range(20):
                command = send(chat_id, users[0], f"s{i}", "t", bus.reply_to, to=users[1])
                assert (await bus.submit(command)).ok
        finally:
            await bus.stop()

    asyncio.run(scenario())
    offset = len(processor.text())
    processor.stop()  # SIGTERM, right after the last answer
    topic = topics.topic("parley.commands")
    # A consumer of the processors' group (theirs: named from the run's topic prefix)
    # that never subscribes: it reads the group's offsets only.
    consumer = KafkaConsumer(
        bootstrap_servers=topics.kafka_bootstrap,
        group_id=topics.replace(processor_group="").processor_group_id,
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(parts)
        used = [tp for tp in parts if ends[tp]]
        assert used, "the commands went somewhere"
        assert {tp: consumer.committed(tp) for tp in used} == {tp: ends[tp] for tp in used}
    finally:
        consumer.close(autocommit=False)
        processor.start()  # for any test after this one
        processor.wait_for_log(r"partitions_assigned partitions=\[\d", after=offset)


def test_a_request_is_answered_once_by_its_outcome_or_by_its_deadline(
    topics: Settings, processor: Service
) -> None:
    """`CommandBus.request`, the gateway's way to wait on a command: a callback, called
    once, with the outcome, or with `TimeoutError` when the deadline passes first (the
    outcome that comes later is dropped)."""
    alice, bob = new_users(topics, 2)
    chat_id = direct_chat_id(alice, bob)

    async def scenario() -> dict[str, list[Outcome | BaseException]]:
        bus = await _bus(topics)
        answers: dict[str, list[Outcome | BaseException]] = {"ok": [], "late": []}
        r = bus.reply_to
        try:
            bus.request(send(chat_id, alice, "1", "hi", r, to=bob), answers["ok"].append)
            bus.request(send(chat_id, alice, "2", "hi", r, to=bob), answers["late"].append, 0.0)
            # The same chat, so decided and answered after both: once this is back, the
            # two outcomes above have come in (and their callbacks were scheduled first).
            third = await bus.submit(send(chat_id, alice, "3", "hi", r, to=bob))
        finally:
            await bus.stop()
        assert third.ok and third.result["seq"] == 3
        return answers

    answers = asyncio.run(scenario())
    (ok,) = answers["ok"]
    assert isinstance(ok, Outcome) and ok.ok and ok.result["seq"] == 1
    (late,) = answers["late"]
    assert isinstance(late, TimeoutError)
