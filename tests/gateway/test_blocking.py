"""Blocking over the WebSocket: a blocked user's messages reach the blocker as hidden
seqs (live and by sync), and neither side sees the other's receipts."""

from __future__ import annotations

import asyncio
import json
import uuid

from client import register_and_login
from client.chat import _post
from tests.gateway.conftest import Stack


def test_a_blocked_users_messages_reach_the_blocker_as_hidden_seqs(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    alice = register_and_login(stack.base, f"alice_{tag}")
    bob = register_and_login(stack.base, f"bob_{tag}")

    def bob_blocks(action: str) -> None:
        _post(
            stack.base,
            "/v1/me/blocks",
            {"action": action, "user_id": alice.user_id},
            token=bob.access_token,
        )

    bob_blocks("block")

    async def scenario() -> None:
        a, b = await stack.client(alice), await stack.client(bob)
        b_other = await stack.client(bob, auto_delivered=False)  # bob's second device
        try:
            ack = await a.send_text("from alice", to=bob.user_id)
            chat = ack.chat_id
            # Live: bob holds seq 1 (no gap to sync for) but nothing of what alice wrote.
            await b.wait_until(lambda: 1 in b.chats[chat].messages)
            assert b.chats[chat].messages[1]["hidden"] is True
            assert b.texts(chat) == [] and "from alice" not in json.dumps(b.frames)

            # Bob's client acknowledged it. His other device hears his receipt; alice must
            # not, nor the device that acknowledged (it knows). One publish carries the
            # receipt to all of them, and frames reach a connection in order, so pings
            # answered after the other device saw it prove none was on its way.
            def receipts(frames: list[dict[str, object]]) -> list[dict[str, object]]:
                return [f for f in frames if f.get("type") == "receipt"]

            await b_other.wait_until(lambda: bool(receipts(b_other.frames)))
            await a.request({"type": "ping"})
            await b.request({"type": "ping"})
            assert a.ticks(chat, ack.seq) == "sent"
            assert not receipts(a.frames) and not receipts(b.frames)
            # By sync: the same for a new device of bob, and alice sees no cursor of bob.
            b2, a2 = await stack.client(bob), await stack.client(alice)
            assert b2.chats[chat].contiguous == 0  # a new device: it asks from seq 1
            await b2.sync()
            await a2.sync()
            assert b2.chats[chat].messages[1]["hidden"] is True and b2.texts(chat) == []
            assert a2.chats[chat].cursors[bob.user_id] == {"delivered": None, "read": None}
            assert a2.ticks(chat, ack.seq) == "sent"
            # Unblocked: what alice sends next is shown, and her ticks move again.
            bob_blocks("unblock")
            second = await a.send_text("after", chat_id=chat)
            await b.wait_until(lambda: second.seq in b.chats[chat].messages)
            assert b.texts(chat) == ["after"]
            await a.wait_until(lambda: a.ticks(chat, second.seq) == "delivered")
            for client in (b2, a2):
                await client.close()
        finally:
            await a.close()
            await b.close()
            await b_other.close()

    asyncio.run(scenario())
