"""The command processor with an in-memory event store: no server (`make test-unit`).

The composition root hands the processor its store, ids and reply channel; here the
store is the eventsourcing library's in-memory one and the replies land in a list.
"""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any
from uuid import UUID

import orjson
import pytest

from commands.command import Command, CommandType, Outcome, reply_channel
from commands.processor.processor import CommandProcessor
from domain.chat import Chat
from domain.ids import Snowflake, direct_chat_id
from infra.event_store import ChatStore
from infra.settings import Settings
from tests.commands.client import create_group, send, sent_events
from tests.commands.test_handlers import MemoryPeople

pytestmark = pytest.mark.unit

GATEWAY = "gw-memory"


class Published:
    """What the processor published, per channel, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pushes: list[tuple[Any, ...]] = []  # the live pushes' route script arguments
        self.joined: list[tuple[str, str, int]] = []  # (parley:joined:<user>, chat, position)

    def pipeline(self, transaction: bool = True) -> Published:
        return self

    def publish(self, channel: str, message: bytes) -> None:
        self.messages.append((channel, message))

    def evalsha(self, sha: str, numkeys: int, *args: Any) -> None:
        self.pushes.append(args)

    def hset(self, name: str, key: str, value: int) -> None:
        self.joined.append((name, key, value))

    def expire(self, name: str, time: int) -> None:
        pass

    def execute(self) -> None:
        pass


def memory_store() -> ChatStore:
    """The store on the eventsourcing library's in-memory recorder, cached as in production."""
    return ChatStore(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.popo",
            "AGGREGATE_CACHE_MAXSIZE": "100",
            "AGGREGATE_CACHE_FASTFORWARD": "n",
            "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
        }
    )


def processor(store: ChatStore, replies: Published) -> CommandProcessor:
    return CommandProcessor(Settings(), store, Snowflake(3), replies, MemoryPeople())


def batch(*commands: Command) -> list[tuple[int, bytes]]:
    return [(0, command.encode()) for command in commands]


def test_a_batch_is_decided_stored_and_answered_on_the_gateways_channel() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat_id = direct_chat_id(alice, bob)
    store, replies = memory_store(), Published()
    outcomes = processor(store, replies).process(
        batch(*(send(chat_id, alice, f"l{n}", "hi", GATEWAY, to=bob) for n in range(3)))
    )
    assert [o.ok for o in outcomes] == [True, True, True]
    assert [o.result["seq"] for o in outcomes if o.result] == [1, 2, 3]
    assert [channel for channel, _ in replies.messages] == [reply_channel(GATEWAY)] * 3
    answered = [Outcome.decode(message) for _, message in replies.messages]
    assert [o.command_id for o in answered] == [o.command_id for o in outcomes]
    assert [e.seq for e in sent_events(store, chat_id)] == [1, 2, 3]  # the store itself


def write_behind_its_back(store: ChatStore, chat_id: UUID, sender: UUID) -> None:
    """Another writer appends to the chat: its events reach the store, not this cache."""
    chat: Chat = store.repository.get(chat_id, version=store.repository.get(chat_id).version)
    chat.send(sender, "tablet", "elsewhere", "text", b"x", None, 999, 0)
    store.seal.prepare([chat])  # its keys, as any writer's save makes them
    store.recorder.insert_events([store.mapper.to_stored_event(e) for e in chat.collect_events()])


def test_an_optimistic_concurrency_conflict_is_decided_again_from_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat_id = direct_chat_id(alice, bob)
    store, replies = memory_store(), Published()
    decider = processor(store, replies)
    decider.process(batch(send(chat_id, alice, "l1", "one", GATEWAY, to=bob)))
    write_behind_its_back(store, chat_id, bob)  # seq 2, unknown to the cached chat
    with caplog.at_level(logging.WARNING, logger="parley.processor"):
        (outcome,) = decider.process(batch(send(chat_id, alice, "l2", "two", GATEWAY)))
    assert "event=conflict attempt=1" in caplog.text
    assert outcome.ok and outcome.result is not None
    assert outcome.result["seq"] == 3  # after the other writer's, not over it
    assert [e.local_id for e in sent_events(store, chat_id)] == ["l1", "elsewhere", "l2"]


def test_a_quiet_command_is_answered_only_if_it_failed() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat_id = direct_chat_id(alice, bob)
    replies = Published()
    decider = processor(memory_store(), replies)
    decider.process(batch(send(chat_id, alice, "l1", "one", GATEWAY, to=bob)))
    replies.messages.clear()
    read_ok = Command(
        CommandType.MARK_READ, chat_id, bob, {"up_to": 1}, reply_to=GATEWAY, quiet=True
    )
    unknown = uuid.uuid4()
    read_bad = Command(
        CommandType.MARK_READ, unknown, bob, {"up_to": 1}, reply_to=GATEWAY, quiet=True
    )
    outcomes = decider.process(batch(read_ok, read_bad))
    assert [o.ok for o in outcomes] == [True, False]
    assert [Outcome.decode(m).ok for _, m in replies.messages] == [False]


def pushed(replies: Published) -> list[tuple[list[str], dict[str, Any], list[str] | None]]:
    """The live pushes the processor queued, as (users, frame, the device not to echo to)."""
    found = []
    for _, _, routed, *frames in replies.pushes:
        batch = orjson.loads(routed)
        for (list_index, skip), frame in zip(batch["items"], frames, strict=True):
            found.append((batch["lists"][list_index - 1], orjson.loads(frame), skip))
    return found


def mark(kind: CommandType, chat_id: UUID, actor: UUID, up_to: int) -> Command:
    return Command(kind, chat_id, actor, {"up_to": up_to}, reply_to=GATEWAY, quiet=True)


def test_a_committed_message_is_pushed_to_its_recipients_but_the_sending_device() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat_id = direct_chat_id(alice, bob)
    replies = Published()
    processor(memory_store(), replies).process(
        batch(send(chat_id, alice, "l1", "hi", GATEWAY, device_id="phone", to=bob))
    )
    opened, message = pushed(replies)
    assert opened[1]["type"] == "chat" and opened[1]["event"] == "DirectChatOpened"
    assert sorted(opened[0]) == sorted([str(alice), str(bob)])
    users, frame, skip = message
    assert sorted(users) == sorted([str(alice), str(bob)])  # alice's other devices too
    assert skip == [str(alice), "phone"]
    assert frame["type"] == "message" and frame["seq"] == 1 and frame["local_id"] == "l1"
    assert frame["position"] > opened[1]["position"] > 0  # for read-your-writes
    assert base64.b64decode(frame["body"]) == b"hi"


def test_a_member_who_blocked_the_sender_gets_the_message_hidden() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat_id = direct_chat_id(alice, bob)
    replies, people = Published(), MemoryPeople()
    people.blocks.add((bob, alice))
    decider = CommandProcessor(Settings(), memory_store(), Snowflake(3), replies, people)
    decider.process(batch(send(chat_id, alice, "l1", "hi", GATEWAY, to=bob)))
    messages = [(users, frame) for users, frame, _ in pushed(replies) if frame["type"] == "message"]
    assert [(users, frame.get("hidden")) for users, frame in messages] == [
        ([str(alice)], None),
        ([str(bob)], True),
    ]
    assert messages[1][1]["body"] is None


def test_a_group_receipt_is_pushed_to_the_senders_it_covers_only() -> None:
    admin, *others = [uuid.uuid4() for _ in range(4)]
    group = uuid.uuid4()
    replies = Published()
    decider = processor(memory_store(), replies)
    decider.process(batch(create_group(group, admin, others, GATEWAY)))
    decider.process(batch(send(group, admin, "l1", "one", GATEWAY)))
    decider.process(batch(send(group, others[0], "l2", "two", GATEWAY)))
    replies.pushes.clear()
    reader = others[2]
    decider.process(batch(mark(CommandType.MARK_DELIVERED, group, reader, 1)))
    decider.process(batch(mark(CommandType.MARK_READ, group, reader, 2)))
    receipts = [(sorted(users), frame) for users, frame, _ in pushed(replies)]
    # Delivered up to 1 covers the admin's message; read up to 2 covers both.
    assert receipts[0][0] == sorted([str(admin), str(reader)])
    assert receipts[0][1]["delivered_up_to"] == 1 and receipts[0][1]["read_up_to"] is None
    assert receipts[1][0] == sorted([str(admin), str(others[0]), str(reader)])
    assert receipts[1][1]["read_up_to"] == 2


def test_a_receipt_for_messages_it_does_not_know_goes_to_every_member() -> None:
    admin, *others = [uuid.uuid4() for _ in range(3)]
    group = uuid.uuid4()
    store = memory_store()
    first = processor(store, Published())
    first.process(batch(create_group(group, admin, others, GATEWAY)))
    first.process(batch(send(group, admin, "l1", "one", GATEWAY)))
    replies = Published()  # a processor that took the partition over: no senders known
    processor(store, replies).process(batch(mark(CommandType.MARK_READ, group, others[0], 1)))
    ((users, frame, _),) = pushed(replies)
    assert frame["type"] == "receipt"
    assert sorted(users) == sorted(str(u) for u in [admin, *others])
