"""Read-your-writes: with the ack's position in `X-Parley-Position`, a query sent right
after a command sees its effect; past the deadline it answers 425 `not_yet_projected`."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from commands.accounts.application import open_accounts
from commands.gateway.bus import CommandBus
from infra.settings import Settings
from tests.commands.client import send
from tests.queries.conftest import World
from tests.queries.world import dm, group, register


async def test_a_query_with_the_position_sees_the_message_just_sent(
    client: httpx.AsyncClient, world: World, topics: Settings
) -> None:
    accounts = open_accounts(topics)
    try:  # users of its own: the other tests see the world unchanged
        writer, reader = [
            await asyncio.to_thread(register, accounts, topics, name)
            for name in ("writer", "reader")
        ]
    finally:
        accounts.close()
    bus = CommandBus(topics, reply_to=f"ryw-{uuid.uuid4().hex[:8]}")
    await bus.start()
    chat = dm(writer, reader)
    try:
        for i in range(5):
            outcome = await bus.submit(
                send(chat, writer.user_id, f"ryw-{i}", "now", bus.reply_to, to=reader.user_id)
            )
            assert outcome.ok and outcome.position is not None
            seq = outcome.result["seq"]
            header = {"X-Parley-Position": f"{outcome.chat_id}:{outcome.position}"}
            answer = await client.get(
                f"/v1/chats/{chat}/messages",
                params={"after_seq": seq - 1},
                headers={**reader.auth, **header},
            )
            assert answer.status_code == 200, answer.text
            assert [m["seq"] for m in answer.json()["messages"]] == [seq]

        # A new group: it is in the creator's list as soon as the query can answer.
        fresh = uuid.uuid4()
        created = await bus.submit(group(fresh, writer.user_id, [], "Fresh", bus.reply_to))
        assert created.ok
        answer = await client.get(
            "/v1/chats",
            headers={**writer.auth, "X-Parley-Position": f"{fresh}:{created.position}"},
        )
        assert answer.status_code == 200
        assert str(fresh) in {c["chat_id"] for c in answer.json()["chats"]}
    finally:
        await bus.stop()


async def test_a_position_not_reached_in_time_answers_425(
    client: httpx.AsyncClient, world: World, query_settings: Settings
) -> None:
    cases = [
        (world.ab, world.alice),  # a chat of hers, a position far in the future
        (world.ef, world.alice),  # someone else's chat: exactly the same
        (uuid.uuid4(), world.alice),  # a chat that does not exist: the same again
    ]
    bodies = set()
    for chat, user in cases:
        started = time.monotonic()
        answer = await client.get(
            "/v1/chats", headers={**user.auth, "X-Parley-Position": f"{chat}:999999999999"}
        )
        waited = time.monotonic() - started
        assert answer.status_code == 425, answer.text
        assert answer.json()["error"]["code"] == "not_yet_projected"
        assert answer.headers["retry-after"] == "1"
        assert query_settings.read_your_writes_timeout_s <= waited < 3
        bodies.add(answer.content)
    assert len(bodies) == 1


async def test_a_reached_position_answers_at_once(client: httpx.AsyncClient, world: World) -> None:
    started = time.monotonic()
    answer = await client.get(
        "/v1/chats", headers={**world.alice.auth, "X-Parley-Position": f"{world.ab}:1"}
    )
    assert answer.status_code == 200
    assert time.monotonic() - started < 0.5


async def test_a_malformed_position_is_refused(client: httpx.AsyncClient, world: World) -> None:
    for value in ("12", f"{world.ab}", f"{world.ab}:", f"{world.ab}:-1", "x:1", f"{world.ab}:1:2"):
        answer = await client.get(
            "/v1/inbox", headers={**world.alice.auth, "X-Parley-Position": value}
        )
        assert answer.status_code == 400, value
        assert answer.json()["error"]["code"] == "bad_position"
    await asyncio.sleep(0)
