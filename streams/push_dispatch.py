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

import httpx
import psycopg

from infra.push.provider import Notification, Outcome, Provider, Result
from infra.settings import Settings
from projections.directory import DIRECTORY_SCHEMA
from projections.push_store import PUSH_SCHEMA
from projections.schema import LIVE_SCHEMA

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

GROUP_CONTEXT = f"""
SELECT
  (SELECT m.delivered_up_to FROM {R}.members m WHERE m.chat_id = %(chat)s AND m.user_id = %(user)s),
  (SELECT t.target FROM {P}.targets t WHERE t.user_id = %(user)s AND t.device_id = %(device)s
     AND t.provider = %(provider)s),
  (SELECT t.updated_at FROM {P}.targets t WHERE t.user_id = %(user)s AND t.device_id = %(device)s),
  (SELECT u.display_name FROM {D}.users u WHERE u.user_id = %(sender)s),
  (SELECT pf.previews FROM {P}.prefs pf WHERE pf.user_id = %(user)s),
  (SELECT msg.body FROM {R}.messages msg WHERE msg.chat_id = %(chat)s AND msg.seq = %(seq)s
     AND msg.kind = 'text')
"""

COUNT_UNDELIVERED = f"""
SELECT count(*) FROM {P}.notifications n
WHERE n.user_id = %(user)s AND n.device_id = %(device)s AND n.chat_id = %(chat)s
  AND n.state IN ('due', 'sent') AND n.seq > %(delivered)s
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


class Sender:
    """Sends due groups through the providers and records each outcome."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        dead_letter: DeadLetter,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.dead_letter = dead_letter
        self.counts: dict[tuple[str, str], int] = {}  # (provider, outcome) -> pushes

    async def send(self, conn: psycopg.AsyncConnection[Any], group: Group) -> Outcome | None:
        """One group: skipped (None) when delivered meanwhile or the target is gone."""
        cur = await conn.execute(
            GROUP_CONTEXT,
            {
                "chat": group.chat_id,
                "user": group.user_id,
                "device": group.device_id,
                "provider": group.provider,
                "sender": group.sender,
                "seq": group.seq,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        delivered, target, target_at, sender_name, previews, body = row
        delivered = delivered or 0
        if delivered >= group.seq:
            await self._mark(conn, group, "skipped")
            return None
        provider = self.providers.get(group.provider)
        if target is None or provider is None:
            await self._mark(conn, group, "gone" if target is None else "failed", "provider off")
            return None
        cur = await conn.execute(
            COUNT_UNDELIVERED,
            {
                "user": group.user_id,
                "device": group.device_id,
                "chat": group.chat_id,
                "delivered": delivered,
            },
        )
        counted = await cur.fetchone()
        preview = None
        if previews and body is not None:
            preview = bytes(body).decode("utf-8", "replace")[:PREVIEW_CHARS]
        note = Notification(
            chat_id=str(group.chat_id),
            sender_name=sender_name or "Someone",
            count=int(counted[0]) if counted else len(group.event_ids),
            preview=preview,
        )
        result = await self._attempt(provider, target, note)
        await self._record(conn, group, result, target_at)
        return result.outcome

    async def _attempt(self, provider: Provider, target: Any, note: Notification) -> Result:
        try:
            return await asyncio.wait_for(
                provider.send(target, note), timeout=self.settings.push_timeout_s
            )
        except (TimeoutError, OSError, httpx.TransportError) as exc:
            return Result(Outcome.RETRY, 0, None, type(exc).__name__)

    async def _record(
        self,
        conn: psycopg.AsyncConnection[Any],
        group: Group,
        result: Result,
        target_at: datetime | None,
    ) -> None:
        name = f"{group.provider}"
        self.counts[(name, result.outcome.value)] = (
            self.counts.get((name, result.outcome.value), 0) + 1
        )
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
        if result.outcome is Outcome.SENT:
            await self._mark(conn, group, "sent")
        elif result.outcome is Outcome.GONE:
            # Only the target that failed: a device that registered again keeps its new one.
            await conn.execute(
                f"DELETE FROM {P}.targets WHERE user_id = %s AND device_id = %s "
                "AND updated_at = %s",
                (group.user_id, group.device_id, target_at),
            )
            await self._mark(conn, group, "gone", result.detail)
        elif result.outcome is Outcome.FAILED:
            await self._mark(conn, group, "failed", result.detail)
        elif group.tries + 1 >= self.settings.push_max_tries:
            await self._mark(conn, group, "dead", result.detail)
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
        else:
            backoff = min(
                self.settings.push_backoff_s * 2**group.tries, self.settings.push_backoff_max_s
            )
            wait = max(backoff, result.retry_after_s or 0.0)
            await conn.execute(
                f"UPDATE {P}.notifications SET tries = tries + 1, last_error = %(error)s, "
                "next_at = now() + make_interval(secs => %(wait)s) "
                "WHERE event_id = ANY(%(ids)s) AND user_id = %(user)s AND device_id = %(device)s",
                {**group.key, "error": f"{result.status} {result.detail}"[:200], "wait": wait},
            )

    async def _mark(
        self, conn: psycopg.AsyncConnection[Any], group: Group, state: str, error: str = ""
    ) -> None:
        await conn.execute(
            f"UPDATE {P}.notifications SET state = %(state)s, tries = tries + 1, "
            "last_error = nullif(%(error)s, ''), "
            "sent_at = CASE WHEN %(state)s = 'sent' THEN now() END "
            "WHERE event_id = ANY(%(ids)s) AND user_id = %(user)s AND device_id = %(device)s",
            {**group.key, "state": state, "error": error[:200]},
        )
