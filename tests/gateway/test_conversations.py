"""End to end over real sockets: two users chat, ticks turn, offline users catch up."""

from __future__ import annotations

import asyncio
import json
from functools import partial

import pytest
import websockets

from client import ChatClient, CommandFailed
from tests.gateway.conftest import Stack


def test_two_users_chat_and_the_ticks_turn(stack: Stack) -> None:
    alice, bob = stack.account("alice"), stack.account("bob")

    async def scenario() -> None:
        a, b = await stack.client(alice), await stack.client(bob)
        try:
            ack = await a.send_text("hello bob", to=bob.user_id)  # the single tick
            assert (ack.seq, ack.duplicate) == (1, False)
            chat = ack.chat_id
            await b.wait_until(lambda: 1 in b.chats[chat].messages)
            assert b.text_of(chat, 1) == "hello bob"
            # bob's client acked delivery by itself: alice sees two ticks
            await a.wait_until(lambda: a.ticks(chat, 1) == "delivered")
            await b.mark_read(chat, 1)
            await a.wait_until(lambda: a.ticks(chat, 1) == "read")
            reply = await b.send_text("hi alice", chat_id=chat)
            assert reply.seq == 2
            await a.wait_until(lambda: a.texts(chat) == ["hello bob", "hi alice"])
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_an_offline_recipient_gets_everything_in_order_once(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()

    async def scenario() -> None:
        a = await stack.client(alice)
        b = await stack.client(bob)
        first = await a.send_text("before", to=bob.user_id)
        chat = first.chat_id
        await b.wait_until(lambda: 1 in b.chats[chat].messages)
        await b.close()  # bob goes offline
        for i in range(30):
            await a.send_text(f"while away {i}", chat_id=chat)
        await b.reconnect()  # sync from his cursors
        await b.wait_until(lambda: b.chats[chat].contiguous == 31)
        assert b.texts(chat) == ["before", *[f"while away {i}" for i in range(30)]]
        # Pushes racing the sync never show a message twice.
        pushed = [f for f in b.frames if f.get("type") == "message"]
        assert len({(f["chat_id"], f["seq"]) for f in pushed}) == len(pushed)
        await a.wait_until(lambda: a.ticks(chat, 31) == "delivered")
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_a_resend_after_a_lost_ack_is_the_same_message(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()

    async def scenario() -> None:
        a = await stack.client(alice)
        first = await a.send_text("once", to=bob.user_id, local_id="same-local-id")
        again = await a.send_text("once", to=bob.user_id, local_id="same-local-id")
        assert (again.message_id, again.seq, again.duplicate) == (first.message_id, first.seq, True)
        await a.close()

    asyncio.run(scenario())


def test_typing_shows_and_stops(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()

    async def scenario() -> None:
        a, b = await stack.client(alice), await stack.client(bob)
        chat = (await a.send_text("hi", to=bob.user_id)).chat_id
        await b.wait_until(lambda: 1 in b.chats[chat].messages)
        # The gateway checks membership against the read model, which is there by now.
        await a.typing(chat, "start")
        await b.wait_until(lambda: alice.user_id in b.typists[chat])
        await a.typing(chat, "stop")
        await b.wait_until(lambda: alice.user_id not in b.typists[chat])
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_a_removed_member_can_no_longer_type_in_the_group(stack: Stack) -> None:
    alice, bob, carol = stack.account(), stack.account(), stack.account()

    async def scenario() -> None:
        a, b, c = [await stack.client(x) for x in (alice, bob, carol)]
        chat = await a.create_group("g", [bob.user_id, carol.user_id])
        await a.send_text("hi", chat_id=chat)
        await c.wait_until(lambda: chat in c.chats and 1 in c.chats[chat].messages)
        await c.typing(chat, "start")  # the gateway now holds the group's members
        await b.wait_until(lambda: carol.user_id in b.typists[chat])
        await a.group("remove_member", chat, user_id=carol.user_id)
        await c.wait_until(
            lambda: any(f.get("event") == "MemberRemoved" for f in c.frames if f["type"] == "chat")
        )
        # At once, not when the gateway's membership cache expires.
        with pytest.raises(CommandFailed) as refused:
            await c.request({"type": "typing", "chat_id": chat, "state": "start"})
        assert refused.value.code == "unknown_chat"
        for x in (a, b, c):
            await x.close()

    asyncio.run(scenario())


def test_a_group_of_256_gets_one_send_and_read_by_rises(stack: Stack) -> None:
    admin = stack.account("admin")
    crowd = [stack.account() for _ in range(255)]

    async def scenario() -> None:
        owner = await stack.client(admin)
        members = [await stack.client(acc, auto_delivered=False) for acc in crowd]
        try:
            group = await owner.create_group("everyone", [m.user_id for m in members])
            ack = await owner.send_text("to all", chat_id=group)
            await asyncio.gather(
                *(m.wait_until(partial(_holds_first, m, group), timeout_s=30) for m in members)
            )
            for reader in members[:40]:
                await reader.mark_read(group, ack.seq)
            await owner.wait_until(
                lambda: (
                    sum(
                        1
                        for u, c in owner.chats[group].cursors.items()
                        if u != admin.user_id and (c.get("read") or 0) >= 1
                    )
                    == 40
                ),
                timeout_s=30,
            )
        finally:
            await asyncio.gather(owner.close(), *(m.close() for m in members))

    asyncio.run(scenario())


def test_bad_frames_are_answered_and_the_connection_stays(stack: Stack) -> None:
    alice = stack.account()

    async def scenario() -> None:
        a = await stack.client(alice)
        assert a._ws is not None
        for raw in [
            "{not json",
            "[]",
            '{"type": 5}',
            '{"type": "launch"}',
            '{"type": "send"}',
            '{"type": "read", "chat_id": "nope"}',
            '{"type": "delivered", "chat_id": "' + alice.user_id + '", "up_to": -1}',
        ]:
            await a._ws.send(raw)
        await a.wait_until(lambda: sum(1 for f in a.frames if f.get("type") == "error") == 7)
        codes = [f["code"] for f in a.frames if f.get("type") == "error"]
        assert codes == [
            "bad_json",
            "bad_frame",
            "bad_frame",
            "unknown_type",
            "bad_frame",
            "bad_frame",
            "bad_frame",
        ]
        with pytest.raises(CommandFailed) as caught:
            await a.send_text("to nowhere", chat_id="7f6c2c84-0000-4000-8000-000000000000")
        assert caught.value.code == "unknown_chat"
        # Still connected and served.
        assert (await a.request({"type": "ping"}))["type"] == "pong"
        await a.close()

    asyncio.run(scenario())


def test_no_token_bad_token_or_foreign_origin_is_refused_before_the_upgrade(stack: Stack) -> None:
    alice = stack.account()
    url = stack.base.replace("http", "ws") + "/ws"

    async def refused(target: str, **options: object) -> int:
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            async with websockets.connect(target, **options):  # type: ignore[arg-type]
                pass
        return int(caught.value.response.status_code)

    async def scenario() -> None:
        assert await refused(url) == 403
        assert await refused(url + "?access_token=garbage") == 403
        assert (
            await refused(url + "?access_token=" + alice.access_token, origin="http://evil.example")
            == 403
        )
        bearer = {"Authorization": f"Bearer {alice.access_token}"}
        assert await refused(url, additional_headers=bearer, origin="http://evil.example") == 403
        async with websockets.connect(url, additional_headers=bearer) as ws:
            assert json.loads(await ws.recv())["user_id"] == alice.user_id
        ok = ChatClient(stack.base, alice)
        await ok.connect()
        assert ok.hello["user_id"] == alice.user_id
        await ok.close()

    asyncio.run(scenario())


def test_an_oversized_frame_closes_with_1009(stack: Stack) -> None:
    alice = stack.account()

    async def scenario() -> int:
        url = stack.base.replace("http", "ws") + "/ws?access_token=" + alice.access_token
        async with websockets.connect(url, max_size=2**20) as ws:
            await ws.recv()  # hello
            await ws.send(json.dumps({"type": "send", "text": "x" * 200_000}))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None
            return int(closed.value.rcvd.code)

    assert asyncio.run(scenario()) == 1009


def _holds_first(client: ChatClient, chat: str) -> bool:
    return 1 in client.chats[chat].messages
