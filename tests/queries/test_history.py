"""`GET /v1/chats/{chat_id}/messages` on projections built by the real pipeline."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.queries.conftest import LONG_CHAT, World
from tests.queries.world import User


async def history(
    client: httpx.AsyncClient, user: User, chat: object, **params: Any
) -> dict[str, Any]:
    answer = await client.get(f"/v1/chats/{chat}/messages", params=params, headers=user.auth)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def texts(body: dict[str, Any]) -> list[str]:
    return [base64.b64decode(m["body"]).decode() for m in body["messages"]]


async def test_the_newest_page_of_a_direct_chat(client: httpx.AsyncClient, world: World) -> None:
    body = await history(client, world.bob, world.ab)
    assert [m["seq"] for m in body["messages"]] == [1, 2, 3, 4]
    assert texts(body) == ["hello bob", "are you there", "?", "yes"]
    first = body["messages"][0]
    assert first["sender"] == str(world.alice.user_id)
    assert first["kind"] == "text" and first["media"] is None
    assert first["chat_id"] == str(world.ab) and int(first["message_id"]) > 0
    assert first["sent_at"].endswith("Z")
    assert (body["before_seq"], body["after_seq"], body["last_seq"]) == (None, None, 4)


async def test_pages_walk_a_long_chat_backwards_and_forwards(
    client: httpx.AsyncClient, world: World
) -> None:
    newest = await history(client, world.carol, world.long)
    assert len(newest["messages"]) == 50  # the default page
    assert [m["seq"] for m in newest["messages"]] == list(range(LONG_CHAT - 49, LONG_CHAT + 1))
    seen = [m["seq"] for m in newest["messages"]]
    before = newest["before_seq"]
    while before is not None:
        page = await history(client, world.carol, world.long, before_seq=before, limit=37)
        seen = [m["seq"] for m in page["messages"]] + seen
        before = page["before_seq"]
    assert seen == list(range(1, LONG_CHAT + 1))

    forwards: list[int] = []
    after: int | None = 0
    while after is not None:
        page = await history(client, world.alice, world.long, after_seq=after, limit=100)
        forwards += [m["seq"] for m in page["messages"]]
        after = page["after_seq"]
    assert forwards == list(range(1, LONG_CHAT + 1))

    between = await history(client, world.alice, world.long, after_seq=10, before_seq=14)
    assert [m["seq"] for m in between["messages"]] == [11, 12, 13]
    assert (between["before_seq"], between["after_seq"]) == (11, 13)


async def test_a_removed_member_sees_only_what_was_sent_while_a_member(
    client: httpx.AsyncClient, world: World
) -> None:
    body = await history(client, world.dave, world.trip)
    assert [m["seq"] for m in body["messages"]] == [1, 2, 3]
    assert (body["last_seq"], body["after_seq"]) == (3, None)
    later = await history(client, world.dave, world.trip, after_seq=3)
    assert later["messages"] == [] and later["after_seq"] is None
    members = await history(client, world.carol, world.trip)
    assert [m["seq"] for m in members["messages"]] == [1, 2, 3, 4, 5]


async def test_page_sizes_are_limited(client: httpx.AsyncClient, world: World) -> None:
    for params in ({"limit": 101}, {"limit": 0}, {"limit": "x"}, {"after_seq": -1}):
        answer = await client.get(
            f"/v1/chats/{world.long}/messages", params=params, headers=world.alice.auth
        )
        assert answer.status_code == 400, params
        assert answer.json()["error"]["code"] == "bad_parameter"
    most = await history(client, world.alice, world.long, limit=100)
    assert len(most["messages"]) == 100


async def test_a_blocked_users_messages_are_hidden_from_the_blocker(
    client: httpx.AsyncClient, world: World
) -> None:
    """frank blocked erin: her messages keep their seqs in his history, but neither her
    name nor what she wrote, as the WebSocket shows them (docs/queries.md)."""
    body = await history(client, world.frank, world.ef)
    psst, reply = body["messages"]
    assert psst == {
        "chat_id": str(world.ef),
        "seq": 1,
        "message_id": psst["message_id"],
        "hidden": True,
        "sender": None,
        "kind": None,
        "body": None,
        "media": None,
        "sent_at": psst["sent_at"],
        "ref": None,
        "quote": None,
        "edited": False,
        "deleted": False,
        "expires_at": None,
        "forwarded": 0,
    }
    assert int(psst["message_id"]) > 0 and psst["sent_at"].endswith("Z")
    assert reply["sender"] == str(world.frank.user_id) and "hidden" not in reply
    assert base64.b64decode(reply["body"]) == b"go away"
    group = await history(client, world.frank, world.hideout)
    assert [m.get("hidden") for m in group["messages"]] == [True]
    # The one blocked sees everything as it was: blocking hides nothing from her.
    assert texts(await history(client, world.erin, world.ef)) == ["psst", "go away"]
