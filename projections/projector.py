"""Apply events from the log to the PostgreSQL read model, idempotently.

`Projector.apply_batch` takes (partition, offset, envelope) records in log order and
applies each event to every projection whose checkpoint has not passed it, then moves
those checkpoints, all in the caller's transaction: a crash leaves either the whole
batch or none of it, and a redelivered event is skipped by its checkpoint. The SQL is
also idempotent on its own (upserts keyed by (chat, seq), status guards on receipts),
so an event re-published under a new offset changes nothing either.

Events are applied one at a time, projection by projection, because the receipts and
inbox of a message go to the members *at that point of the log*; the statements need no
results, so psycopg's pipeline sends them without waiting for each round trip.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor, sql

from infra.log_envelope import Envelope
from projections.schema import LIVE_SCHEMA

ORDER = ("chats", "messages", "receipts", "inbox")
"""Apply order within one event: receipts and inbox read the members `chats` keeps."""

DEPENDS_ON = {"chats": (), "messages": (), "receipts": ("chats",), "inbox": ("chats",)}

RECEIPT_EVENTS = frozenset({"MessagesDelivered", "MessagesRead"})

ACTION_KINDS = frozenset({"reaction", "edit", "delete"})
"""Kinds of messages that act on the message their `ref` names (domain/message_actions.py)."""
NOTICE_KINDS = frozenset({*ACTION_KINDS, "timer"})
"""Kinds that are no message of their own: no receipts, nobody's unread, no push."""


def expiry(kind: str, timer_s: int | None, sent_at: datetime) -> datetime | None:
    """When a message sent under a disappearing-messages timer is erased (None: never)."""
    if not timer_s or kind in NOTICE_KINDS:
        return None
    return sent_at + timedelta(seconds=timer_s)


def expires_at(e: Envelope) -> datetime | None:
    """`expiry` of a `MessageSent` envelope."""
    return expiry(e.payload["kind"], e.payload.get("timer_s"), e.timestamp)


Statement = tuple[sql.SQL | sql.Composed | str, Any]
"""A query and its parameters (None for none)."""

After = Callable[[], Awaitable[None]]
"""Queues statements in the pipeline of a batch's writes (`Projector.apply_batch`)."""


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    envelope: Envelope


class Projector:
    """Applies batches to the projections named, in the tables of one schema."""

    def __init__(self, projections: Sequence[str] = ORDER, schema: str = LIVE_SCHEMA) -> None:
        unknown = set(projections) - set(ORDER)
        if unknown:
            raise ValueError(f"unknown projections: {sorted(unknown)}")
        self.projections = [p for p in ORDER if p in projections]
        self.schema = schema

    def _q(self, statement: str) -> sql.Composed:
        return sql.SQL(statement).format(s=sql.Identifier(self.schema))

    def checkpoints_query(self) -> sql.Composed:
        return self._q('SELECT projection, partition, "offset" FROM {s}.checkpoints')

    async def checkpoints(self, cur: AsyncCursor[Any]) -> dict[tuple[str, int], int]:
        await cur.execute(self.checkpoints_query())
        return {(row[0], row[1]): row[2] for row in await cur.fetchall()}

    async def apply_batch(
        self,
        conn: AsyncConnection[Any],
        records: Sequence[Record],
        *,
        before: Sequence[Statement] = (),
        after: After | None = None,
    ) -> int:
        """Apply what is new in `records` inside the current transaction; count applied.

        `before` are statements run first, with the batch's first reads (the live
        worker's lock and BEGIN); `after` queues statements behind the batch's writes, in
        their round trip (the worker's reads for Redis, and COMMIT)."""
        applied = 0
        async with conn.cursor() as cur:
            for statement in before:
                await conn.execute(*statement)
            marks = await self.checkpoints(cur)
            versions = await self._versions(cur, {r.envelope.chat_id for r in records})
            moved: dict[tuple[str, int], int] = {}
            bumped: dict[tuple[str, UUID], int] = {}
            async with conn.pipeline():
                for record in records:
                    e = record.envelope
                    for projection in self.projections:
                        key = (projection, record.partition)
                        if record.offset <= moved.get(key, marks.get(key, -1)):
                            continue  # redelivered: this offset is applied already
                        moved[key] = record.offset
                        chat_key = (projection, e.chat_id)
                        if e.aggregate_version <= versions.get(chat_key, 0):
                            continue  # re-published: this event is applied already
                        versions[chat_key] = bumped[chat_key] = e.aggregate_version
                        await self._apply(cur, projection, e)
                        applied += 1
                for (projection, partition), offset in moved.items():
                    await cur.execute(
                        self._q(
                            'INSERT INTO {s}.checkpoints (projection, partition, "offset") '
                            "VALUES (%s, %s, %s) ON CONFLICT (projection, partition) "
                            'DO UPDATE SET "offset" = excluded."offset"'
                        ),
                        (projection, partition, offset),
                    )
                for (projection, chat_id), version in bumped.items():
                    await cur.execute(
                        self._q(
                            "INSERT INTO {s}.chat_versions (projection, chat_id, version) "
                            "VALUES (%s, %s, %s) ON CONFLICT (projection, chat_id) "
                            "DO UPDATE SET version = excluded.version"
                        ),
                        (projection, chat_id, version),
                    )
                if after is not None:
                    await after()
        return applied

    def versions_query(self, chat_ids: set[UUID]) -> tuple[sql.Composed, tuple[Any, ...]]:
        # One index probe per (projection, chat): a subquery in the select list is never
        # turned into a join or a scan. `projection = ANY(..) AND chat_id = ANY(..)` was
        # planned, with the statistics of the bench's young tables, on the projection
        # alone, which matches every row: 1.6-2.2 ms a batch, growing with the table.
        query = self._q(
            "SELECT * FROM (SELECT p.projection, c.chat_id, (SELECT v.version "
            "FROM {s}.chat_versions v WHERE v.projection = p.projection "
            "AND v.chat_id = c.chat_id) AS version FROM unnest(%s::text[]) AS p(projection), "
            "unnest(%s::uuid[]) AS c(chat_id) OFFSET 0) x WHERE version IS NOT NULL"
        )
        return query, (list(self.projections), list(chat_ids))

    async def _versions(
        self, cur: AsyncCursor[Any], chat_ids: set[UUID]
    ) -> dict[tuple[str, UUID], int]:
        await cur.execute(*self.versions_query(chat_ids))
        return {(row[0], row[1]): row[2] for row in await cur.fetchall()}

    async def _apply(self, cur: AsyncCursor[Any], projection: str, e: Envelope) -> None:
        handler = getattr(self, f"_{projection}_{e.type}", None)
        if handler is not None:
            await handler(cur, e, e.payload)
        if projection == "chats":
            # `position` moves with every event (read-your-writes waits on it per chat);
            # receipts do not count as activity that reorders a chat list.
            activity = e.timestamp if e.type not in RECEIPT_EVENTS else None
            await cur.execute(
                self._q(
                    "UPDATE {s}.chats SET position = GREATEST(position, %s), "
                    "last_activity_at = coalesce(%s, last_activity_at) WHERE chat_id = %s"
                ),
                (e.position, activity, e.chat_id),
            )

    # chats: chats, members, membership history

    async def _join(self, cur: AsyncCursor[Any], e: Envelope, user: UUID, role: str) -> None:
        await cur.execute(
            self._q(
                "INSERT INTO {s}.members (chat_id, user_id, role, active, joined_at) "
                "VALUES (%s, %s, %s, true, %s) ON CONFLICT (chat_id, user_id) DO UPDATE "
                "SET role = excluded.role, active = true, joined_at = excluded.joined_at"
            ),
            (e.chat_id, user, role, e.timestamp),
        )
        await cur.execute(
            self._q(
                "INSERT INTO {s}.membership_history (chat_id, user_id, joined_after_seq) "
                "SELECT %s, %s, last_seq FROM {s}.chats WHERE chat_id = %s "
                "ON CONFLICT (chat_id, user_id, joined_after_seq) "
                "DO UPDATE SET left_at_seq = NULL, left_at_message_seq = NULL"
            ),
            (e.chat_id, user, e.chat_id),
        )

    async def _leave(self, cur: AsyncCursor[Any], e: Envelope, user: UUID) -> None:
        await cur.execute(
            self._q(
                "UPDATE {s}.members SET active = false, role = 'member' "
                "WHERE chat_id = %s AND user_id = %s"
            ),
            (e.chat_id, user),
        )
        await cur.execute(
            self._q(
                "UPDATE {s}.membership_history h SET left_at_seq = c.last_seq, "
                "left_at_message_seq = c.last_message_seq FROM {s}.chats c "
                "WHERE h.chat_id = %s AND h.user_id = %s AND h.left_at_seq IS NULL "
                "AND c.chat_id = h.chat_id"
            ),
            (e.chat_id, user),
        )

    async def _new_chat(
        self, cur: AsyncCursor[Any], e: Envelope, kind: str, name: str | None, created_by: UUID
    ) -> None:
        await cur.execute(
            self._q(
                "INSERT INTO {s}.chats (chat_id, kind, name, created_by, created_at, "
                "last_activity_at, position) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (chat_id) DO NOTHING"
            ),
            (e.chat_id, kind, name, created_by, e.timestamp, e.timestamp, e.position),
        )

    async def _chats_DirectChatOpened(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._new_chat(cur, e, "direct", None, UUID(p["opened_by"]))
        for user in p["members"]:
            await self._join(cur, e, UUID(user), "member")

    async def _chats_GroupCreated(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        creator = UUID(p["created_by"])
        await self._new_chat(cur, e, "group", p["name"], creator)
        for user in p["members"]:
            await self._join(cur, e, UUID(user), "admin" if UUID(user) == creator else "member")

    async def _chats_GroupRenamed(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await cur.execute(
            self._q("UPDATE {s}.chats SET name = %s WHERE chat_id = %s"), (p["name"], e.chat_id)
        )

    async def _chats_MemberAdded(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._join(cur, e, UUID(p["user_id"]), "member")

    async def _chats_MemberRemoved(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._leave(cur, e, UUID(p["user_id"]))

    async def _chats_MemberLeft(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._leave(cur, e, UUID(p["user_id"]))

    async def _set_role(self, cur: AsyncCursor[Any], e: Envelope, user: str, role: str) -> None:
        await cur.execute(
            self._q("UPDATE {s}.members SET role = %s WHERE chat_id = %s AND user_id = %s"),
            (role, e.chat_id, UUID(user)),
        )

    async def _chats_AdminPromoted(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._set_role(cur, e, p["user_id"], "admin")

    async def _chats_AdminDemoted(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._set_role(cur, e, p["user_id"], "member")

    async def _chats_MessageSent(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        shown = None if p["kind"] in ACTION_KINDS else p["seq"]  # the chat list's last message
        await cur.execute(
            self._q(
                "UPDATE {s}.chats SET last_seq = GREATEST(last_seq, %s), "
                "last_message_id = %s, last_sender = %s, "
                "last_message_seq = coalesce(%s, last_message_seq) "
                "WHERE chat_id = %s AND last_seq < %s"
            ),
            (p["seq"], int(p["message_id"]), UUID(p["sender"]), shown, e.chat_id, p["seq"]),
        )

    async def _cursors(self, cur: AsyncCursor[Any], e: Envelope, p: Any, read: bool) -> None:
        await cur.execute(
            self._q(
                "UPDATE {s}.members SET delivered_up_to = GREATEST(delivered_up_to, %s), "
                "read_up_to = CASE WHEN %s THEN GREATEST(read_up_to, %s) ELSE read_up_to END "
                "WHERE chat_id = %s AND user_id = %s"
            ),
            (p["up_to"], read, p["up_to"], e.chat_id, UUID(p["user_id"])),
        )

    async def _chats_MessagesDelivered(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._cursors(cur, e, p, read=False)

    async def _chats_MessagesRead(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._cursors(cur, e, p, read=True)

    # messages: messages and actions on them, reactions, the texts edits replaced

    async def _messages_MessageSent(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        from orjson import dumps

        await cur.execute(
            self._q(
                "INSERT INTO {s}.messages (chat_id, seq, message_id, sender, device_id, local_id, "
                "kind, body, media, sent_at, ref, quote, expires_at, forwarded) VALUES (%s, %s, "
                "%s, %s, %s, %s, %s, decode(%s, 'base64'), %s::jsonb, %s, %s, %s::jsonb, %s, %s) "
                "ON CONFLICT (chat_id, seq) DO NOTHING"
            ),
            (
                e.chat_id,
                p["seq"],
                int(p["message_id"]),
                UUID(p["sender"]),
                p["device_id"],
                p["local_id"],
                p["kind"],
                p["body"],
                None if p["media"] is None else dumps(p["media"]).decode(),
                e.timestamp,
                p.get("ref"),
                None if p.get("quote") is None else dumps(p["quote"]).decode(),
                expires_at(e),
                p.get("forwarded", 0),
            ),
        )
        action = getattr(self, f"_on_{p['kind']}", None)
        if action is not None:
            keys = {"chat": e.chat_id, "seq": p["seq"], "ref": p["ref"], "at": e.timestamp}
            await action(cur, keys, p)

    async def _on_reaction(self, cur: AsyncCursor[Any], keys: dict[str, Any], p: Any) -> None:
        """One reaction per user and message: set, changed, or removed (an empty body)."""
        if p["body"]:
            await cur.execute(
                self._q(
                    "INSERT INTO {s}.reactions (chat_id, seq, user_id, emoji, reacted_at) "
                    "VALUES (%(chat)s, %(ref)s, %(user)s, convert_from(decode(%(body)s, "
                    "'base64'), 'UTF8'), %(at)s) ON CONFLICT (chat_id, seq, user_id) "
                    "DO UPDATE SET emoji = excluded.emoji, reacted_at = excluded.reacted_at"
                ),
                {**keys, "user": UUID(p["sender"]), "body": p["body"]},
            )
        else:
            await cur.execute(
                self._q(
                    "DELETE FROM {s}.reactions "
                    "WHERE chat_id = %(chat)s AND seq = %(ref)s AND user_id = %(user)s"
                ),
                {**keys, "user": UUID(p["sender"])},
            )

    async def _on_edit(self, cur: AsyncCursor[Any], keys: dict[str, Any], p: Any) -> None:
        """The message shows the new text; the text it replaces is kept for its sender,
        and the earlier edits' rows lose theirs (a member syncing sees the latest only)."""
        for statement in (
            "INSERT INTO {s}.message_versions (chat_id, seq, edit_seq, body, written_at) "
            "SELECT chat_id, seq, %(seq)s, body, coalesce(edited_at, sent_at) FROM {s}.messages "
            "WHERE chat_id = %(chat)s AND seq = %(ref)s AND deleted_at IS NULL "
            "ON CONFLICT DO NOTHING",
            "UPDATE {s}.messages SET body = '' WHERE chat_id = %(chat)s AND ref = %(ref)s "
            "AND kind = 'edit' AND seq < %(seq)s",
            "UPDATE {s}.messages SET body = decode(%(body)s, 'base64'), edited_at = %(at)s "
            "WHERE chat_id = %(chat)s AND seq = %(ref)s AND deleted_at IS NULL",
        ):
            await cur.execute(self._q(statement), {**keys, "body": p["body"]})

    async def _on_delete(self, cur: AsyncCursor[Any], keys: dict[str, Any], p: Any) -> None:
        """A tombstone: the message, its edits, its versions and its reactions lose their
        content (a reaction's message keeps no emoji); the replies quoting it show it
        deleted."""
        for statement in (
            "UPDATE {s}.messages SET body = '', media = NULL, quote = NULL, edited_at = NULL, "
            "deleted_at = %(at)s WHERE chat_id = %(chat)s AND seq = %(ref)s",
            "UPDATE {s}.messages SET body = '' WHERE chat_id = %(chat)s AND ref = %(ref)s "
            "AND kind IN ('edit', 'reaction')",
            "UPDATE {s}.messages SET quote = jsonb_build_object('seq', %(ref)s, 'deleted', true) "
            "WHERE chat_id = %(chat)s AND ref = %(ref)s "
            "AND kind NOT IN ('reaction', 'edit', 'delete', 'timer')",
            "DELETE FROM {s}.message_versions WHERE chat_id = %(chat)s AND seq = %(ref)s",
            "DELETE FROM {s}.reactions WHERE chat_id = %(chat)s AND seq = %(ref)s",
        ):
            await cur.execute(self._q(statement), keys)

    # receipts: per (message, recipient) status, per-message counts, unread per (user, chat)

    async def _receipts_MessageSent(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        if p["kind"] in NOTICE_KINDS:
            return
        await cur.execute(
            self._q(
                "WITH ins AS (INSERT INTO {s}.receipts (chat_id, recipient, seq, status) "
                "  SELECT chat_id, user_id, %(seq)s, 'SENT' FROM {s}.members "
                "  WHERE chat_id = %(chat)s AND active AND user_id <> %(sender)s "
                "  ON CONFLICT DO NOTHING RETURNING recipient), "
                "counts AS (INSERT INTO {s}.receipt_counts (chat_id, seq, recipients) "
                "  SELECT %(chat)s, %(seq)s, count(*) FROM ins ON CONFLICT DO NOTHING) "
                "INSERT INTO {s}.unread (user_id, chat_id, count) "
                "SELECT recipient, %(chat)s, 1 FROM ins "
                "ON CONFLICT (user_id, chat_id) DO UPDATE SET count = {s}.unread.count + 1"
            ),
            {"seq": p["seq"], "chat": e.chat_id, "sender": UUID(p["sender"])},
        )

    async def _deliver(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await cur.execute(
            self._q(
                "WITH moved AS (UPDATE {s}.receipts "
                "  SET status = 'DELIVERED', delivered_at = %(at)s "
                "  WHERE chat_id = %(chat)s AND recipient = %(user)s AND seq <= %(up_to)s "
                "  AND status = 'SENT' RETURNING seq) "
                "UPDATE {s}.receipt_counts rc SET delivered = rc.delivered + 1 FROM moved "
                "WHERE rc.chat_id = %(chat)s AND rc.seq = moved.seq"
            ),
            {"at": e.timestamp, "chat": e.chat_id, "user": UUID(p["user_id"]), "up_to": p["up_to"]},
        )

    async def _receipts_MessagesDelivered(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._deliver(cur, e, p)

    async def _receipts_MessagesRead(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._deliver(cur, e, p)
        await cur.execute(
            self._q(
                "WITH moved AS (UPDATE {s}.receipts SET status = 'READ', read_at = %(at)s "
                "  WHERE chat_id = %(chat)s AND recipient = %(user)s AND seq <= %(up_to)s "
                "  AND status = 'DELIVERED' RETURNING seq), "
                "counts AS (UPDATE {s}.receipt_counts rc SET read = rc.read + 1 FROM moved "
                "  WHERE rc.chat_id = %(chat)s AND rc.seq = moved.seq) "
                "UPDATE {s}.unread SET count = count - (SELECT count(*) FROM moved) "
                "WHERE user_id = %(user)s AND chat_id = %(chat)s"
            ),
            {"at": e.timestamp, "chat": e.chat_id, "user": UUID(p["user_id"]), "up_to": p["up_to"]},
        )

    # inbox: what each recipient has not yet had delivered

    async def _inbox_MessageSent(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await cur.execute(
            self._q(
                "INSERT INTO {s}.inbox (recipient, chat_id, seq, message_id, created_at) "
                "SELECT user_id, chat_id, %s, %s, %s FROM {s}.members "
                "WHERE chat_id = %s AND active AND user_id <> %s ON CONFLICT DO NOTHING"
            ),
            (p["seq"], int(p["message_id"]), e.timestamp, e.chat_id, UUID(p["sender"])),
        )

    async def _drop_inbox(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await cur.execute(
            self._q("DELETE FROM {s}.inbox WHERE recipient = %s AND chat_id = %s AND seq <= %s"),
            (UUID(p["user_id"]), e.chat_id, p["up_to"]),
        )

    async def _inbox_MessagesDelivered(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._drop_inbox(cur, e, p)

    async def _inbox_MessagesRead(self, cur: AsyncCursor[Any], e: Envelope, p: Any) -> None:
        await self._drop_inbox(cur, e, p)


async def expire_inbox(
    conn: AsyncConnection[Any], ttl_days: float, now: datetime, schema: str = LIVE_SCHEMA
) -> int:
    """Drop inbox rows older than the TTL (the seed's 30 days) at `now`; return how many.

    The caller's clock decides `now` (the workers': the wall clock), so a test can move it.
    """
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL("DELETE FROM {s}.inbox WHERE created_at < %s").format(s=sql.Identifier(schema)),
            (now - timedelta(days=ttl_days),),
        )
        return cur.rowcount
