"""Push notification tables: the devices' push targets, each user's push preferences,
the messages waiting out their grace period and the record of every notification.

They live in their own schema, `push`: like the user directory they are written outside
the projections (targets and preferences by the accounts API, the rest by the notifier,
`streams/notifier.py`), so a replay that swaps `read` never touches them.

- `targets`: one per (user, device): registering again replaces it, logging out or
  removing the device deletes it, and so does a provider saying it is gone.
- `prefs`: whether a notification may show a preview, do-not-disturb, muted chats.
- `pending`: one row per stored message (by event id) until its grace period is over.
- `notifications`: one row per (event, user, device) that was due a push: the record
  that makes a replay of the log send nothing twice, and the notifier's work queue
  (`state`: due, sent, skipped, gone, failed, dead).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

PUSH_SCHEMA = "push"
PROVIDERS = ("webpush", "fcm", "apns")

PUSH_DDL = (
    "SELECT pg_advisory_xact_lock(hashtext('parley:push-ddl'))",
    f"CREATE SCHEMA IF NOT EXISTS {PUSH_SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {PUSH_SCHEMA}.targets ("
    " user_id uuid NOT NULL, device_id text NOT NULL, provider text NOT NULL,"
    " target jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (user_id, device_id))",
    f"CREATE TABLE IF NOT EXISTS {PUSH_SCHEMA}.prefs ("
    " user_id uuid PRIMARY KEY, previews boolean NOT NULL DEFAULT false,"
    " dnd boolean NOT NULL DEFAULT false, muted uuid[] NOT NULL DEFAULT '{}')",
    f"CREATE TABLE IF NOT EXISTS {PUSH_SCHEMA}.pending ("
    " event_id uuid PRIMARY KEY, chat_id uuid NOT NULL, seq bigint NOT NULL,"
    ' sender uuid NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL,'
    " due_at timestamptz NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS pending_by_due ON {PUSH_SCHEMA}.pending (due_at)",
    f"CREATE TABLE IF NOT EXISTS {PUSH_SCHEMA}.notifications ("
    " event_id uuid NOT NULL, user_id uuid NOT NULL, device_id text NOT NULL,"
    " chat_id uuid NOT NULL, seq bigint NOT NULL, sender uuid NOT NULL,"
    " provider text NOT NULL, state text NOT NULL, tries int NOT NULL DEFAULT 0,"
    " next_at timestamptz NOT NULL, last_error text,"
    " created_at timestamptz NOT NULL DEFAULT now(), sent_at timestamptz,"
    " PRIMARY KEY (event_id, user_id, device_id))",
    f"CREATE INDEX IF NOT EXISTS notifications_due ON {PUSH_SCHEMA}.notifications (next_at)"
    " WHERE state = 'due'",
    f"CREATE INDEX IF NOT EXISTS notifications_by_device ON {PUSH_SCHEMA}.notifications"
    " (user_id, device_id, chat_id)",
)


async def register_target(
    conn: psycopg.AsyncConnection[Any],
    user_id: UUID,
    device_id: str,
    provider: str,
    target: dict[str, Any],
) -> None:
    """Set the device's push target, replacing the one it had."""
    await conn.execute(
        f"INSERT INTO {PUSH_SCHEMA}.targets (user_id, device_id, provider, target) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, device_id) DO UPDATE SET "
        "provider = excluded.provider, target = excluded.target, updated_at = now()",
        (user_id, device_id, provider, Jsonb(target)),
    )


async def remove_targets(
    conn: psycopg.AsyncConnection[Any], user_id: UUID, device_id: str | None
) -> int:
    """Forget the device's push target (every device's with None); count those removed."""
    if device_id is None:
        cur = await conn.execute(
            f"DELETE FROM {PUSH_SCHEMA}.targets WHERE user_id = %s", (user_id,)
        )
    else:
        cur = await conn.execute(
            f"DELETE FROM {PUSH_SCHEMA}.targets WHERE user_id = %s AND device_id = %s",
            (user_id, device_id),
        )
    return cur.rowcount


async def read_target(
    conn: psycopg.AsyncConnection[Any], user_id: UUID, device_id: str
) -> tuple[str, dict[str, Any]] | None:
    """The device's (provider, target), or None."""
    cur = await conn.execute(
        f"SELECT provider, target FROM {PUSH_SCHEMA}.targets WHERE user_id = %s AND device_id = %s",
        (user_id, device_id),
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1])


async def read_prefs(conn: psycopg.AsyncConnection[Any], user_id: UUID) -> dict[str, Any]:
    cur = await conn.execute(
        f"SELECT previews, dnd, muted FROM {PUSH_SCHEMA}.prefs WHERE user_id = %s", (user_id,)
    )
    row = await cur.fetchone()
    previews, dnd, muted = row if row is not None else (False, False, [])
    return {"previews": previews, "dnd": dnd, "muted": sorted(str(m) for m in muted)}


async def write_prefs(
    conn: psycopg.AsyncConnection[Any],
    user_id: UUID,
    previews: bool | None,
    dnd: bool | None,
    mute: list[UUID],
    unmute: list[UUID],
) -> None:
    """Change what is given; the rest stays as it was."""
    await conn.execute(
        f"INSERT INTO {PUSH_SCHEMA}.prefs AS p (user_id) VALUES (%s) ON CONFLICT DO NOTHING",
        (user_id,),
    )
    await conn.execute(
        f"UPDATE {PUSH_SCHEMA}.prefs SET previews = coalesce(%s, previews), "
        "dnd = coalesce(%s, dnd), muted = ARRAY(SELECT DISTINCT m FROM unnest(muted || %s::uuid[])"
        " AS m WHERE m <> ALL(%s::uuid[])) WHERE user_id = %s",
        (previews, dnd, mute, unmute, user_id),
    )
