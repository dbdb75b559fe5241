"""Who one may write to, from the user's side: blocking stops the blocker too, a send to
a user that does not exist is refused, and someone else's chat is not confirmed to
exist (docs/auth.md, docs/protocol.md)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from eventsourcing.application import AggregateNotFoundError

from client import ChatClient, CommandFailed, register_and_login
from client.chat import _post
from domain.ids import direct_chat_id
from tests.commands.client import fresh_store
from tests.gateway.conftest import Stack


async def _refused(client: ChatClient, frame: dict[str, Any]) -> str:
    with pytest.raises(CommandFailed) as refused:
        await client.request(frame)
    return refused.value.code


def test_a_blocker_cannot_write_to_the_user_they_blocked(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    bob = register_and_login(stack.base, f"bob_{tag}")
    vic = register_and_login(stack.base, f"vic_{tag}")

    def bob_blocks(action: str) -> dict[str, object]:
        body = {"action": action, "user_id": vic.user_id}
        return _post(stack.base, "/v1/me/blocks", body, token=bob.access_token)

    async def scenario() -> None:
        b, v = await stack.client(bob), await stack.client(vic)
        try:
            before = await b.send_text("before", to=vic.user_id, local_id="kept")
            chat = before.chat_id
            await v.wait_until(lambda: 1 in v.chats[chat].messages)
            assert bob_blocks("block") == {"changed": True}
            # By `to` and by `chat_id`: refused with `blocked`, and nothing reaches vic.
            for where in ({"to": vic.user_id}, {"chat_id": chat}):
                frame = {"type": "send", "local_id": f"l-{uuid.uuid4().hex}", "text": "no"}
                assert await _refused(b, {**frame, **where}) == "blocked"
            await v.request({"type": "ping"})  # a push on its way would have come first
            assert v.texts(chat) == ["before"]
            # A resend of what was stored before the block still answers the original.
            again = await b.send_text("before", to=vic.user_id, local_id="kept")
            assert (again.seq, again.duplicate) == (before.seq, True)
            # Vic may still write (he is not told he is blocked): stored, one tick.
            sent = await v.send_text("hello?", chat_id=chat)
            assert sent.seq == 2
            await b.wait_until(lambda: 2 in b.chats[chat].messages)
            assert b.chats[chat].messages[2]["hidden"] is True
            # Unblocked: bob writes again, and vic gets it with the next seq.
            assert bob_blocks("unblock") == {"changed": True}
            after = await b.send_text("sorry", to=vic.user_id)
            assert after.seq == 3
            await v.wait_until(lambda: 3 in v.chats[chat].messages)
            assert v.texts(chat) == ["before", "hello?", "sorry"]
        finally:
            await b.close()
            await v.close()

    asyncio.run(scenario())


def test_a_send_to_a_user_that_does_not_exist_is_refused_and_stores_nothing(
    stack: Stack,
) -> None:
    alice = stack.account("alice")
    nobody = uuid.uuid4()

    async def scenario() -> None:
        a = await stack.client(alice)
        try:
            frame = {"type": "send", "to": str(nobody), "local_id": "l1", "text": "hi"}
            assert await _refused(a, frame) == "unknown_user"
            assert await _refused(a, frame) == "unknown_user"  # and again: still nothing
            await a.sync()
            assert a.chats == {} or all(not c.messages for c in a.chats.values())
        finally:
            await a.close()

    asyncio.run(scenario())
    store = fresh_store(stack.settings)
    try:
        with pytest.raises(AggregateNotFoundError):
            store.repository.get(direct_chat_id(uuid.UUID(alice.user_id), nobody))
    finally:
        store.close()


def test_someone_elses_chat_answers_like_one_that_does_not_exist(stack: Stack) -> None:
    """`unknown_chat` for a chat one was never in and for a random id alike; `not_member`
    only for a former member, who knows the chat exists."""
    admin, member, stranger = stack.account(), stack.account(), stack.account()

    async def scenario() -> None:
        a, m, s = [await stack.client(x) for x in (admin, member, stranger)]
        try:
            group = await a.create_group("g", [member.user_id])
            await a.send_text("hi", chat_id=group)
            direct = (await a.send_text("psst", to=member.user_id)).chat_id
            await m.wait_until(lambda: group in m.chats and 1 in m.chats[group].messages)
            await a.group("remove_member", group, user_id=member.user_id)

            def frames(chat: str) -> list[dict[str, object]]:
                return [
                    {"type": "send", "chat_id": chat, "local_id": uuid.uuid4().hex, "text": "x"},
                    {"type": "delivered", "chat_id": chat, "up_to": 1},
                    {"type": "read", "chat_id": chat, "up_to": 1},
                ]

            for chat in (group, direct, str(uuid.uuid4())):
                for frame in frames(chat):
                    assert await _refused(s, frame) == "unknown_chat", (chat, frame)
            for frame in frames(group):
                assert await _refused(m, frame) == "not_member", frame
        finally:
            for x in (a, m, s):
                await x.close()

    asyncio.run(scenario())
