"""Tokens signed with the stack's own secret but forged: refused by every door.

Someone who holds the signing secret (or a leaked one) and one real token of theirs
could rewrite its claims. The session a token names must be its user's and device's,
and no token may live longer than its kind: checked on the WebSocket handshake, the
commands service's HTTP routes and the queries service alike.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets

from bench.servers import free_port
from commands.accounts.application import open_accounts
from infra.auth import Tokens, signing_secret
from tests.accounts.test_tokens import claims_of, resign
from tests.gateway.conftest import Stack
from tests.services import running

PASSWORD_HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
"""Never checked: these users get their tokens issued directly."""


@pytest.fixture(scope="module")
def queries(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("queries") / "queries.log"
    with running("queries", log, {"PARLEY_QUERIES_PORT": str(port)}) as service:
        service.wait_for_log(r"event=queries_listening")
        yield f"http://127.0.0.1:{port}"


def registered_token(stack: Stack, device: str = "phone-1") -> str:
    """A registered user's access token (the user is in the accounts store)."""
    accounts = open_accounts(stack.settings)
    try:
        user = accounts.register(
            f"u_{secrets.token_hex(5)}",
            f"+4479{secrets.randbelow(10**9):09d}",
            "U",
            PASSWORD_HASH,
        )
    finally:
        accounts.close()

    async def issue() -> str:
        client = aioredis.Redis.from_url(stack.settings.redis_url)
        try:
            return (await Tokens(stack.settings, client).issue(user.id, device)).access_token
        finally:
            await client.aclose()

    return asyncio.run(issue())


def doors(stack: Stack, queries: str, token: str) -> dict[str, Any]:
    """What each door answers to `token`: the WebSocket's hello (or its HTTP refusal),
    and the status and error code of a commands route and a queries route."""
    headers = {"Authorization": f"Bearer {token}"}
    profile = httpx.post(
        f"{stack.base}/v1/me/profile", json={"about": "forged?"}, headers=headers, timeout=10
    )
    chats = httpx.get(f"{queries}/v1/chats", headers=headers, timeout=10)

    async def handshake() -> str:
        url = stack.base.replace("http", "ws", 1) + "/ws?access_token=" + token
        try:
            async with websockets.connect(url) as ws:
                return str(json.loads(await ws.recv())["type"])
        except websockets.exceptions.InvalidStatus as refused:
            return str(refused.response.status_code)

    def code(answer: httpx.Response) -> str:
        return str(answer.json()["error"]["code"]) if answer.status_code >= 400 else "ok"

    return {
        "ws": asyncio.run(handshake()),
        "commands": (profile.status_code, code(profile)),
        "queries": (chats.status_code, code(chats)),
    }


REFUSED = {
    "ws": "403",
    "commands": (401, "invalid_token"),
    "queries": (401, "invalid_token"),
}


def test_a_real_token_opens_every_door(stack: Stack, queries: str) -> None:
    assert doors(stack, queries, registered_token(stack)) == {
        "ws": "hello",
        "commands": (200, "ok"),
        "queries": (200, "ok"),
    }


def test_a_real_session_naming_another_user_is_refused_everywhere(
    stack: Stack, queries: str
) -> None:
    secret = signing_secret(stack.settings)
    mallory, victim = registered_token(stack), registered_token(stack)
    as_victim = resign(mallory, secret, sub=claims_of(victim)["sub"])
    assert doors(stack, queries, as_victim) == REFUSED
    other_device = resign(mallory, secret, dev="laptop")  # her own user, not her device
    assert doors(stack, queries, other_device) == REFUSED


def test_a_token_a_year_out_is_refused_everywhere(stack: Stack, queries: str) -> None:
    token = registered_token(stack)
    claims = claims_of(token)
    year = 365 * 24 * 3600
    forged = resign(token, signing_secret(stack.settings), exp=claims["iat"] + year)
    assert doors(stack, queries, forged) == REFUSED


def test_the_services_share_the_stacks_own_secret(stack: Stack) -> None:
    """The stack's services sign with the secret under its state folder, not a public one:
    a token signed with any other key is refused."""
    token = registered_token(stack)
    other_key = resign(token, secrets.token_urlsafe(48))
    answer = httpx.post(
        f"{stack.base}/v1/me/profile",
        json={"about": "x"},
        headers={"Authorization": f"Bearer {other_key}"},
        timeout=10,
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "invalid_token")
    secret_file = Path(stack.settings.state_dir) / "secrets" / "jwt_secret"
    assert secret_file.read_text() == signing_secret(stack.settings)
