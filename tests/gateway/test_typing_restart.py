"""Typing: again right after a stop is news (the debounce must not swallow it), and it is
not shown between two users when either blocked the other."""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

from client import ChatClient, register_and_login
from client.chat import _post
from tests.gateway.conftest import Stack


def test_a_start_right_after_a_stop_shows_again(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()

    async def scenario() -> None:
        a, b = await stack.client(alice), await stack.client(bob)
        try:
            chat = (await a.send_text("hi", to=bob.user_id)).chat_id
            await b.wait_until(lambda: 1 in b.chats[chat].messages)
            await a.typing(chat, "start")
            await b.wait_until(lambda: alice.user_id in b.typists[chat])
            await a.typing(chat, "stop")
            await b.wait_until(lambda: alice.user_id not in b.typists[chat])
            await a.typing(chat, "start")  # well within the 2 s debounce of the first start
            await b.wait_until(lambda: alice.user_id in b.typists[chat], timeout_s=5)
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_typing_is_not_shown_between_users_when_either_blocked_the_other(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = (register_and_login(stack.base, f"{n}_{tag}") for n in "abc")
    _post(
        stack.base,
        "/v1/me/blocks",
        {"action": "block", "user_id": alice.user_id},
        token=bob.access_token,
    )

    async def scenario() -> None:
        a, b, c = [await stack.client(u) for u in (alice, bob, carol)]
        try:
            chat = await c.create_group("three", [alice.user_id, bob.user_id])
            await c.send_text("hello", chat_id=chat)  # once both hold it, the group is projected
            for client in (a, b):
                await client.wait_until(partial(_holds, client, chat))
            for typist, sees, blind in ((a, c, b), (b, c, a)):
                await typist.typing(chat, "start")
                await sees.wait_until(partial(_sees_typing, sees, typist, chat))
                # Frames reach one connection in order: had the typing frame been pushed
                # to the blocked side, it would be there before the answer to this ping.
                await blind.request({"type": "ping"})
                assert typist.user_id not in blind.typists[chat]
                await typist.typing(chat, "stop")
            # Carol, whom nobody blocked, is shown to both.
            await c.typing(chat, "start")
            await a.wait_until(lambda: carol.user_id in a.typists[chat])
            await b.wait_until(lambda: carol.user_id in b.typists[chat])
        finally:
            for client in (a, b, c):
                await client.close()

    asyncio.run(scenario())


def test_typing_in_a_chat_the_gateway_just_refused_works_once_the_chat_exists(
    stack: Stack,
) -> None:
    alice, bob = stack.account(), stack.account()

    async def scenario() -> None:
        a, b = await stack.client(alice), await stack.client(bob)
        try:
            chat = str(uuid.uuid4())
            await a.typing(chat, "start")  # no such chat yet: refused
            await a.wait_until(
                lambda: any(f.get("code") == "unknown_chat" for f in a.frames), timeout_s=5
            )
            await a.request(
                {"type": "create_group", "name": "new", "chat_id": chat, "members": [bob.user_id]}
            )
            await a.send_text("hello", chat_id=chat)
            await b.wait_until(lambda: 1 in b.chats[chat].messages)  # projected
            await a.typing(chat, "start")  # shown at once, not after the refusal's cache
            await b.wait_until(lambda: alice.user_id in b.typists[chat], timeout_s=3)
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def _holds(client: ChatClient, chat: str) -> bool:
    return 1 in client.chats[chat].messages


def _sees_typing(client: ChatClient, typist: ChatClient, chat: str) -> bool:
    return typist.user_id in client.typists[chat]
