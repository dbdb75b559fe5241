"""`GET /v1/chats`: the caller's chats by activity, with last message and unread count."""

from __future__ import annotations

from typing import Any

import httpx

from tests.queries.conftest import LONG_CHAT, World
from tests.queries.world import User


async def chats(client: httpx.AsyncClient, user: User, **params: Any) -> dict[str, Any]:
    answer = await client.get("/v1/chats", params=params, headers=user.auth)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_users_chats_newest_activity_first(client: httpx.AsyncClient, world: World) -> None:
    body = await chats(client, world.carol)
    listed = {c["chat_id"]: c for c in body["chats"]}
    assert set(listed) == {str(world.trip), str(world.long)}
    assert body["next_cursor"] is None
    times = [c["last_activity_at"] for c in body["chats"]]
    assert times == sorted(times, reverse=True)

    long = listed[str(world.long)]
    assert long["kind"] == "direct" and long["name"] is None
    assert long["peer"] == str(world.alice.user_id)
    assert long["is_member"] is True and long["role"] == "member"
    assert long["last_message"]["seq"] == LONG_CHAT
    assert long["last_message"]["sender"] == str(world.alice.user_id)
    assert long["unread"] == LONG_CHAT

    trip = listed[str(world.trip)]
    assert trip["kind"] == "group" and trip["name"] == "Trip" and trip["peer"] is None
    assert trip["last_message"]["seq"] == 5
    assert trip["unread"] == 0  # carol read up to 5

    bob = {c["chat_id"]: c for c in (await chats(client, world.bob))["chats"]}
    assert bob[str(world.ab)]["unread"] == 1  # read a1, a2; a3 unread; b1 is his own
    assert bob[str(world.trip)]["unread"] == 2  # g3, g4 from alice (g2, g5 are his)
    alice = {c["chat_id"]: c for c in (await chats(client, world.alice))["chats"]}
    assert alice[str(world.trip)]["role"] == "admin"


async def test_a_former_member_sees_the_chat_as_it_was_when_they_left(
    client: httpx.AsyncClient, world: World
) -> None:
    body = await chats(client, world.dave)
    assert [c["chat_id"] for c in body["chats"]] == [str(world.trip)]
    trip = body["chats"][0]
    assert trip["is_member"] is False and trip["role"] is None
    assert trip["last_message"]["seq"] == 3  # not g4 or g5, sent after he was removed
    assert trip["last_activity_at"] == trip["last_message"]["sent_at"]


async def test_pages_of_one_walk_the_whole_list(client: httpx.AsyncClient, world: World) -> None:
    whole = await chats(client, world.alice)
    assert len(whole["chats"]) == 3
    walked: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor is not None:
            params["cursor"] = cursor
        page = await chats(client, world.alice, **params)
        walked += page["chats"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == whole["chats"]


async def test_bad_cursors_and_limits_are_refused(client: httpx.AsyncClient, world: World) -> None:
    cases: list[tuple[dict[str, str | int], str]] = [
        ({"cursor": "!!"}, "bad_cursor"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "bad_cursor"),
        ({"cursor": "OTk5OTk5OTk5OTk5OTk5OTk5OXxhYmM"}, "bad_cursor"),
        ({"limit": 1000}, "bad_parameter"),
    ]
    for params, code in cases:
        answer = await client.get("/v1/chats", params=params, headers=world.alice.auth)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["code"] == code
