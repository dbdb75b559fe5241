"""A small world of users and chats built through the real write path, for the query tests.

Users are registered with the accounts application (so the user directory has them) and
given real access tokens; chats and messages go through the CommandBus, the processor,
the relay and the workers; `wait_projected` returns once PostgreSQL and Redis hold it all.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import redis
import redis.asyncio

from commands.accounts.application import Accounts
from commands.command import Command, CommandType, Outcome
from commands.gateway.bus import CommandBus
from domain.ids import direct_chat_id
from infra.auth import Tokens
from infra.settings import Settings
from projections.cache import checkpoint_key
from projections.schema import LIVE_SCHEMA
from tests.commands.client import send

PASSWORD_HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
"""Never checked: these users get their tokens issued directly, without logging in."""


@dataclass
class User:
    name: str
    user_id: UUID
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register(accounts: Accounts, settings: Settings, name: str) -> User:
    suffix = secrets.token_hex(5)
    user = accounts.register(
        f"{name}_{suffix}", f"+4478{secrets.randbelow(10**9):09d}", name.title(), PASSWORD_HASH
    )

    async def issue() -> str:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            return (await Tokens(settings, client).issue(user.id, "phone-1")).access_token
        finally:
            await client.aclose()

    return User(name, user.id, asyncio.run(issue()))


def run_commands(settings: Settings, build: Callable[[str], list[Any]]) -> list[Outcome]:
    """Submit the commands `build(reply_to)` returns, in order; every one must succeed."""

    async def go() -> list[Outcome]:
        bus = CommandBus(settings, reply_to=f"queries-{uuid.uuid4().hex[:8]}")
        await bus.start()
        try:
            outcomes: list[Outcome] = []
            for step in build(bus.reply_to):
                if isinstance(step, list):
                    outcomes.extend(await asyncio.gather(*(bus.submit(c) for c in step)))
                else:
                    outcomes.append(await bus.submit(step))
            return outcomes
        finally:
            await bus.stop()

    outcomes = asyncio.run(go())
    failed = [o for o in outcomes if not o.ok]
    assert not failed, failed
    return outcomes


def wait_projected(settings: Settings, outcomes: list[Outcome], deadline_s: float = 60.0) -> None:
    """Wait until every acked command's chat is projected to its position in PostgreSQL,
    and the Redis projections have caught up with PostgreSQL's checkpoints."""
    wanted: dict[UUID, int] = {}
    for outcome in outcomes:
        if outcome.position is not None:
            chat = UUID(outcome.chat_id)
            wanted[chat] = max(wanted.get(chat, 0), outcome.position)
    cache = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            with psycopg.connect(settings.pg_conninfo) as conn:
                rows = conn.execute(
                    f"SELECT chat_id, position FROM {LIVE_SCHEMA}.chats WHERE chat_id = ANY(%s)",
                    (list(wanted),),
                ).fetchall()
                marks = conn.execute(
                    f'SELECT partition, max("offset") FROM {LIVE_SCHEMA}.checkpoints '
                    "GROUP BY partition"
                ).fetchall()
            reached = {row[0]: row[1] for row in rows}
            projected = all(reached.get(c, -1) >= p for c, p in wanted.items())
            cached = {int(k): int(v) for k, v in cache.hgetall(checkpoint_key()).items()}
            in_cache = all(cached.get(part, -1) >= offset for part, offset in marks)
            if projected and in_cache:
                return
            time.sleep(0.05)
    finally:
        cache.close()
    raise AssertionError(f"not projected within {deadline_s}s")


def receipt(chat: UUID, actor: UUID, kind: CommandType, up_to: int, r: str) -> Command:
    return Command(kind, chat, actor, {"up_to": up_to}, reply_to=r)


def remove(chat: UUID, admin: UUID, user: UUID, r: str) -> Command:
    return Command(CommandType.REMOVE_MEMBER, chat, admin, {"user_id": str(user)}, reply_to=r)


def group(chat: UUID, creator: UUID, members: list[UUID], name: str, r: str) -> Command:
    return Command(
        CommandType.CREATE_GROUP,
        chat,
        creator,
        {"name": name, "members": [str(m) for m in members]},
        reply_to=r,
    )


def dm(a: User, b: User) -> UUID:
    return direct_chat_id(a.user_id, b.user_id)


__all__ = ["User", "dm", "group", "receipt", "register", "remove", "run_commands", "send"]
