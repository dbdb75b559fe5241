"""Reads of a few keys touch the rows of those keys, not whole tables or chat histories.

- The live worker reads, each batch, the chat versions of its chats (first round trip)
  and the unread counts of their members (second). Written as plain selects,
  PostgreSQL scanned a whole index for each: the unread counts because their key
  starts with the user, the versions with some of the statistics the bench's tables
  had. That cost 1-2 ms each per batch in `parley bench projection`, growing with the
  tables.
- One message's receipts (the query API's receipts) were read by (chat, seq) from a
  table keyed by (chat, recipient, seq): every receipt of the chat, 24 ms for a group
  of 256 with 2,000 messages, growing with its history.

Each is now one index probe per key. These tests count the pages each
read touches, with the custom and the generic plan PostgreSQL may cache for it, on
tables without statistics: a probe costs about four pages a row, a scan hundreds or
thousands.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from infra.scratch import drop_database, fresh_database
from infra.settings import Settings
from projections.bulk import INDEX_PROBES, BulkProjector
from projections.cache import unread_query
from projections.directory import DIRECTORY_SCHEMA
from projections.schema import LIVE_SCHEMA, migrate
from queries.receipts import _RECEIPTS

CHATS = 20_000
GROUP_MEMBERS, GROUP_MESSAGES = 64, 4_000


@pytest.fixture(scope="module")
def filled(settings: Settings) -> Iterator[tuple[Settings, list[uuid.UUID]]]:
    """A read model with CHATS chats, two members each, versions and unread counts for
    all of them, and a group (the first chat) with a long history of receipts, and no
    statistics; and the ids of the chats."""
    name = f"{settings.pg_db}_reads"
    fresh_database(settings, name)
    scratch = settings.replace(pg_db=name)
    migrate(scratch)
    s = sql.Identifier(LIVE_SCHEMA)
    with psycopg.connect(scratch.pg_conninfo) as conn:
        chats = [uuid.uuid4() for _ in range(CHATS)]
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.chat_versions (projection, chat_id, version) "
                "SELECT p, c, 7 FROM unnest(%s::text[]) AS p, unnest(%s::uuid[]) AS c"
            ).format(s=s),
            (list(BulkProjector().projections), chats),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.members (chat_id, user_id, role, active, joined_at) "
                "SELECT c, gen_random_uuid(), 'member', true, now() "
                "FROM unnest(%s::uuid[]) AS c, generate_series(1, 2)"
            ).format(s=s),
            (chats,),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.unread (user_id, chat_id, count) "
                "SELECT user_id, chat_id, 3 FROM {s}.members"
            ).format(s=s)
        )
        group = uuid.uuid4()
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.members (chat_id, user_id, role, active, joined_at) "
                "SELECT %s, gen_random_uuid(), 'member', g %% 8 > 0, now() "
                "FROM generate_series(1, %s) AS g"
            ).format(s=s),
            (group, GROUP_MEMBERS),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.receipts (chat_id, recipient, seq, status) "
                "SELECT m.chat_id, m.user_id, g, 'READ' FROM {s}.members m, "
                "generate_series(1, %s) AS g WHERE m.chat_id = %s"
            ).format(s=s),
            (GROUP_MESSAGES, group),
        )
        # Joined after every message: a member, but no recipient of any.
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.members (chat_id, user_id, role, active, joined_at) "
                "VALUES (%s, gen_random_uuid(), 'member', true, now())"
            ).format(s=s),
            (group,),
        )
        chats.insert(0, group)
        # Every member is a user of the directory; one in a hundred blocked someone, and
        # so did three of the group's members (the directory exists: `migrate`).
        conn.execute(
            sql.SQL(
                "INSERT INTO {d}.users (user_id, username, display_name, last_seen_privacy, "
                "blocks, version) SELECT user_id, user_id::text, 'u', 'everyone', "
                "CASE WHEN n % 100 = 0 THEN ARRAY[user_id] ELSE '{{}}' END, 1 "
                "FROM (SELECT DISTINCT user_id, row_number() OVER () AS n "
                "FROM {s}.members) m"
            ).format(d=sql.Identifier(DIRECTORY_SCHEMA), s=s)
        )
        conn.execute(
            sql.SQL(
                "UPDATE {d}.users SET blocks = ARRAY[user_id] WHERE user_id IN "
                "(SELECT user_id FROM {s}.members WHERE chat_id = %s LIMIT 3)"
            ).format(d=sql.Identifier(DIRECTORY_SCHEMA), s=s),
            (group,),
        )
    yield scratch, chats
    drop_database(settings, name)


def buffers(conn: psycopg.Connection[Any], query: sql.Composable, params: list[Any]) -> int:
    """Pages the query reads, with the plan PostgreSQL caches for it as the services run it
    (a prepared statement: a custom plan at first, then maybe a generic one); the most
    of the two."""
    text = query.as_string(conn)
    counter = iter(range(1, len(params) + 1))
    prepared = re.sub("%s", lambda _: f"${next(counter)}", text)
    client = psycopg.ClientCursor(conn)
    pages = 0
    for mode in ("force_custom_plan", "force_generic_plan"):
        conn.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Literal(mode)))
        conn.execute(sql.SQL("PREPARE probe AS ") + sql.SQL(prepared))
        args = sql.SQL(", ").join(sql.Literal(p) for p in params)
        row = client.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE probe(") + args + sql.SQL(")")
        ).fetchone()
        conn.execute("DEALLOCATE probe")
        assert row is not None
        plan = row[0][0]["Plan"]
        pages = max(pages, plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0))
    return pages


def test_chat_versions_are_read_key_by_key(
    filled: tuple[Settings, list[uuid.UUID]],
) -> None:
    scratch, chats = filled
    projector = BulkProjector()
    asked = set(chats[1:4])
    with psycopg.connect(scratch.pg_conninfo) as conn:
        conn.execute(INDEX_PROBES)
        query, params = projector.versions_query(asked)
        rows = conn.execute(query, params).fetchall()
        assert sorted((p, c, v) for p, c, v in rows) == sorted(
            (p, c, 7) for p in projector.projections for c in asked
        )
        # 12 keys asked, in a table of 80,000 rows (a scan of its key: ~400 pages).
        assert buffers(conn, query, list(params)) <= 8 * len(rows)
        # A chat without versions yet (its first event) gives no row.
        query, params = projector.versions_query({uuid.uuid4()})
        assert conn.execute(query, params).fetchall() == []


def test_unread_counts_are_read_through_the_members(
    filled: tuple[Settings, list[uuid.UUID]],
) -> None:
    scratch, chats = filled
    asked = chats[1:4]
    with psycopg.connect(scratch.pg_conninfo) as conn:
        conn.execute(INDEX_PROBES)
        query, params = unread_query(asked)
        rows = conn.execute(query, params).fetchall()
        assert len(rows) == 2 * len(asked)
        assert {chat for _, chat, _ in rows} == set(asked)
        assert all(count == 3 for _, _, count in rows)
        # 6 members asked, in tables of 40,000 rows (a scan of a key: ~200 pages).
        assert buffers(conn, query, list(params)) <= 8 * len(rows)


def test_one_messages_receipts_are_read_through_the_members(
    filled: tuple[Settings, list[uuid.UUID]],
) -> None:
    scratch, chats = filled
    group, seq = chats[0], GROUP_MESSAGES // 2
    with psycopg.connect(scratch.pg_conninfo) as conn:
        # The query API's receipts of one message (queries/receipts.py).
        query = _RECEIPTS
        named = {"chat": group, "seq": seq}
        rows = conn.execute(query, named).fetchall()
        # Removed members' receipts included, the member who joined later not.
        assert len(rows) == GROUP_MEMBERS
        assert [row[0] for row in rows] == sorted(row[0] for row in rows)
        # 64 receipts asked, in a chat of 256,000 (its scan: over a thousand pages).
        positional = sql.SQL(
            query.as_string(conn).replace("%(seq)s", "%s").replace("%(chat)s", "%s")
        )
        assert buffers(conn, positional, [seq, group]) <= 8 * len(rows)
