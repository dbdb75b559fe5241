"""Read-model migrations on a schema that already holds rows: what each fills in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from infra.settings import Settings
from projections.schema import migrate
from tests.projections.model import user

SCHEMA = "migration_test"


@pytest.fixture
def schema(settings: Settings) -> Iterator[str]:
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    migrate(settings, SCHEMA)
    yield SCHEMA
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


def test_migration_6_finds_each_chats_last_message_among_the_messages_projected(
    settings: Settings, schema: str
) -> None:
    chat, now = uuid.uuid4(), datetime.now(UTC)
    stays, left = user(0), user(1)
    kinds = ["text", "media", "reaction", "edit", "text", "delete"]  # seqs 1-6
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.chats (chat_id, kind, created_by, created_at, last_seq, "
            "last_activity_at) VALUES (%s, 'group', %s, %s, 6, %s)",
            (chat, stays, now, now),
        )
        for seq, kind in enumerate(kinds, 1):
            conn.execute(
                f"INSERT INTO {schema}.messages (chat_id, seq, message_id, sender, device_id, "
                "local_id, kind, body, sent_at) VALUES (%s, %s, %s, %s, 'd', %s, %s, '', %s)",
                (chat, seq, uuid.uuid4().int >> 65, stays, f"l{seq}", kind, now),
            )
        conn.execute(
            f"INSERT INTO {schema}.membership_history (chat_id, user_id, joined_after_seq, "
            "left_at_seq) VALUES (%s, %s, 0, NULL), (%s, %s, 0, 4), (%s, %s, 5, NULL)",
            (chat, stays, chat, left, chat, left),
        )
        # The schema as version 5 left it: no last message anywhere.
        conn.execute(f"DELETE FROM {schema}.schema_version WHERE version = 6")

    assert migrate(settings, schema) >= 6

    with psycopg.connect(settings.pg_conninfo) as conn:
        last = conn.execute(
            f"SELECT last_message_seq FROM {schema}.chats WHERE chat_id = %s", (chat,)
        ).fetchone()
        history = conn.execute(
            f"SELECT user_id, joined_after_seq, left_at_message_seq "
            f"FROM {schema}.membership_history ORDER BY 1, 2"
        ).fetchall()
    assert last == (5,)  # not the delete at 6
    assert history == [(stays, 0, None), (left, 0, 2), (left, 5, None)]  # 2: before the actions
