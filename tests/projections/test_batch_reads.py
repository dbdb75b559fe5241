"""The live worker's per-batch reads touch the rows of the batch's chats, not whole tables.

A batch reads the chat versions of its chats (first round trip) and the unread counts
of their members (second). Written as plain selects, PostgreSQL scanned a whole index
for each: the unread counts because their key starts with the user, the versions with
some of the statistics the bench's tables had. That cost 1-2 ms each per batch in
`parley bench projection`, and grows with the tables. Each read is now one index probe
per key; these tests count the pages it touches, with the custom and the generic plan
PostgreSQL may cache for it, on tables without statistics (a probe: about four pages a
row; a scan: hundreds).
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
from projections.schema import LIVE_SCHEMA, migrate

CHATS = 20_000


@pytest.fixture(scope="module")
def filled(settings: Settings) -> Iterator[tuple[Settings, list[uuid.UUID]]]:
    """A read model with CHATS chats, two members each, versions and unread counts for
    all of them, and no statistics; and the ids of the chats."""
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
    yield scratch, chats
    drop_database(settings, name)


def buffers(conn: psycopg.Connection[Any], query: sql.Composable, params: list[Any]) -> int:
    """Pages the query reads, with the plan PostgreSQL caches for it as the worker runs it
    (a prepared statement: a custom plan at first, then maybe a generic one); the most
    of the two."""
    text = query.as_string(conn)
    counter = iter(range(1, len(params) + 1))
    prepared = re.sub("%s", lambda _: f"${next(counter)}", text)
    client = psycopg.ClientCursor(conn)
    pages = 0
    for mode in ("force_custom_plan", "force_generic_plan"):
        conn.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Literal(mode)))
        conn.execute(sql.SQL("PREPARE probe AS ") + sql.SQL(prepared))  # type: ignore[arg-type]
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
    asked = set(chats[:3])
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
    asked = chats[:3]
    with psycopg.connect(scratch.pg_conninfo) as conn:
        conn.execute(INDEX_PROBES)
        query, params = unread_query(asked)
        rows = conn.execute(query, params).fetchall()
        assert len(rows) == 2 * len(asked)
        assert {chat for _, chat, _ in rows} == set(asked)
        assert all(count == 3 for _, _, count in rows)
        # 6 members asked, in tables of 40,000 rows (a scan of a key: ~200 pages).
        assert buffers(conn, query, list(params)) <= 8 * len(rows)
