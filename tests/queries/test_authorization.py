"""Nobody sees a chat they never belonged to: someone else's chat, message or receipt
answers exactly like one that does not exist, byte for byte, on every route."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.queries.conftest import LONG_CHAT, World
from tests.queries.world import User


def paths(chat: object, last_seq: int) -> list[str]:
    out = [
        f"/v1/chats/{chat}",
        f"/v1/chats/{chat}/messages",
        f"/v1/chats/{chat}/messages?after_seq=0&limit=100",
        f"/v1/chats/{chat}/messages?before_seq={last_seq + 1}",
    ]
    out += [f"/v1/chats/{chat}/messages/{seq}/receipts" for seq in range(1, last_seq + 2)]
    return out


async def answers(client: httpx.AsyncClient, user: User, urls: list[str]) -> list[Any]:
    out = []
    for url in urls:
        answer = await client.get(url, headers=user.auth)
        out.append((answer.status_code, answer.content, answer.headers.get("content-type")))
    return out


async def test_other_users_chats_answer_like_chats_that_do_not_exist(
    client: httpx.AsyncClient, world: World
) -> None:
    theirs = {world.ab: 4, world.trip: 5, world.long: LONG_CHAT, world.ef: 2, world.hideout: 1}
    strangers = {
        world.ab: [world.carol, world.dave, world.erin],
        world.trip: [world.erin, world.frank],
        world.long: [world.bob, world.dave, world.frank],
        world.ef: [world.alice, world.bob, world.carol, world.dave],
        world.hideout: [world.alice, world.dave],
    }
    nowhere = uuid.uuid4()
    for chat, last_seq in theirs.items():
        for user in strangers[chat]:
            expected = await answers(client, user, paths(nowhere, last_seq))
            got = await answers(client, user, paths(chat, last_seq))
            assert got == expected, (user.name, chat)
            assert {status for status, _, _ in got} == {404}
            listed = (await client.get("/v1/chats", headers=user.auth)).json()["chats"]
            assert str(chat) not in {c["chat_id"] for c in listed}


async def test_a_removed_members_view_ends_at_the_removal(
    client: httpx.AsyncClient, world: World
) -> None:
    # dave was removed after seq 3: seqs 4 and 5 are like seqs that do not exist.
    for seq in (4, 5):
        theirs = await client.get(
            f"/v1/chats/{world.trip}/messages/{seq}/receipts", headers=world.dave.auth
        )
        missing = await client.get(
            f"/v1/chats/{world.trip}/messages/99/receipts", headers=world.dave.auth
        )
        assert (theirs.status_code, theirs.content) == (missing.status_code, missing.content)
        assert theirs.status_code == 404
    for params in ({"after_seq": 3}, {"after_seq": 0, "limit": 100}, {"before_seq": 6}):
        body = (
            await client.get(
                f"/v1/chats/{world.trip}/messages", params=params, headers=world.dave.auth
            )
        ).json()
        assert all(m["seq"] <= 3 for m in body["messages"]), params
    inbox = (await client.get("/v1/inbox", headers=world.dave.auth)).json()["messages"]
    assert all(m["chat_id"] != str(world.trip) or m["seq"] <= 3 for m in inbox)


async def test_every_route_needs_a_valid_token(client: httpx.AsyncClient, world: World) -> None:
    urls = [
        "/v1/chats",
        f"/v1/chats/{world.ab}",
        f"/v1/chats/{world.ab}/messages",
        f"/v1/chats/{world.ab}/messages/1/receipts",
        "/v1/inbox",
        f"/v1/users/{world.alice.user_id}",
    ]
    forged = world.alice.token[:-4] + ("AAAA" if not world.alice.token.endswith("AAAA") else "BBBB")
    for url in urls:
        for headers in ({}, {"Authorization": "Basic x"}, {"Authorization": f"Bearer {forged}"}):
            answer = await client.get(url, headers=headers)
            assert answer.status_code == 401, (url, headers)
            assert answer.json()["error"]["code"] == "invalid_token"
            assert answer.headers["www-authenticate"] == "Bearer"
