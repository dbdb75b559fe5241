"""Which messages of a chat a user may see, and which seqs make up a page of history.

A user sees a chat if they are or were a member of it; within it, the messages sent
while they were a member: seq in `(joined_after_seq, left_at_seq]` for each row of
`read.membership_history` (`left_at_seq` null while a member, i.e. up to the chat's
last seq). Seqs are gapless, so a page is computed from these intervals alone and
then fetched by seq, from the recent-messages cache or from PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql

from domain.errors import UnknownChat
from projections.schema import LIVE_SCHEMA
from queries.params import MAX_SEQ

Interval = tuple[int, int]
"""`(after, until)`: the seqs `after < seq <= until` (both bounds known, `after < until`)."""

_MEMBERSHIP = sql.SQL(
    "SELECT c.kind, c.last_seq, m.active, m.role, h.joined_after_seq, h.left_at_seq "
    "FROM {s}.members m JOIN {s}.chats c ON c.chat_id = m.chat_id "
    "LEFT JOIN {s}.membership_history h ON h.chat_id = m.chat_id AND h.user_id = m.user_id "
    "WHERE m.chat_id = %s AND m.user_id = %s"
).format(s=sql.Identifier(LIVE_SCHEMA))


@dataclass(frozen=True, slots=True)
class Membership:
    """One user's standing in one chat they are or were a member of."""

    chat_id: UUID
    kind: str
    last_seq: int
    active: bool
    role: str
    intervals: tuple[Interval, ...]  # sorted, disjoint, non-empty

    def sees(self, seq: int) -> bool:
        return any(after < seq <= until for after, until in self.intervals)

    @property
    def first_visible(self) -> int | None:
        return self.intervals[0][0] + 1 if self.intervals else None

    @property
    def last_visible(self) -> int | None:
        return self.intervals[-1][1] if self.intervals else None


def visible_intervals(rows: list[tuple[int, int | None]], last_seq: int) -> tuple[Interval, ...]:
    """History rows `(joined_after_seq, left_at_seq)` as sorted, merged, non-empty intervals."""
    capped = sorted(
        (after, last_seq if until is None else min(until, last_seq)) for after, until in rows
    )
    merged: list[Interval] = []
    for after, until in capped:
        if until <= after:
            continue
        if merged and after <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], until))
        else:
            merged.append((after, until))
    return tuple(merged)


async def load_membership(conn: AsyncConnection[Any], chat_id: UUID, user_id: UUID) -> Membership:
    """The user's membership of the chat; `unknown_chat` if they never were a member."""
    cur = await conn.execute(_MEMBERSHIP, (chat_id, user_id))
    rows = await cur.fetchall()
    if not rows:
        raise UnknownChat()
    kind, last_seq, active, role = rows[0][:4]
    history = [(row[4], row[5]) for row in rows if row[4] is not None]
    return Membership(chat_id, kind, last_seq, active, role, visible_intervals(history, last_seq))


@dataclass(frozen=True, slots=True)
class Page:
    """The seqs of one page (ascending) and the cursors to the pages around it."""

    seqs: tuple[int, ...]
    before_seq: int | None  # pass as `before_seq` for the older page; None: there is none
    after_seq: int | None  # pass as `after_seq` for the newer page; None: none yet


def page_of(
    intervals: tuple[Interval, ...], after: int | None, before: int | None, limit: int
) -> Page:
    """The visible seqs with `after < seq < before`, at most `limit`.

    With `after` the page is the oldest such seqs (reading forwards); without it, the
    newest (reading backwards from `before`, or from the latest message).
    """
    low = 1 if after is None else after + 1
    high = MAX_SEQ if before is None else before - 1
    picked: list[int] = []
    if after is not None:
        for start, until in intervals:
            first, last = max(start + 1, low), min(until, high)
            if first <= last:
                picked.extend(range(first, min(last, first + limit - len(picked) - 1) + 1))
            if len(picked) >= limit:
                break
    else:
        for start, until in reversed(intervals):
            first, last = max(start + 1, low), min(until, high)
            if first <= last:
                stop = max(first, last - (limit - len(picked)) + 1)
                picked.extend(range(last, stop - 1, -1))
            if len(picked) >= limit:
                break
        picked.reverse()
    lowest = intervals[0][0] + 1 if intervals else None
    highest = intervals[-1][1] if intervals else None
    older_bound = picked[0] if picked else (low if after is not None else high + 1)
    newer_bound = picked[-1] if picked else high
    has_older = lowest is not None and lowest < older_bound
    has_newer = highest is not None and highest > newer_bound
    return Page(
        tuple(picked),
        older_bound if has_older else None,
        newer_bound if has_newer else None,
    )
