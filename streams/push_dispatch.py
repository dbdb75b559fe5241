"""From a message waiting out its grace period to a push on each of its recipients'
devices: the notifier's two steps after `streams/notifier.py` has recorded the message.

1. `fan_out`: a pending message whose grace period is over, once the receipts projection
   has applied it, becomes one `push.notifications` row per device of each recipient
   the message is still undelivered to (its receipt is still SENT), unless that
   recipient muted the chat, is in do-not-disturb, or blocked the sender. The sender
   has no receipt, so their own other devices are never notified. The row's key,
   (event id, user, device), is the record that a replay of the log never passes twice.
2. `send_due`: the due rows, grouped by (user, device, chat), each group one push that
   says how many messages of the chat the user has not had yet and replaces the
   previous one (the providers' collapse key). A group the user's `delivered` cursor
   has passed meanwhile is skipped.

The later messages of a chat whose first pending message is due go with it, whatever
their own grace: the device has been away for a grace period already, and ten messages
in a row make one push ("10 new messages"), not ten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import aiohttp
import httpx
import psycopg

from infra.push.provider import Notification, Outcome, Provider, Result
from infra.retry import Backoff
from infra.settings import Settings
from projections.directory import DIRECTORY_SCHEMA
from projections.push_store import PUSH_SCHEMA
from projections.schema import LIVE_SCHEMA
from streams import notifier_metrics

log = logging.getLogger("parley.notifier")

P, R, D = PUSH_SCHEMA, LIVE_SCHEMA, DIRECTORY_SCHEMA
PREVIEW_CHARS = 80

FAN_OUT = f"""
WITH due_chats AS (
  SELECT p.chat_id FROM {P}.pending p WHERE p.due_at <= now()
  GROUP BY p.chat_id ORDER BY min(p.due_at) LIMIT %(limit)s
), due AS (
  SELECT p.* FROM {P}.pending p WHERE p.chat_id IN (SELECT chat_id FROM due_chats)
  FOR UPDATE SKIP LOCKED
), ready AS (
  SELECT d.* FROM due d JOIN {R}.checkpoints c ON c.projection = 'receipts'
    AND c.partition = d.partition AND c."offset" >= d."offset"
), fanned AS (
  INSERT INTO {P}.notifications
    (event_id, user_id, device_id, chat_id, seq, sender, provider, state, next_at)
  SELECT r.event_id, t.user_id, t.device_id, r.chat_id, r.seq, r.sender, t.provider, 'due', now()
  FROM ready r
  JOIN {R}.receipts rc ON rc.chat_id = r.chat_id AND rc.seq = r.seq AND rc.status = 'SENT'
  JOIN {P}.targets t ON t.user_id = rc.recipient
  LEFT JOIN {P}.prefs pf ON pf.user_id = rc.recipient
  LEFT JOIN {D}.users u ON u.user_id = rc.recipient
  WHERE NOT coalesce(pf.dnd, false)
    AND r.chat_id <> ALL(coalesce(pf.muted, '{{}}'))
    AND r.sender <> ALL(coalesce(u.blocks, '{{}}'))
  ON CONFLICT DO NOTHING
  RETURNING 1
), gone AS (
  DELETE FROM {P}.pending WHERE event_id IN (SELECT event_id FROM ready)
    OR due_at < now() - make_interval(secs => %(max_age)s)
)
SELECT (SELECT count(*) FROM ready), (SELECT count(*) FROM fanned)
"""

DUE_GROUPS = f"""
SELECT n.user_id, n.device_id, n.chat_id, n.provider, array_agg(n.event_id), max(n.seq),
  (array_agg(n.sender ORDER BY n.seq DESC))[1], max(n.tries)
FROM {P}.notifications n WHERE n.state = 'due' AND n.next_at <= now()
GROUP BY n.user_id, n.device_id, n.chat_id, n.provider
ORDER BY min(n.next_at) LIMIT %s
"""

BATCH_CONTEXT = f"""
SELECT g.i, coalesce(m.delivered_up_to, 0), t.target, t.updated_at, u.display_name,
  coalesce(pf.previews, false), msg.body,
  (SELECT count(*) FROM {P}.notifications n WHERE n.user_id = g.user_id
     AND n.device_id = g.device_id AND n.chat_id = g.chat_id AND n.state IN ('due', 'sent')
     AND n.seq > coalesce(m.delivered_up_to, 0))
FROM unnest(%s::int[], %s::uuid[], %s::text[], %s::uuid[], %s::text[], %s::uuid[], %s::bigint[])
  AS g(i, user_id, device_id, chat_id, provider, sender, seq)
LEFT JOIN {R}.members m ON m.chat_id = g.chat_id AND m.user_id = g.user_id
LEFT JOIN {P}.targets t ON t.user_id = g.user_id AND t.device_id = g.device_id
  AND t.provider = g.provider
LEFT JOIN {D}.users u ON u.user_id = g.sender
LEFT JOIN {P}.prefs pf ON pf.user_id = g.user_id
LEFT JOIN {R}.messages msg ON msg.chat_id = g.chat_id AND msg.seq = g.seq AND msg.kind = 'text'
"""

MARK = f"""
UPDATE {P}.notifications n SET state = v.state, tries = n.tries + 1,
  last_error = nullif(v.error, ''), sent_at = CASE WHEN v.state = 'sent' THEN now() END
FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[])
  AS v(event_id, user_id, device_id, state, error)
WHERE n.event_id = v.event_id AND n.user_id = v.user_id AND n.device_id = v.device_id
"""

DeadLetter = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Group:
    """The due notifications of one device for one chat: one push."""

    user_id: UUID
    device_id: str
    chat_id: UUID
    provider: str
    event_ids: list[UUID]
    seq: int  # the newest
    sender: UUID  # of the newest
    tries: int

    @property
    def key(self) -> dict[str, Any]:
        return {"user": self.user_id, "device": self.device_id, "ids": self.event_ids}


async def fan_out(conn: psycopg.AsyncConnection[Any], settings: Settings) -> int:
    """Turn the pending messages whose grace period is over into due notifications;
    count the notifications made. One transaction: a crash leaves all or nothing."""
    async with conn.transaction():
        cur = await conn.execute(
            FAN_OUT, {"limit": settings.push_batch_max, "max_age": settings.push_max_age_s}
        )
        row = await cur.fetchone()
    ready, made = row if row is not None else (0, 0)
    if ready:
        log.debug("event=push_fan_out messages=%d notifications=%d", ready, made)
    return int(made)


async def due_groups(conn: psycopg.AsyncConnection[Any], limit: int) -> list[Group]:
    cur = await conn.execute(DUE_GROUPS, (limit,))
    return [Group(*row) for row in await cur.fetchall()]


@dataclass(frozen=True)
class Planned:
    """A group about to be sent: its notification, and the target as it was read."""

    group: Group
    note: Notification
    target: dict[str, Any]
    target_at: datetime


class Sender:
    """Sends due groups through the providers and records each outcome.

    A batch costs one query for what its pushes say, then per `push_concurrency` groups:
    their sends at once, and one UPDATE recording them. What a killed notifier had sent
    but not recorded is at most that many pushes."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        dead_letter: DeadLetter,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.dead_letter = dead_letter

    async def send(self, conn: psycopg.AsyncConnection[Any], groups: list[Group]) -> None:
        planned, settled = await self._plan(conn, groups)
        await self._mark(conn, settled)
        step = max(1, self.settings.push_concurrency)
        for start in range(0, len(planned), step):
            chunk = planned[start : start + step]
            results = await asyncio.gather(*(self._attempt(p) for p in chunk))
            done = []
            for plan, result in zip(chunk, results, strict=True):
                _log(plan.group, result)
                if result.outcome is Outcome.RETRY:
                    await self._retry(conn, plan.group, result)
                    continue
                if result.outcome is Outcome.GONE:
                    # Only the target that failed: a device that registered again keeps
                    # its new one.
                    await conn.execute(
                        f"DELETE FROM {P}.targets WHERE user_id = %s AND device_id = %s "
                        "AND updated_at = %s",
                        (plan.group.user_id, plan.group.device_id, plan.target_at),
                    )
                done.append((plan.group, result.outcome.value, result.detail))
            await self._mark(conn, done)

    async def _plan(
        self, conn: psycopg.AsyncConnection[Any], groups: list[Group]
    ) -> tuple[list[Planned], list[tuple[Group, str, str]]]:
        """The pushes to send, and the groups settled without one (delivered meanwhile:
        skipped; no target any more: gone; provider off: failed)."""
        cur = await conn.execute(
            BATCH_CONTEXT,
            [
                list(range(len(groups))),
                [g.user_id for g in groups],
                [g.device_id for g in groups],
                [g.chat_id for g in groups],
                [g.provider for g in groups],
                [g.sender for g in groups],
                [g.seq for g in groups],
            ],
        )
        planned: list[Planned] = []
        settled: list[tuple[Group, str, str]] = []
        for i, delivered, target, target_at, name, previews, body, count in await cur.fetchall():
            group = groups[i]
            if delivered >= group.seq:
                settled.append((group, "skipped", ""))
            elif target is None:
                settled.append((group, "gone", "no target"))
            elif group.provider not in self.providers:
                settled.append((group, "failed", "provider off"))
            else:
                preview = None
                if previews and body is not None:
                    preview = bytes(body).decode("utf-8", "replace")[:PREVIEW_CHARS]
                note = Notification(
                    str(group.chat_id), name or "Someone", max(1, int(count)), preview
                )
                planned.append(Planned(group, note, target, target_at))
        return planned, settled

    async def _attempt(self, plan: Planned) -> Result:
        provider = self.providers[plan.group.provider]
        try:
            return await asyncio.wait_for(
                provider.send(plan.target, plan.note), timeout=self.settings.push_timeout_s
            )
        except (TimeoutError, OSError, aiohttp.ClientError, httpx.TransportError) as exc:
            return Result(Outcome.RETRY, 0, None, type(exc).__name__)

    async def _retry(
        self, conn: psycopg.AsyncConnection[Any], group: Group, result: Result
    ) -> None:
        """Again after Retry-After or the backoff; dead-lettered after the last try."""
        if group.tries + 1 >= self.settings.push_max_tries:
            await self._mark(conn, [(group, "dead", f"{result.status} {result.detail}")])
            await self.dead_letter(
                {
                    "user_id": str(group.user_id),
                    "device_id": group.device_id,
                    "chat_id": str(group.chat_id),
                    "provider": group.provider,
                    "event_ids": [str(e) for e in group.event_ids],
                    "tries": group.tries + 1,
                    "status": result.status,
                    "error": result.detail,
                }
            )
            return
        backoff = Backoff(self.settings.push_backoff_s, self.settings.push_backoff_max_s)
        wait = max(backoff.after(group.tries + 1), result.retry_after_s or 0.0)
        await conn.execute(
            f"UPDATE {P}.notifications SET tries = tries + 1, last_error = %(error)s, "
            "next_at = now() + make_interval(secs => %(wait)s) "
            "WHERE event_id = ANY(%(ids)s) AND user_id = %(user)s AND device_id = %(device)s",
            {**group.key, "error": f"{result.status} {result.detail}"[:200], "wait": wait},
        )

    async def _mark(
        self, conn: psycopg.AsyncConnection[Any], outcomes: list[tuple[Group, str, str]]
    ) -> None:
        """Record final states: every notification of each group, in one statement."""
        rows = [
            (event_id, g.user_id, g.device_id, state, error[:200])
            for g, state, error in outcomes
            for event_id in g.event_ids
        ]
        if rows:
            await conn.execute(MARK, [list(column) for column in zip(*rows, strict=True)])


def _log(group: Group, result: Result) -> None:
    notifier_metrics.PUSHES.inc(result.outcome.value)
    log.info(
        "event=push provider=%s outcome=%s status=%d user=%s device=%s chat=%s messages=%d",
        group.provider,
        result.outcome.value,
        result.status,
        group.user_id,
        group.device_id,
        group.chat_id,
        len(group.event_ids),
    )
