"""Send limits at the gateway: per connection, per user, and kept across reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import redis.asyncio as aioredis

from bench.servers import free_port
from client import Account, Ack, ChatClient, CommandFailed
from commands.ratelimit import Limit, _key
from domain.ids import direct_chat_id
from tests.gateway.conftest import GENEROUS_LIMITS, Stack
from tests.services import running

TIGHT = {
    **GENEROUS_LIMITS,
    "PARLEY_RATE_SEND_CONNECTION_BURST": "3",
    "PARLEY_RATE_SEND_CONNECTION_PER_S": "0.01",
    "PARLEY_RATE_SEND_USER_BURST": "5",
    "PARLEY_RATE_SEND_USER_PER_S": "0.01",
}


@pytest.fixture(scope="module")
def tight(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second gateway on the same stack, with small send limits."""
    port = free_port()
    log: Path = tmp_path_factory.mktemp("tight") / "commands.log"
    with running("commands", log, {**TIGHT, "PARLEY_COMMANDS_PORT": str(port)}) as gateway:
        gateway.wait_for_log(r"event=commands_listening")
        yield f"http://127.0.0.1:{port}"


async def _outcomes(client: ChatClient, to: str, count: int) -> list[str]:
    answers = []
    for _ in range(count):
        try:
            await client.send_text("hi", to=to)
            answers.append("ack")
        except CommandFailed as exc:
            assert exc.code != "rate_limited" or exc.frame["retry_after_s"] > 50
            answers.append(exc.code)
    return answers


def test_sends_are_limited_per_connection_and_per_user_across_reconnects(
    stack: Stack, tight: str
) -> None:
    alice, bob = stack.account("alice"), stack.account("bob")

    async def scenario() -> None:
        reader = await stack.client(bob)
        first = ChatClient(tight, alice)
        await first.connect()
        # The connection's bucket holds 3: the fourth send is refused, nothing stored.
        assert await _outcomes(first, bob.user_id, 4) == ["ack"] * 3 + ["rate_limited"]
        # A second connection has its own bucket, but the user's (5) is nearly empty.
        second = ChatClient(tight, alice)
        await second.connect()
        assert await _outcomes(second, bob.user_id, 3) == ["ack", "ack", "rate_limited"]
        await first.close()
        await second.close()
        # The user's takes reach the shared bucket in Redis within a flush...
        redis = aioredis.Redis.from_url(stack.settings.redis_url)
        key = _key(Limit.SEND_PER_USER, alice.user_id)
        deadline = asyncio.get_running_loop().time() + 10
        try:
            while float(await redis.hget(key, "tokens") or 5) > 0.5:
                assert asyncio.get_running_loop().time() < deadline, "takes never flushed"
                await asyncio.sleep(0.05)
        finally:
            await redis.aclose()
        # ...so reconnecting, here or to another gateway, does not refill it.
        for base in (tight, stack.base):
            again = ChatClient(base, alice)
            await again.connect()
            expected = ["rate_limited"] if base == tight else ["ack"]  # generous: the default
            assert await _outcomes(again, bob.user_id, 1) == expected
            await again.close()
        # Only the six acked messages were stored: bob gets them, and a sync finds no more.
        chat = reader.chats[str(direct_chat_id(UUID(alice.user_id), UUID(bob.user_id)))]
        await reader.wait_until(lambda: len(chat.messages) == 6)
        await reader.sync()
        assert sorted(chat.messages) == [1, 2, 3, 4, 5, 6]
        await reader.close()

    asyncio.run(scenario())


async def _one_message(
    stack: Stack, accounts: tuple[Account, Account], **receiver: object
) -> tuple[ChatClient, ChatClient, Ack]:
    """One user sends the other a message; returns their clients once it is held, and
    the ack."""
    sender = await stack.client(accounts[0])
    recipient = await stack.client(accounts[1], **receiver)
    ack = await sender.send_text("one", to=recipient.user_id)
    await recipient.wait_until(lambda: ack.seq in recipient.chats[ack.chat_id].messages)
    return sender, recipient, ack


def test_the_sending_device_gets_its_ack_and_not_its_own_message_back(stack: Stack) -> None:
    accounts = stack.account("alice"), stack.account("bob")

    async def scenario() -> None:
        phone, receiver, ack = await _one_message(stack, accounts)
        await receiver.mark_read(ack.chat_id, ack.seq)  # with an id: answered `ok`
        await phone.wait_until(lambda: phone.ticks(ack.chat_id, ack.seq) == "read")
        # The phone holds its message from the ack, and no `message` frame came back.
        assert phone.texts(ack.chat_id) == ["one"]
        assert not [f for f in phone.frames if f.get("type") == "message"]
        # The receiver's automatic `delivered` carried no id and got no answer.
        assert not [f for f in receiver.frames if f.get("type") == "ok"]
        await phone.close()
        await receiver.close()

    asyncio.run(scenario())


def test_a_receipt_without_id_is_answered_only_when_it_fails(stack: Stack) -> None:
    accounts = stack.account("alice"), stack.account("bob")

    async def scenario() -> None:
        sender, receiver, ack = await _one_message(stack, accounts, auto_delivered=False)
        await receiver._ws_send({"type": "delivered", "chat_id": ack.chat_id, "up_to": 99})
        await receiver._ws_send({"type": "delivered", "chat_id": ack.chat_id, "up_to": ack.seq})
        await sender.wait_until(lambda: sender.ticks(ack.chat_id, ack.seq) == "delivered")
        await receiver.wait_until(lambda: any(f["type"] == "error" for f in receiver.frames))
        errors = [f for f in receiver.frames if f["type"] in ("error", "ok")]
        assert [(f["type"], f["code"], f["id"]) for f in errors] == [("error", "invalid_seq", "")]
        await sender.close()
        await receiver.close()

    asyncio.run(scenario())
