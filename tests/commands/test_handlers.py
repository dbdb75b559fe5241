"""The command handlers against an in-memory store of chats: no server (`make test-unit`)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import pytest

from commands.command import BadCommand, Command, CommandType
from commands.processor.handlers import HANDLERS, Context, Limits
from domain.account_errors import UnknownUser
from domain.chat import Chat
from domain.errors import UnknownChat
from domain.ids import Snowflake, direct_chat_id

pytestmark = pytest.mark.unit


class MemoryChats:
    """The `Chats` a handler works on, held in a dict."""

    def __init__(self) -> None:
        self.chats: dict[UUID, Chat] = {}

    def get(self, chat_id: UUID) -> Chat | None:
        return self.chats.get(chat_id)

    def add(self, chat: Chat) -> None:
        self.chats[chat.id] = chat


class MemoryPeople:
    """What the handlers know of users, held in memory: everyone exists unless listed
    as absent; blocks as (blocker, blocked) pairs."""

    def __init__(self, absent: set[UUID] | None = None) -> None:
        self.absent = absent or set()
        self.blocks: set[tuple[UUID, UUID]] = set()

    def prepare(self, senders: Iterable[UUID], named: Iterable[UUID]) -> None:
        pass

    def exists(self, user_id: UUID) -> bool:
        return user_id not in self.absent

    def has_blocked(self, user_id: UUID, other: UUID) -> bool:
        return (user_id, other) in self.blocks


def context(chats: MemoryChats, people: MemoryPeople | None = None) -> Context:
    limits = Limits(max_body_bytes=1024, max_group_members=4)
    return Context(chats, Snowflake(7), limits, people or MemoryPeople())


def run(
    ctx: Context, type_: CommandType, chat_id: UUID, actor: UUID, **args: object
) -> dict[str, Any]:
    return HANDLERS[type_](ctx, Command(type_, chat_id, actor, dict(args), device_id="phone"))


def body(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_first_send_opens_the_direct_chat_and_a_resend_gets_the_same_answer() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat_id = direct_chat_id(alice, bob)
    chats = MemoryChats()
    ctx = context(chats)
    args = {"to": str(bob), "local_id": "l1", "kind": "text", "body": body("hi")}
    first = run(ctx, CommandType.SEND, chat_id, alice, **args)
    again = run(ctx, CommandType.SEND, chat_id, alice, **args)
    assert first["seq"] == 1 and not first["duplicate"]
    assert (again["message_id"], again["seq"], again["duplicate"]) == (
        first["message_id"],
        1,
        True,
    )
    assert chats.chats[chat_id].last_seq == 1


def test_receipts_move_the_recipients_cursors() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat_id = direct_chat_id(alice, bob)
    ctx = context(MemoryChats())
    for n in (1, 2):
        args = {"to": str(bob), "local_id": f"l{n}", "kind": "text", "body": body("x")}
        run(ctx, CommandType.SEND, chat_id, alice, **args)
    assert run(ctx, CommandType.MARK_DELIVERED, chat_id, bob, up_to=2) == {"delivered_up_to": 2}
    assert run(ctx, CommandType.MARK_READ, chat_id, bob, up_to=1) == {"read_up_to": 1}


def test_a_chat_that_does_not_exist_or_is_not_the_actors_is_unknown() -> None:
    alice, bob, eve = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ctx = context(MemoryChats())
    with pytest.raises(UnknownChat):
        run(ctx, CommandType.MARK_READ, uuid.uuid4(), alice, up_to=1)
    group = uuid.uuid4()
    created = run(ctx, CommandType.CREATE_GROUP, group, alice, name="g", members=[str(bob)])
    assert created == {"chat_id": str(group), "created": True}
    with pytest.raises(UnknownChat):  # never confirm that someone else's chat exists
        run(ctx, CommandType.RENAME_GROUP, group, eve, name="mine")
    with pytest.raises(UnknownChat):  # nor by re-creating it
        run(ctx, CommandType.CREATE_GROUP, group, eve, name="g", members=[])


def test_malformed_arguments_are_bad_commands() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    ctx = context(MemoryChats())
    with pytest.raises(BadCommand):  # the chat id is not alice and bob's direct chat
        run(ctx, CommandType.OPEN_DIRECT, uuid.uuid4(), alice, to=str(bob))
    with pytest.raises(BadCommand):
        run(ctx, CommandType.OPEN_DIRECT, uuid.uuid4(), alice, to="not-a-user")
    chat_id = direct_chat_id(alice, bob)
    run(ctx, CommandType.OPEN_DIRECT, chat_id, alice, to=str(bob))
    with pytest.raises(BadCommand):
        run(ctx, CommandType.MARK_READ, chat_id, bob, up_to="1")
    with pytest.raises(BadCommand):
        run(ctx, CommandType.SEND, chat_id, alice, local_id="l", kind="text", body=1)
    with pytest.raises(BadCommand):
        run(ctx, CommandType.CREATE_GROUP, uuid.uuid4(), alice, name="g", members="bob")


def test_a_first_send_to_someone_who_does_not_exist_is_unknown_user() -> None:
    alice, nobody = uuid.uuid4(), uuid.uuid4()
    chats = MemoryChats()
    ctx = context(chats, MemoryPeople(absent={nobody}))
    args = {"to": str(nobody), "local_id": "l1", "kind": "text", "body": body("hi")}
    with pytest.raises(UnknownUser):
        run(ctx, CommandType.SEND, direct_chat_id(alice, nobody), alice, **args)
    assert chats.chats == {}  # no chat was opened
