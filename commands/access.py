"""What the commands service's HTTP routes work with, opened once per app and shared.

`open_access(settings)` opens the accounts store, the password hasher, the token issuer
and the rate limiter; `create_app` keeps the result on `app.state.access`. Routes reach
it with `access_of(request)` and find the caller with `authenticated(request)`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from commands.accounts import Accounts, open_accounts
from commands.auth import Identity, Passwords, Tokens
from commands.ratelimit import RateLimiter, buckets_from_settings
from domain.account_errors import InvalidToken
from infra.settings import Settings

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


@asynccontextmanager
async def open_access(settings: Settings) -> AsyncIterator[Access]:
    """Open everything the routes need; close it on the way out."""
    accounts = await run_in_threadpool(open_accounts, settings)
    # A blocking pool: a burst (hundreds of sockets closing at once) waits for a
    # connection instead of failing with MaxConnectionsError. A pool handed to a client
    # brings its own retry policy, none by default: after a Redis restart every pooled
    # connection then failed its next command once (`/v1/auth/refresh` answered 500).
    # This is the policy redis-py gives the clients it builds from a URL: a broken
    # connection is dropped and the command sent again on a new one.
    redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=10,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), 10),
        )
    )
    try:
        passwords = await run_in_threadpool(Passwords, settings)
        tokens = Tokens(settings, redis)
        limiter = RateLimiter(redis, buckets_from_settings(settings))
        yield Access(settings, accounts, passwords, tokens, limiter, redis)
    finally:
        await redis.aclose()
        accounts.close()


def access_of(conn: HTTPConnection) -> Access:
    access = conn.app.state.access
    assert isinstance(access, Access)
    return access


def client_address(conn: HTTPConnection) -> str:
    """The caller's address: the socket's peer, or what a trusted proxy (`PARLEY_TRUSTED_PROXIES`)
    put in `X-Forwarded-For`."""
    return conn.client.host if conn.client is not None else "unknown"


async def authenticated(conn: HTTPConnection) -> Identity:
    """The caller of a request or WebSocket carrying `Authorization: Bearer <access token>`."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("send 'Authorization: Bearer <access token>'")
    identity = await access_of(conn).tokens.authenticate(token.strip())
    conn.state.user_id = str(identity.user_id)
    return identity
