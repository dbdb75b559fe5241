"""Which stored events may not be in Kafka yet, per command partition, and who may write.

The processor publishes the events it saves (`commands.processor.publishing`). One row
per partition of `parley.commands`:

- `owner`: the processor that claimed the partition last. The store's save checks it
  in the same statement that inserts the events (`infra.event_store`), so a processor
  that lost a partition without noticing (a zombie) can no longer store anything for
  its chats: its save is refused as `Fenced`;
- `unpublished_from`: no event of the partition's chats before this position can be
  missing from `parley.events` (NULL: none is missing). The save sets it, when it is
  NULL, to the batch's first position, in the batch's own transaction; the owner moves
  it forward once Kafka acknowledged what came before. It never passes an event Kafka
  has not acknowledged.

A processor that gets a partition claims it (`claim`), then publishes again every
stored event of the partition's chats from `unpublished_from` on, before it decides
anything: the previous owner's tail reaches the log before anything newer of the same
chats, so per-chat order holds across a crash. A copy of an event already published is
a duplicate the consumers skip (same `event_id`, an older chat version).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

TABLE = "publish_marks"

DDL = (
    "CREATE TABLE IF NOT EXISTS publish_marks ("
    " partition integer PRIMARY KEY,"
    " owner text NOT NULL,"
    " unpublished_from bigint,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
)

FENCED_SQLSTATE = "PF001"
"""What the save raises when one of its partitions is not the saving processor's."""


class Fenced(Exception):
    """The save named a partition another processor has claimed since: nothing stored."""


def claim(
    conn: psycopg.Connection[Any], owner: str, partitions: Collection[int], initial: int | None
) -> dict[int, int | None]:
    """Make `owner` the only writer of `partitions`; their `unpublished_from` marks.

    A partition seen for the first time starts at `initial` (what an older relay had
    not published yet, or NULL). Waits for a save in progress on the partitions (their
    rows are locked by it), so the marks returned include that save's.
    """
    parts = sorted(set(partitions))
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "INSERT INTO publish_marks (partition, owner, unpublished_from) "
            "SELECT p, %s, %s FROM unnest(%s::int[]) AS p ON CONFLICT (partition) DO NOTHING",
            (owner, initial, parts),
        )
        rows = cur.execute(
            "SELECT partition, unpublished_from FROM publish_marks "
            "WHERE partition = ANY(%s) ORDER BY partition FOR UPDATE",
            (parts,),
        ).fetchall()
        cur.execute(
            "UPDATE publish_marks SET owner = %s, updated_at = now() WHERE partition = ANY(%s)",
            (owner, parts),
        )
    return {int(p): (int(m) if m is not None else None) for p, m in rows}


def move(conn: psycopg.Connection[Any], owner: str, marks: Mapping[int, int | None]) -> None:
    """Set the owner's partitions' marks (forward only: `None` once all is published)."""
    if not marks:
        return
    parts = list(marks)
    conn.execute(
        "UPDATE publish_marks m SET unpublished_from = v.mark, updated_at = now() "
        "FROM unnest(%s::int[], %s::bigint[]) AS v(partition, mark) "
        "WHERE m.partition = v.partition AND m.owner = %s",
        (parts, [marks[p] for p in parts], owner),
    )


def initial_mark(conn: psycopg.Connection[Any], events_table: str, relay_name: str) -> int | None:
    """Where a partition never claimed starts: after what the relay of an older Parley
    recorded as published, if the store holds more than that; NULL otherwise."""
    cur = conn.cursor(row_factory=tuple_row)
    head_row = cur.execute(
        sql.SQL("SELECT max(notification_id) FROM {}").format(sql.Identifier(events_table))
    ).fetchone()
    head = int(head_row[0] or 0) if head_row else 0
    if head == 0:
        return None
    relayed = 0
    if cur.execute("SELECT to_regclass('relay_position')").fetchone() not in (None, (None,)):
        row = cur.execute(
            "SELECT position FROM relay_position WHERE name = %s", (relay_name,)
        ).fetchone()
        relayed = int(row[0]) if row else 0
    return relayed + 1 if head > relayed else None


def marks(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, int | None]]:
    """Every partition's owner and mark, as an operator or a test reads them."""
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute("SELECT partition, owner, unpublished_from FROM publish_marks ORDER BY partition")
        .fetchall()
    )
    return {int(p): (str(o), (int(m) if m is not None else None)) for p, o, m in rows}
