"""`GET /v1/chats/{chat_id}`: group info and members with roles."""

from __future__ import annotations

import httpx

from tests.queries.conftest import World


async def test_members_see_the_group_and_its_members(
    client: httpx.AsyncClient, world: World
) -> None:
    answer = await client.get(f"/v1/chats/{world.trip}", headers=world.carol.auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["kind"], body["name"], body["is_member"], body["role"]) == (
        "group",
        "Trip",
        True,
        "member",
    )
    assert body["created_by"] == str(world.alice.user_id)
    assert body["last_seq"] == 5
    roles = {m["user_id"]: m["role"] for m in body["members"]}
    assert roles == {
        str(world.alice.user_id): "admin",
        str(world.bob.user_id): "member",
        str(world.carol.user_id): "member",
    }


async def test_a_former_member_sees_the_chat_but_not_its_members(
    client: httpx.AsyncClient, world: World
) -> None:
    body = (await client.get(f"/v1/chats/{world.trip}", headers=world.dave.auth)).json()
    assert (body["is_member"], body["role"], body["members"], body["last_seq"]) == (
        False,
        None,
        [],
        3,
    )


async def test_a_direct_chat_has_its_two_users(client: httpx.AsyncClient, world: World) -> None:
    body = (await client.get(f"/v1/chats/{world.ab}", headers=world.alice.auth)).json()
    assert body["kind"] == "direct" and body["name"] is None
    assert {m["user_id"] for m in body["members"]} == {
        str(world.alice.user_id),
        str(world.bob.user_id),
    }
