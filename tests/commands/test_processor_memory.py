"""The command processor with an in-memory event store: no server (`make test-unit`).

The composition root hands the processor its store, ids and reply channel; here the
store is the eventsourcing library's in-memory one and the replies land in a list.
"""

from __future__ import annotations

import logging
import uuid
from uuid import UUID

import pytest

from commands.command import Command, CommandType, Outcome, reply_channel
from commands.processor.processor import CommandProcessor
from domain.chat import Chat
from domain.ids import Snowflake, direct_chat_id
from infra.event_store import ChatStore
from infra.settings import Settings
from tests.commands.client import send, sent_events
from tests.commands.test_handlers import MemoryPeople

pytestmark = pytest.mark.unit

GATEWAY = "gw-memory"


class Published:
    """What the processor published, per channel, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def pipeline(self, transaction: bool = True) -> Published:
        return self

    def publish(self, channel: str, message: bytes) -> None:
        self.messages.append((channel, message))

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
