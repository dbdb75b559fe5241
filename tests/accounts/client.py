"""Helpers for the accounts tests: an in-process commands app and its HTTP client."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from redis.asyncio import Redis

from commands.service import create_app
from infra.settings import Settings
from parley.wiring import gateway_adapters, open_access, open_media

FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 8 * 1024, "argon2_parallelism": 1}
"""argon2 parameters cheap enough for tests that register many users (the test of
login timing uses the defaults)."""

GENEROUS_LIMITS = {
    "rate_login_account_burst": 1_000,
    "rate_login_address_burst": 1_000,
    "rate_register_address_burst": 1_000,
    # A bucket lives in Redis across services: one that other tests' services emptied at
    # their default refill rate must refill at once here.
    "rate_login_address_per_s": 1_000.0,
    "rate_register_address_per_s": 1_000.0,
}
PASSWORD = "correct horse battery"


def new_handles() -> tuple[str, str]:
    """A fresh (username, phone number) pair."""
    suffix = secrets.token_hex(6)
    return f"u_{suffix}", f"+4477{secrets.randbelow(10**9):09d}"


@asynccontextmanager
async def http_client(
    settings: Settings, address: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh commands app (lifespan run), calling from `address`."""
    app = create_app(settings, open_access, gateway_adapters, open_media)
    client_address = (address or f"10.9.{secrets.randbelow(255)}.{secrets.randbelow(255)}", 40000)
    transport = httpx.ASGITransport(app=app, client=client_address)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://commands") as client,
    ):
        yield client


async def register(client: httpx.AsyncClient, password: str = PASSWORD) -> tuple[str, str, str]:
    """Register a new user; returns (user_id, username, phone)."""
    username, phone = new_handles()
    answer = await client.post(
        "/v1/auth/register",
        json={"username": username, "phone": phone, "display_name": "T", "password": password},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["user_id"], username, phone


async def login(
    client: httpx.AsyncClient,
    username: str,
    password: str = PASSWORD,
    device_id: str = "phone-1",
) -> dict[str, Any]:
    """Log in; returns the token answer."""
    answer = await client.post(
        "/v1/auth/login",
        json={"username": username, "password": password, "device_id": device_id},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


class subscribed:
    """Subscribe to a Redis channel; `await messages()` returns the next JSON message."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.pubsub = redis.pubsub()
        self.channel = channel

    async def __aenter__(self) -> Callable[[], Any]:
        await self.pubsub.subscribe(self.channel)

        async def next_message() -> Any:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    return json.loads(message["data"])
            raise AssertionError(f"nothing published on {self.channel}")

        return next_message

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.unsubscribe(self.channel)
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
