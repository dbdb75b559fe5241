"""`BulkProjector`: the live `Projector`'s results, with a few statements per batch.

A replay applies millions of events; the live `Projector` sends ~6 statements per event
and is bound by psycopg's per-statement cost (~2,000 events/s on 2 cores). Most of a
log is messages and receipts, and within a *run* of those (no membership change in
between) the order of their effects only matters per chat and per (chat, user):

- messages, inbox rows and receipts of a run's sends are inserted together, for the
  members active then (members do not change within a run);
- a run's receipt events become, per (chat, user), the ranges of seqs each one moves
  (`(previous max up_to, up_to]`, with that event's time), applied in one UPDATE for
  deliveries and one for reads; counts and unread move by what those UPDATEs return.

Every other event (chat creation, membership, rename, admin changes) ends a run and
goes through the `Projector`'s own per-event handler. So does a send in a chat whose
receipt in the same run already covered its seq (the domain never does this, but an old
log might). The checkpoint and chat-version filters are the `Projector`'s, unchanged.

Correctness: the bulk SQL reproduces the effects of the `Projector`'s message and receipt
handlers. tests/replay/test_bulk.py proves it: both projectors, on random histories from
the real domain, give the same tables, equal to the fold's. A change to one projector
that the other does not follow fails that test.

Over 400 lines on purpose: the set-based SQL of four projections, each beside the
others as `projector.py`'s handlers are, so the two read side by side.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection, AsyncCursor, sql

from domain.ids import uuid_of
from infra import pg_arrays
from infra.log_envelope import Envelope
from projections.projector import (
    ACTION_KINDS,
    RECEIPT_EVENTS,
    After,
    Projector,
    Record,
    Statement,
    expires_at,
)

BULK_EVENTS = frozenset({"MessageSent", "MessagesDelivered", "MessagesRead"})

INDEX_PROBES = (
    "SELECT set_config('enable_seqscan', 'off', true), "
    "set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true)"
)
"""Run first in a batch's transaction, before its reads: every statement of the batch
looks up a few hundred or thousand keys in big tables (chat versions, members, receipts,
unread): probe their indexes key by key, never scan and sort a whole table. (Those
settings inflate plan costs past the JIT threshold: JIT off too.) One statement, not
three `SET LOCAL`s: each statement costs the worker an event-loop turn."""


@dataclass
class Run:
    """Consecutive message and receipt events, each with the projections it is due in."""

    items: list[tuple[Envelope, tuple[str, ...]]] = field(default_factory=list)
    covered: dict[UUID, int] = field(default_factory=dict)  # chat -> max receipt up_to

    def accepts(self, e: Envelope) -> bool:
        if e.type != "MessageSent":
            return True
        return int(e.payload["seq"]) > self.covered.get(e.chat_id, 0)

    def add(self, e: Envelope, projections: tuple[str, ...]) -> None:
        self.items.append((e, projections))
        if e.type != "MessageSent":
            up_to = int(e.payload["up_to"])
            self.covered[e.chat_id] = max(self.covered.get(e.chat_id, 0), up_to)

    def of(self, projection: str) -> list[Envelope]:
        return [e for e, projections in self.items if projection in projections]


Step = Run | tuple[Envelope, tuple[str, ...]]


def steps(due: Sequence[tuple[Envelope, tuple[str, ...]]]) -> Iterator[Step]:
    """Cut events into runs of messages and receipts and single other events (replies
    and actions on messages among them: they change other rows than their own)."""
    run = Run()
    for e, projections in due:
        bulk = e.type in BULK_EVENTS and e.payload.get("ref") is None
        if bulk and run.accepts(e):
            run.add(e, projections)
            continue
        if run.items:
            yield run
            run = Run()
        if bulk:
            run.add(e, projections)
        else:
            yield (e, projections)
    if run.items:
        yield run


_PLACEHOLDER = re.compile(r"%[bst](?:::(\w+)\[\])?")
"""A parameter's placeholder, and the element type of the array it is cast to."""


def _typed(kind: str | None, values: Any) -> Any:
    """`values` as the `kind[]` array in PostgreSQL's binary form (`infra.pg_arrays`), or
    as they are when they do not fit it whole (a null among uuids or integers, an id in
    some other form): psycopg then dumps the list itself, element by element, which cost
    the workers 8 % of their CPU on a backlog."""
    if kind is None or type(values) is not list:
        return values
    try:
        if kind == "uuid":
            try:
                return pg_arrays.uuids(values)
            except AttributeError:  # ids as text
                return pg_arrays.uuids([uuid_of(v) for v in values])
        if kind == "int8":
            return pg_arrays.bigints(values)
        if kind in ("int4", "int"):
            return pg_arrays.integers(values)
        if kind == "text":
            return pg_arrays.texts(values)
        if kind == "timestamptz":
            return pg_arrays.timestamptzs(values)
    except (AttributeError, TypeError, ValueError, struct.error):
        return values
    return values


class BulkProjector(Projector):
    """Applies batches like `Projector`, with set-based SQL for runs of messages/receipts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._statements: dict[str, sql.Composed] = {}
        self._kinds: dict[int, tuple[str | None, ...]] = {}  # id(statement) -> its arrays

    def _q(self, statement: str) -> sql.Composed:
        """The statement rendered once, with the array type of each of its parameters."""
        found = self._statements.get(statement)
        if found is None:
            found = self._statements[statement] = super()._q(statement)
            self._kinds[id(found)] = tuple(m[1] for m in _PLACEHOLDER.finditer(statement))
        return found

    async def _run(
        self, cur: AsyncCursor[Any], query: sql.Composed, params: Sequence[Any] = ()
    ) -> None:
        """`cur.execute`, each list given for a typed array built whole (`_typed`)."""
        kinds = self._kinds.get(id(query), ())
        if len(kinds) == len(params):
            params = [_typed(kind, value) for kind, value in zip(kinds, params, strict=True)]
        await cur.execute(query, params or None)

    # The delivered and read cursors reached so far in the batch being applied.
    _reached: tuple[dict[tuple[UUID, str], int], dict[tuple[UUID, str], int]]

    async def apply_batch(
        self,
        conn: AsyncConnection[Any],
        records: Sequence[Record],
        *,
        before: Sequence[Statement] = (),
        after: After | None = None,
    ) -> int:
        async with conn.cursor() as cur, conn.cursor() as vcur, conn.cursor() as ccur:
            chats = {r.envelope.chat_id.int: r.envelope.chat_id for r in records}
            pairs = {
                (r.envelope.chat_id, str(r.envelope.payload["user_id"]))
                for r in records
                if r.envelope.type in RECEIPT_EVENTS
            }
            # What the batch reads first goes out together, in one round trip: the
            # pipeline's closing sync brings every result back (a fetch inside the block
            # would sync once more).
            async with conn.pipeline():
                for statement in before:
                    await conn.execute(*statement)
                await cur.execute(INDEX_PROBES)
                await cur.execute(self.checkpoints_query())
                await self._run(vcur, *self.versions_query(set(chats.values())))
                if pairs:
                    await self._run(ccur, *self._cursors_query(pairs))
            marks = {(row[0], row[1]): row[2] for row in await cur.fetchall()}
            # Chats keyed by their int: hashing a UUID is a Python call, an int's is not.
            versions = {(row[0], row[1].int): row[2] for row in await vcur.fetchall()}
            self._reached = ({}, {})
            for chat_id, user_id, delivered_up_to, read_up_to in (
                await ccur.fetchall() if pairs else ()
            ):
                self._reached[0][(chat_id, str(user_id))] = delivered_up_to
                self._reached[1][(chat_id, str(user_id))] = read_up_to
            moved: dict[tuple[str, int], int] = {}
            bumped: dict[tuple[str, int], int] = {}
            due: list[tuple[Envelope, tuple[str, ...]]] = []
            for record in records:  # the same filters as Projector.apply_batch
                e = record.envelope
                chat = e.chat_id.int
                wanted = []
                for projection in self.projections:
                    key = (projection, record.partition)
                    if record.offset <= moved.get(key, marks.get(key, -1)):
                        continue
                    moved[key] = record.offset
                    chat_key = (projection, chat)
                    if e.aggregate_version <= versions.get(chat_key, 0):
                        continue
                    versions[chat_key] = bumped[chat_key] = e.aggregate_version
                    wanted.append(projection)
                if wanted:
                    due.append((e, tuple(wanted)))
            async with conn.pipeline():
                for step in steps(due):
                    if isinstance(step, Run):
                        await self._apply_run(cur, step)
                    else:
                        for projection in step[1]:
                            await self._apply(cur, projection, step[0])
                await self._save_marks(
                    cur, moved, {(p, chats[c]): v for (p, c), v in bumped.items()}
                )
                if after is not None:
                    await after()
        return sum(len(projections) for _, projections in due)

    def _cursors_query(
        self, pairs: set[tuple[UUID, str]]
    ) -> tuple[sql.Composed, tuple[list[UUID], list[str]]]:
        """The delivered and read cursors of (chat, user) as the batch starts.

        The `chats` projection keeps them in `members`, moved by the same receipt events
        in the same transactions: every receipt at or below a cursor has been moved.
        """
        query = self._q(
            "SELECT m.chat_id, m.user_id, m.delivered_up_to, m.read_up_to FROM {s}.members m "
            "JOIN unnest(%b::uuid[], %b::uuid[]) AS v(chat_id, user_id) "
            "ON m.chat_id = v.chat_id AND m.user_id = v.user_id"
        )
        return query, ([p[0] for p in pairs], [p[1] for p in pairs])

    async def _save_marks(
        self,
        cur: AsyncCursor[Any],
        moved: dict[tuple[str, int], int],
        bumped: dict[tuple[str, UUID], int],
    ) -> None:
        if moved:
            await self._run(
                cur,
                self._q(
                    'INSERT INTO {s}.checkpoints (projection, partition, "offset") '
                    "SELECT * FROM unnest(%b::text[], %b::int[], %b::int8[]) "
                    'ON CONFLICT (projection, partition) DO UPDATE SET "offset" = excluded."offset"'
                ),
                ([k[0] for k in moved], [k[1] for k in moved], list(moved.values())),
            )
        if bumped:
            await self._run(
                cur,
                self._q(
                    "INSERT INTO {s}.chat_versions (projection, chat_id, version) "
                    "SELECT * FROM unnest(%b::text[], %b::uuid[], %b::int8[]) "
                    "ON CONFLICT (projection, chat_id) DO UPDATE SET version = excluded.version"
                ),
                ([k[0] for k in bumped], [k[1] for k in bumped], list(bumped.values())),
            )

    async def _apply_run(self, cur: AsyncCursor[Any], run: Run) -> None:
        for projection in self.projections:
            events = run.of(projection)
            if events:
                await getattr(self, f"_run_{projection}")(cur, events)

    # chats

    async def _run_chats(self, cur: AsyncCursor[Any], events: list[Envelope]) -> None:
        last_sent: dict[UUID, Envelope] = {}
        last_shown: dict[UUID, int] = {}  # chat -> seq of its newest send that is no action
        position: dict[UUID, int] = {}
        activity: dict[UUID, datetime] = {}
        cursors: dict[tuple[UUID, str], list[int]] = {}  # -> [delivered, read]
        for e in events:
            position[e.chat_id] = max(position.get(e.chat_id, 0), e.position)
            if e.type == "MessageSent":
                last_sent[e.chat_id] = e
                if e.payload["kind"] not in ACTION_KINDS:
                    last_shown[e.chat_id] = int(e.payload["seq"])
                activity[e.chat_id] = e.timestamp
                continue
            marks = cursors.setdefault((e.chat_id, str(e.payload["user_id"])), [0, 0])
            up_to = int(e.payload["up_to"])
            marks[0] = max(marks[0], up_to)
            if e.type == "MessagesRead":
                marks[1] = max(marks[1], up_to)
        if last_sent:
            sends = list(last_sent.values())
            await self._run(
                cur,
                self._q(
                    "UPDATE {s}.chats c SET last_seq = v.seq, last_message_id = v.message_id, "
                    "last_sender = v.sender, last_message_seq = coalesce(v.shown, "
                    "c.last_message_seq) FROM unnest(%b::uuid[], %b::int8[], %b::int8[], "
                    "%b::uuid[], %b::int8[]) AS v(chat_id, seq, message_id, sender, shown) "
                    "WHERE c.chat_id = v.chat_id AND c.last_seq < v.seq"
                ),
                (
                    [e.chat_id for e in sends],
                    [int(e.payload["seq"]) for e in sends],
                    [int(e.payload["message_id"]) for e in sends],
                    [str(e.payload["sender"]) for e in sends],
                    [last_shown.get(e.chat_id) for e in sends],
                ),
            )
        if cursors:
            await self._run(
                cur,
                self._q(
                    "UPDATE {s}.members m SET delivered_up_to = GREATEST(m.delivered_up_to, v.d), "
                    "read_up_to = GREATEST(m.read_up_to, v.r) FROM unnest(%b::uuid[], "
                    "%b::uuid[], %b::int8[], %b::int8[]) AS v(chat_id, user_id, d, r) "
                    "WHERE m.chat_id = v.chat_id AND m.user_id = v.user_id"
                ),
                (
                    [k[0] for k in cursors],
                    [k[1] for k in cursors],
                    [m[0] for m in cursors.values()],
                    [m[1] for m in cursors.values()],
                ),
            )
        chats = list(position)
        await self._run(
            cur,
            self._q(
                "UPDATE {s}.chats c SET position = GREATEST(c.position, v.position), "
                "last_activity_at = coalesce(v.activity, c.last_activity_at) "
                "FROM unnest(%b::uuid[], %b::int8[], %b::timestamptz[]) "
                "AS v(chat_id, position, activity) WHERE c.chat_id = v.chat_id"
            ),
            (chats, [position[c] for c in chats], [activity.get(c) for c in chats]),
        )

    # messages

    async def _run_messages(self, cur: AsyncCursor[Any], events: list[Envelope]) -> None:
        sends = [e for e in events if e.type == "MessageSent"]
        if not sends:
            return
        p = [e.payload for e in sends]
        await self._run(
            cur,
            self._q(
                "INSERT INTO {s}.messages (chat_id, seq, message_id, sender, device_id, local_id, "
                "kind, body, media, sent_at, expires_at, forwarded) SELECT v.chat_id, v.seq, "
                "v.message_id, v.sender, v.device_id, v.local_id, v.kind, decode(v.body, "
                "'base64'), v.media::jsonb, v.sent_at, v.expires_at, v.forwarded "
                "FROM unnest(%b::uuid[], %b::int8[], %b::int8[], %b::uuid[], %b::text[], "
                "%b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[], "
                "%b::timestamptz[], %b::int4[]) AS v(chat_id, seq, message_id, sender, "
                "device_id, local_id, kind, body, media, sent_at, expires_at, forwarded) "
                "ON CONFLICT (chat_id, seq) DO NOTHING"
            ),
            (
                [e.chat_id for e in sends],
                [int(x["seq"]) for x in p],
                [int(x["message_id"]) for x in p],
                [str(x["sender"]) for x in p],
                [x["device_id"] for x in p],
                [x["local_id"] for x in p],
                [x["kind"] for x in p],
                [x["body"] for x in p],
                [None if x["media"] is None else orjson.dumps(x["media"]).decode() for x in p],
                [e.timestamp for e in sends],
                [expires_at(e) for e in sends],
                [int(x.get("forwarded", 0)) for x in p],
            ),
        )

    # receipts

    async def _run_receipts(self, cur: AsyncCursor[Any], events: list[Envelope]) -> None:
        sends = [e for e in events if e.type == "MessageSent"]
        receipts = [e for e in events if e.type != "MessageSent"]
        delivered = _ranges(receipts, self._reached[0])
        read = _ranges([e for e in receipts if e.type == "MessagesRead"], self._reached[1])
        if sends:
            # A run's own receipts are inserted with the status its receipt events give
            # them (each seq is covered by at most one range per user); the UPDATEs below
            # then move only receipts from before the run, which the status guards select.
            await self._run(
                cur,
                self._q(
                    "WITH v AS (SELECT * FROM unnest(%b::uuid[], %b::int8[], %b::uuid[]) "
                    "  AS v(chat_id, seq, sender)), "
                    f"d AS (SELECT * FROM {_RANGES}), r AS (SELECT * FROM {_RANGES}), "
                    "ins AS (INSERT INTO {s}.receipts "
                    "  (chat_id, recipient, seq, status, delivered_at, read_at) "
                    "  SELECT v.chat_id, m.user_id, v.seq, CASE WHEN r.at IS NOT NULL THEN 'READ' "
                    "  WHEN d.at IS NOT NULL THEN 'DELIVERED' ELSE 'SENT' END, d.at, r.at "
                    "  FROM v JOIN {s}.members m "
                    "  ON m.chat_id = v.chat_id AND m.active AND m.user_id <> v.sender "
                    "  LEFT JOIN d ON d.chat_id = v.chat_id AND d.user_id = m.user_id "
                    "  AND v.seq > d.lo AND v.seq <= d.hi "
                    "  LEFT JOIN r ON r.chat_id = v.chat_id AND r.user_id = m.user_id "
                    "  AND v.seq > r.lo AND v.seq <= r.hi "
                    "  ON CONFLICT DO NOTHING RETURNING chat_id, recipient, seq, status), "
                    "counts AS (INSERT INTO {s}.receipt_counts (chat_id, seq, recipients, "
                    "  delivered, read) SELECT chat_id, seq, sum(n), sum(d), sum(r) FROM ("
                    "  SELECT chat_id, seq, 1 AS n, (status <> 'SENT')::int AS d, "
                    "  (status = 'READ')::int AS r FROM ins "
                    "  UNION ALL SELECT chat_id, seq, 0, 0, 0 FROM v) c GROUP BY 1, 2 "
                    "  ON CONFLICT DO NOTHING) "
                    "INSERT INTO {s}.unread (user_id, chat_id, count) "
                    "SELECT recipient, chat_id, count(*) FILTER (WHERE status <> 'READ') FROM ins "
                    "GROUP BY recipient, chat_id ON CONFLICT (user_id, chat_id) DO UPDATE "
                    "SET count = {s}.unread.count + excluded.count"
                ),
                (
                    [e.chat_id for e in sends],
                    [int(e.payload["seq"]) for e in sends],
                    [str(e.payload["sender"]) for e in sends],
                    *_columns(delivered),
                    *_columns(read),
                ),
            )
        if delivered:
            await self._run(
                cur,
                self._q(
                    "WITH moved AS (UPDATE {s}.receipts r "
                    "  SET status = 'DELIVERED', delivered_at = v.at "
                    f"  FROM {_RANGES} WHERE r.chat_id = v.chat_id AND r.recipient = v.user_id "
                    "  AND r.seq > v.lo AND r.seq <= v.hi AND r.status = 'SENT' "
                    "  RETURNING r.chat_id, r.seq) "
                    "UPDATE {s}.receipt_counts rc SET delivered = rc.delivered + m.n "
                    "FROM (SELECT chat_id, seq, count(*) AS n FROM moved GROUP BY 1, 2) m "
                    "WHERE rc.chat_id = m.chat_id AND rc.seq = m.seq"
                ),
                _columns(delivered),
            )
        if read:
            await self._run(
                cur,
                self._q(
                    "WITH moved AS (UPDATE {s}.receipts r SET status = 'READ', read_at = v.at "
                    f"  FROM {_RANGES} WHERE r.chat_id = v.chat_id AND r.recipient = v.user_id "
                    "  AND r.seq > v.lo AND r.seq <= v.hi AND r.status = 'DELIVERED' "
                    "  RETURNING r.chat_id, r.seq, r.recipient), "
                    "counts AS (UPDATE {s}.receipt_counts rc SET read = rc.read + m.n "
                    "  FROM (SELECT chat_id, seq, count(*) AS n FROM moved GROUP BY 1, 2) m "
                    "  WHERE rc.chat_id = m.chat_id AND rc.seq = m.seq) "
                    "UPDATE {s}.unread u SET count = u.count - m.n "
                    "FROM (SELECT recipient, chat_id, count(*) AS n FROM moved GROUP BY 1, 2) m "
                    "WHERE u.user_id = m.recipient AND u.chat_id = m.chat_id"
                ),
                _columns(read),
            )

    # inbox

    async def _run_inbox(self, cur: AsyncCursor[Any], events: list[Envelope]) -> None:
        up_to: dict[tuple[UUID, str], int] = {}
        for e in events:
            if e.type != "MessageSent":
                key = (e.chat_id, str(e.payload["user_id"]))
                up_to[key] = max(up_to.get(key, 0), int(e.payload["up_to"]))
        marks = ([k[0] for k in up_to], [k[1] for k in up_to], list(up_to.values()))
        sends = [e for e in events if e.type == "MessageSent"]
        if sends:
            # Rows a receipt later in the run deletes again are not inserted at all.
            await self._run(
                cur,
                self._q(
                    "INSERT INTO {s}.inbox (recipient, chat_id, seq, message_id, created_at) "
                    "SELECT m.user_id, v.chat_id, v.seq, v.message_id, v.at FROM unnest("
                    "%b::uuid[], %b::int8[], %b::int8[], %b::timestamptz[], %b::uuid[]) "
                    "AS v(chat_id, seq, message_id, at, sender) JOIN {s}.members m "
                    "ON m.chat_id = v.chat_id AND m.active AND m.user_id <> v.sender "
                    "LEFT JOIN unnest(%b::uuid[], %b::uuid[], %b::int8[]) AS u(chat_id, user_id, "
                    "up_to) ON u.chat_id = v.chat_id AND u.user_id = m.user_id "
                    "WHERE u.up_to IS NULL OR v.seq > u.up_to ON CONFLICT DO NOTHING"
                ),
                (
                    [e.chat_id for e in sends],
                    [int(e.payload["seq"]) for e in sends],
                    [int(e.payload["message_id"]) for e in sends],
                    [e.timestamp for e in sends],
                    [str(e.payload["sender"]) for e in sends],
                    *marks,
                ),
            )
        if up_to:
            await self._run(
                cur,
                self._q(
                    "DELETE FROM {s}.inbox i USING unnest(%b::uuid[], %b::uuid[], %b::int8[]) "
                    "AS v(chat_id, user_id, up_to) WHERE i.recipient = v.user_id "
                    "AND i.chat_id = v.chat_id AND i.seq <= v.up_to"
                ),
                marks,
            )


_RANGES = (
    "unnest(%b::uuid[], %b::uuid[], %b::int8[], %b::int8[], %b::timestamptz[]) "
    "AS v(chat_id, user_id, lo, hi, at)"
)

Range = tuple[UUID, str, int, int, datetime]


def _ranges(receipts: list[Envelope], reached: dict[tuple[UUID, str], int]) -> list[Range]:
    """Per (chat, user), the seqs each receipt event moves first: (max before, up_to].

    `reached` holds each cursor as it stood before (the batch's start, then the runs
    before this one) and is moved on: a receipt touches only the receipts above the
    cursor, not the user's whole history in the chat.
    """
    out: list[Range] = []
    for e in receipts:
        key = (e.chat_id, str(e.payload["user_id"]))
        before, up_to = reached.get(key, 0), int(e.payload["up_to"])
        if up_to > before:
            out.append((key[0], key[1], before, up_to, e.timestamp))
            reached[key] = up_to
    return out


def _columns(ranges: list[Range]) -> tuple[list[Any], ...]:
    return tuple([r[i] for r in ranges] for i in range(5))
