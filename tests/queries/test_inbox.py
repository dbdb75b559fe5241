"""`GET /v1/inbox`: undelivered messages, oldest first, in pages; blocked senders left out."""

from __future__ import annotations

from typing import Any

import httpx

from tests.queries.conftest import LONG_CHAT, World
from tests.queries.world import User


async def inbox(client: httpx.AsyncClient, user: User, **params: Any) -> dict[str, Any]:
    answer = await client.get("/v1/inbox", params=params, headers=user.auth)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_the_inbox_pages_through_undelivered_messages(
    client: httpx.AsyncClient, world: World
) -> None:
    got: list[tuple[str, int]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 40}
        if after is not None:
            params["after"] = after
        page = await inbox(client, world.carol, **params)
        assert len(page["messages"]) <= 40
        got += [(m["chat_id"], m["seq"]) for m in page["messages"]]
        after = page["after"]
        if after is None:
            break
    # carol read the group; the 130 lines from alice were never delivered to her.
    assert sorted(got) == sorted((str(world.long), s) for s in range(1, LONG_CHAT + 1))
    assert len(set(got)) == len(got)
    queued = [m for m in (await inbox(client, world.carol, limit=100))["messages"]]
    assert [m["queued_at"] for m in queued] == sorted(m["queued_at"] for m in queued)


async def test_a_removed_member_keeps_what_was_not_delivered(
    client: httpx.AsyncClient, world: World
) -> None:
    body = await inbox(client, world.dave)
    assert [(m["chat_id"], m["seq"]) for m in body["messages"]] == [
        (str(world.trip), 1),
        (str(world.trip), 2),
        (str(world.trip), 3),
    ]
    assert body["messages"][0]["sender"] == str(world.alice.user_id)


async def test_messages_from_blocked_users_are_not_in_the_inbox(
    client: httpx.AsyncClient, world: World
) -> None:
    frank = await inbox(client, world.frank)
    assert frank["messages"] == []  # everything for frank came from erin, whom he blocked
    erin = await inbox(client, world.erin)
    assert [(m["chat_id"], m["seq"]) for m in erin["messages"]] == [(str(world.ef), 2)]
