"""`GET /v1/users/{user_id}`: profile, last seen and online, with privacy and blocking."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.queries.conftest import BOB_LAST_SEEN_MS, World
from tests.queries.world import User


async def profile(client: httpx.AsyncClient, viewer: User, owner: object) -> dict[str, Any]:
    answer = await client.get(f"/v1/users/{owner}", headers=viewer.auth)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_contact_sees_last_seen_and_online(client: httpx.AsyncClient, world: World) -> None:
    body = await profile(client, world.alice, world.bob.user_id)
    assert body["username"].startswith("bob_") and body["display_name"] == "Bob"
    assert body["about"] == ""
    assert (body["last_seen"], body["online"]) == (BOB_LAST_SEEN_MS, True)


async def test_privacy_and_blocks_hide_last_seen(client: httpx.AsyncClient, world: World) -> None:
    # bob shows his last seen to contacts only; carol is not one.
    assert (await profile(client, world.carol, world.bob.user_id))["last_seen"] is None
    # alice blocked carol: neither sees the other's.
    for viewer, owner in ((world.carol, world.alice), (world.alice, world.carol)):
        body = await profile(client, viewer, owner.user_id)
        assert (body["last_seen"], body["online"]) == (None, None)
    # dave shows nobody, so he sees nobody's either; he still sees his own.
    assert (await profile(client, world.dave, world.alice.user_id))["last_seen"] is None
    assert (await profile(client, world.bob, world.dave.user_id))["last_seen"] is None
    assert (await profile(client, world.dave, world.dave.user_id))["last_seen"] is not None
    # everyone else, with the default setting, sees alice's.
    body = await profile(client, world.erin, world.alice.user_id)
    assert (body["last_seen"], body["online"]) == (BOB_LAST_SEEN_MS + 1, False)


async def test_an_unknown_user_is_not_found(client: httpx.AsyncClient, world: World) -> None:
    for owner in (uuid.uuid4(), "not-a-user-id"):
        answer = await client.get(f"/v1/users/{owner}", headers=world.alice.auth)
        assert answer.status_code == 404
        assert answer.json() == {"error": {"code": "unknown_user", "message": "no such user"}}


async def test_the_contacts_list_names_each_contact(
    client: httpx.AsyncClient, world: World
) -> None:
    answer = await client.get("/v1/contacts", headers=world.bob.auth)
    assert answer.status_code == 200, answer.text
    (alice,) = answer.json()["contacts"]
    assert alice["user_id"] == str(world.alice.user_id)
    assert alice["username"].startswith("alice_") and alice["display_name"] == "Alice"
    assert set(alice) == {"user_id", "username", "display_name"}
    answer = await client.get("/v1/contacts", headers=world.alice.auth)
    assert answer.json() == {"contacts": []}
    assert (await client.get("/v1/contacts")).status_code == 401
