"""`GET /v1/chats/{chat_id}/messages/{seq}/receipts`: ticks for 1:1, counts for groups."""

from __future__ import annotations

from typing import Any

import httpx

from tests.queries.conftest import World
from tests.queries.world import User


async def receipts(
    client: httpx.AsyncClient, user: User, chat: object, seq: int, status: int = 200
) -> dict[str, Any]:
    answer = await client.get(f"/v1/chats/{chat}/messages/{seq}/receipts", headers=user.auth)
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_direct_message_shows_the_recipients_status_and_times(
    client: httpx.AsyncClient, world: World
) -> None:
    read = await receipts(client, world.alice, world.ab, 1)
    assert read["kind"] == "direct" and read["sender"] == str(world.alice.user_id)
    recipient = read["recipient"]
    assert recipient["user_id"] == str(world.bob.user_id)
    assert recipient["status"] == "READ"
    assert recipient["delivered_at"] <= recipient["read_at"]
    delivered = (await receipts(client, world.alice, world.ab, 3))["recipient"]
    assert delivered["status"] == "DELIVERED" and delivered["read_at"] is None
    sent = (await receipts(client, world.bob, world.ab, 4))["recipient"]
    assert sent == {
        "user_id": str(world.alice.user_id),
        "status": "SENT",
        "delivered_at": None,
        "read_at": None,
    }


async def test_a_group_message_shows_counts_and_readers_minus_blocked_users(
    client: httpx.AsyncClient, world: World
) -> None:
    # g1 (alice): recipients bob, carol, dave; carol read it, bob read it, dave did not.
    # alice blocked carol, so carol's receipt is hidden from alice.
    mine = await receipts(client, world.alice, world.trip, 1)
    assert mine["kind"] == "group"
    assert (mine["recipients"], mine["delivered"], mine["read"]) == (3, 1, 1)
    assert [r["user_id"] for r in mine["readers"]] == [str(world.bob.user_id)]
    # g2 (bob): bob blocked nobody and nobody blocked bob: carol's read shows.
    his = await receipts(client, world.bob, world.trip, 2)
    assert (his["recipients"], his["delivered"], his["read"]) == (3, 1, 1)
    assert [r["user_id"] for r in his["readers"]] == [str(world.carol.user_id)]
    # g4 (alice), after dave left: two recipients.
    later = await receipts(client, world.alice, world.trip, 4)
    assert later["recipients"] == 2 and later["delivered"] == 1  # bob; carol hidden


async def test_only_the_sender_sees_receipts(client: httpx.AsyncClient, world: World) -> None:
    body = await receipts(client, world.bob, world.trip, 1, status=403)
    assert body["error"]["code"] == "not_sender"
    body = await receipts(client, world.dave, world.trip, 4, status=404)
    assert body["error"]["code"] == "unknown_message"
