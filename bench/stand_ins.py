"""Users for benchmarks and tests without the cost of registration: a directory entry
(sends to users the directory does not know are refused) and a session issued directly,
with no password hashing."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from client import Account
from infra.auth import Tokens
from infra.settings import Settings
from projections.directory import enrol_stand_ins


async def stand_in_account(settings: Settings, name: str = "", device: str = "d1") -> Account:
    """A logged-in user known to the directory, named `name` (default: its id's start)."""
    user_id = uuid.uuid4()
    await asyncio.to_thread(enrol_stand_ins, settings.pg_conninfo, [user_id])
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        pair = await Tokens(settings, redis).issue(user_id, device)
    finally:
        await redis.aclose()
    return Account(
        str(user_id), name or str(user_id)[:8], device, pair.access_token, pair.refresh_token
    )
