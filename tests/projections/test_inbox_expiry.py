"""The inbox keeps a message for its recipient 30 days (the seed's rule), by the caller's clock.

Rows go into the live read model's `inbox` with their real creation times; the clock the
expiry runs at is moved instead of waiting: a row is kept up to 30 days and dropped after.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from infra.settings import Settings
from projections.projector import expire_inbox

DAY = timedelta(days=1)


def test_an_inbox_row_is_kept_30_days_and_dropped_after(settings: Settings) -> None:
    recipient, chat = uuid.uuid4(), uuid.uuid4()
    created = datetime(2001, 1, 1, 12, tzinfo=UTC)  # older than any other test's rows
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        for seq, age in ((1, 0 * DAY), (2, 2 * DAY)):  # seq 2 arrived two days later
            conn.execute(
                "INSERT INTO read.inbox (recipient, chat_id, seq, message_id, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (recipient, chat, seq, seq, created + age),
            )

    def expire_at(now: datetime) -> int:
        async def run() -> int:
            async with await psycopg.AsyncConnection.connect(
                settings.pg_conninfo, autocommit=True
            ) as conn:
                return await expire_inbox(conn, settings.inbox_ttl_days, now)

        return asyncio.run(run())

    def left() -> list[int]:
        with psycopg.connect(settings.pg_conninfo) as conn:
            rows = conn.execute(
                "SELECT seq FROM read.inbox WHERE recipient = %s ORDER BY seq", (recipient,)
            ).fetchall()
        return [row[0] for row in rows]

    assert settings.inbox_ttl_days == 30
    assert expire_at(created + 30 * DAY) == 0  # exactly 30 days: still kept
    assert left() == [1, 2]
    assert expire_at(created + 30 * DAY + timedelta(seconds=1)) == 1
    assert left() == [2]
    assert expire_at(created + 32 * DAY) == 0
    assert expire_at(created + 32 * DAY + timedelta(seconds=1)) == 1
    assert left() == []
