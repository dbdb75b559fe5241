"""A gateway SIGKILLed while a client sends: after reconnecting, every acked message is
delivered exactly once and in order, and nothing the sender meant to send is lost."""

from __future__ import annotations

import asyncio

from client import ChatClient
from tests.gateway.conftest import Stack


async def _reconnect(client: ChatClient, deadline_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            await client.reconnect()
            return
        except Exception:  # refused while the gateway restarts, or dropped mid-sync
            if loop.time() > end:
                raise
            await asyncio.sleep(0.2)


def test_a_killed_gateway_loses_and_duplicates_nothing(stack: Stack) -> None:
    commands = stack.services["commands"]
    alice, bob = stack.account(), stack.account()
    total = 60

    async def scenario() -> None:
        a, b = await stack.client(alice), await stack.client(bob)
        first = await a.send_text("m0", to=bob.user_id, local_id="m0")
        chat = first.chat_id
        acked = {0: first}
        for i in range(1, total):
            if i == 20:
                offset = len(commands.text())
                commands.kill()  # mid-stream, with no warning
                commands.start()
                await asyncio.to_thread(commands.wait_for_log, r"commands_listening", 60, offset)
            while i not in acked:
                try:
                    acked[i] = await a.send_text(f"m{i}", chat_id=chat, local_id=f"m{i}")
                except Exception:
                    await _reconnect(a)  # resends what got no ack, same local id
        await _reconnect(b)  # bob's socket died with the gateway too
        await b.wait_until(lambda: b.chats[chat].contiguous == total, timeout_s=60)
        got = [b.chats[chat].messages[seq]["local_id"] for seq in range(1, total + 1)]
        assert got == [f"m{i}" for i in range(total)]
        assert [acked[i].seq for i in range(total)] == list(range(1, total + 1))
        await a.close()
        await b.close()

    asyncio.run(scenario())
