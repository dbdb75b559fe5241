"""Last seen over the socket follows privacy, contacts and blocking."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from client import register_and_login
from client.chat import _post
from tests.gateway.conftest import Stack


def _persisted_last_seen(stack: Stack, user_id: str) -> bool:
    with psycopg.connect(stack.settings.pg_conninfo) as conn:
        row = conn.execute("SELECT at FROM last_seen WHERE user_id = %s", (user_id,)).fetchone()
    return row is not None


def test_last_seen_follows_privacy_and_blocking(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    alice = register_and_login(stack.base, f"alice_{tag}")
    bob = register_and_login(stack.base, f"bob_{tag}")

    def bob_says(path: str, body: dict[str, str]) -> None:
        _post(stack.base, path, body, token=bob.access_token)

    async def scenario() -> None:
        b = await stack.client(bob)
        a = await stack.client(alice)

        async def seen() -> tuple[object, object]:
            answer = await a.presence(bob.user_id)
            return answer["online"], answer["last_seen"]

        online, last_seen = await seen()
        assert online is True and isinstance(last_seen, int)

        bob_says("/v1/me/privacy", {"last_seen": "NOBODY"})
        assert await seen() == (None, None)

        bob_says("/v1/me/privacy", {"last_seen": "CONTACTS"})
        assert await seen() == (None, None)  # alice is not in bob's contacts
        bob_says("/v1/me/contacts", {"action": "add", "user_id": alice.user_id})
        assert (await seen())[0] is True

        bob_says("/v1/me/blocks", {"action": "block", "user_id": alice.user_id})
        assert await seen() == (None, None)
        bob_says("/v1/me/blocks", {"action": "unblock", "user_id": alice.user_id})
        assert (await seen())[0] is True

        # Reciprocal, as in the seed's app: hiding your own last seen hides others' from you.
        _post(stack.base, "/v1/me/privacy", {"last_seen": "NOBODY"}, token=alice.access_token)
        assert await seen() == (None, None)
        _post(stack.base, "/v1/me/privacy", {"last_seen": "EVERYONE"}, token=alice.access_token)

        await b.close()
        # Offline now: still visible to alice, with the time bob was last seen.
        deadline = asyncio.get_running_loop().time() + 10
        while (await seen())[0] is not False:
            assert asyncio.get_running_loop().time() < deadline, "bob still shown online"
            await asyncio.sleep(0.05)
        assert isinstance((await seen())[1], int)
        await a.close()
        # ...and the gateway kept it in PostgreSQL too (Redis holds the live value).
        deadline = asyncio.get_running_loop().time() + 10
        while not _persisted_last_seen(stack, bob.user_id):
            assert asyncio.get_running_loop().time() < deadline, "last seen never persisted"
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
