"""Typing again right after a stop is news: the gateway's debounce must not swallow it."""

from __future__ import annotations

import asyncio

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
