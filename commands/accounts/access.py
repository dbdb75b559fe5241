"""What the commands service's HTTP routes work with, opened once per app and shared.

The composition root (`parley.wiring.open_access`) opens the accounts store, the
password hasher, the token issuer and the rate limiter; `create_app` keeps the result
on `app.state.access`. Routes reach it with `access_of(request)` and find the caller
with `authenticated(request)`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from commands.accounts.application import Accounts
from commands.ratelimit import RateLimiter
from infra.auth import Identity, Passwords, Tokens
from infra.settings import Settings
from infra.web import authenticated_caller

log = logging.getLogger(__name__)

ACCOUNT_CHANNEL = "parley:account:{user_id}"


def account_channel(user_id: UUID) -> str:
    """The Redis channel on which changes to a user's privacy, contacts and blocks are
    announced, so gateways drop what they cached of that user."""
    return ACCOUNT_CHANNEL.format(user_id=user_id)


@dataclass(frozen=True)
class Access:
    """The accounts store, passwords, tokens and rate limits of one process."""

    settings: Settings
    accounts: Accounts
    passwords: Passwords
    tokens: Tokens
    limiter: RateLimiter
    redis: Redis

    async def announce_account_change(self, user_id: UUID, change: str) -> None:
        message = json.dumps({"user_id": str(user_id), "change": change})
        await self.redis.publish(account_channel(user_id), message)


def access_of(conn: HTTPConnection) -> Access:
    access = conn.app.state.access
    assert isinstance(access, Access)
    return access


def client_address(conn: HTTPConnection) -> str:
    """The caller's address: the socket's peer, or what a trusted proxy (`PARLEY_TRUSTED_PROXIES`)
    put in `X-Forwarded-For`."""
    return conn.client.host if conn.client is not None else "unknown"


async def authenticated(conn: HTTPConnection) -> Identity:
    """The caller of a request (`infra.web.authenticated_caller`)."""
    return await authenticated_caller(conn, access_of(conn).tokens)
