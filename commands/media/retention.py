"""Media retention: sent media nobody ever received is deleted after the inbox's retention.

A message waits in its recipients' inbox at most `inbox_ttl_days` (30); its media waits
as long. The sweep takes the uploads sent longer ago than that (`sent_at`, the last send
that took them) and not yet decided, in batches of `media_sweep_batch`, oldest first:

- *delivered*: some message carrying the media (`read.messages`, by its media id) has a
  delivered count above zero in `read.receipt_counts`, i.e. at least one recipient's
  device acknowledged it (a `delivered` or `read` receipt): the upload is marked `kept`
  and never looked at again;
- *carried but never delivered*: the row is marked `expiring` (only if no send took it
  meanwhile; from then on no send can), its objects are deleted, and it is marked
  `expired`; the row stays as a tombstone, so a download or a send of it answers
  `media_expired`. A round cut short between the two marks finishes the deletion in the
  next one;
- *carried by no message at all* (every send was refused, or the gateway died before the
  answer): it was never really sent, so row and objects go, as for an unsent upload.

The schedule lives in `media.sweeps`: a process runs a round only if it moved the row's
`next_at` forward itself, so the commands processes share one sweep between them, and a
restart neither repeats a round nor loses its place (the decided rows are marked). Each
step is idempotent: deleting an object twice is harmless, a marked row is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from domain.media import object_key, upload_key
from infra.objectstore import ObjectStore

log = logging.getLogger("parley.media")

SWEEP = "retention"

_DUE = (
    "SELECT u.media_id, u.fate,"
    " EXISTS (SELECT 1 FROM read.messages m JOIN read.receipt_counts c"
    "   ON c.chat_id = m.chat_id AND c.seq = m.seq"
    "   WHERE m.media IS NOT NULL AND m.media->>'media_id' = u.media_id AND c.delivered > 0),"
    " EXISTS (SELECT 1 FROM read.messages m"
    "   WHERE m.media IS NOT NULL AND m.media->>'media_id' = u.media_id)"
    " FROM media.uploads u"
    " WHERE u.sent AND (u.fate IS NULL OR u.fate = 'expiring')"
    " AND u.sent_at < now() - make_interval(secs => %s)"
    " ORDER BY u.sent_at LIMIT %s"
)


async def claim_round(pool: AsyncConnectionPool[Any], name: str, interval_s: float) -> bool:
    """Take the round of sweep `name` if it is due, moving its next one `interval_s` on:
    of the commands processes, the one whose statement moved it runs the round."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO media.sweeps AS s (name, next_at, started_at) "
            "VALUES (%s, now() + make_interval(secs => %s), now()) "
            "ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at, "
            "started_at = now(), finished_at = NULL WHERE s.next_at <= now() "
            "RETURNING name",
            (name, interval_s),
        )
        return await cur.fetchone() is not None


@dataclass
class SweepRound:
    """What one round decided."""

    kept: int = 0
    expired: int = 0
    dropped: int = 0
    batches: int = 0


class MediaRetention:
    """The retention sweep over one database and one bucket."""

    def __init__(
        self,
        store: ObjectStore,
        pool: AsyncConnectionPool[Any],
        retention_s: float,
        batch: int,
        interval_s: float,
        name: str = SWEEP,
    ) -> None:
        self.name = name  # its row in media.sweeps
        self.store = store
        self.pool = pool
        self.retention_s = retention_s
        self.batch = batch
        self.interval_s = interval_s

    async def claim(self) -> bool:
        """Take this round if it is due (moving the next one `interval_s` on); whether taken."""
        return await claim_round(self.pool, self.name, self.interval_s)

    async def sweep(self, max_batches: int | None = None) -> SweepRound:
        """Decide every due upload, a batch at a time (all of them, or `max_batches`)."""
        done = SweepRound()
        while max_batches is None or done.batches < max_batches:
            decided = await self._batch(done)
            if not decided:
                break
            done.batches += 1
            log.info(
                "event=media_sweep_batch batch=%d kept=%d expired=%d dropped=%d",
                done.batches,
                done.kept,
                done.expired,
                done.dropped,
            )
            if decided < self.batch:
                break
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE media.sweeps SET finished_at = now(), kept = %s, expired = %s, "
                "dropped = %s, expired_total = expired_total + %s WHERE name = %s",
                (done.kept, done.expired, done.dropped, done.expired, self.name),
            )
        log.info(
            "event=media_swept kept=%d expired=%d dropped=%d batches=%d",
            done.kept,
            done.expired,
            done.dropped,
            done.batches,
        )
        return done

    async def _batch(self, done: SweepRound) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_DUE, (self.retention_s, self.batch))
            due = [(row[0], row[1], bool(row[2]), bool(row[3])) for row in await cur.fetchall()]
        for media_id, fate, delivered, carried in due:
            if fate is None and delivered:
                await self._decide(media_id, None, "kept")
                done.kept += 1
            elif fate is not None or carried:
                if fate is not None or await self._decide(media_id, None, "expiring"):
                    await self._delete_objects(media_id)
                    await self._decide(media_id, "expiring", "expired")
                    done.expired += 1
            elif await self._drop(media_id):
                done.dropped += 1
        return len(due)

    async def _decide(self, media_id: str, was: str | None, fate: str) -> bool:
        """Move an upload's fate on from `was`, unless a send took it again since it was
        found due; whether it moved."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE media.uploads SET fate = %s WHERE media_id = %s "
                "AND fate IS NOT DISTINCT FROM %s::text "
                "AND sent_at < now() - make_interval(secs => %s) RETURNING media_id",
                (fate, media_id, was, self.retention_s),
            )
            return await cur.fetchone() is not None

    async def _drop(self, media_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM media.uploads WHERE media_id = %s AND fate IS NULL "
                "AND sent_at < now() - make_interval(secs => %s) RETURNING media_id",
                (media_id, self.retention_s),
            )
            gone = await cur.fetchone() is not None
        if gone:
            await self._delete_objects(media_id)
        return gone

    async def _delete_objects(self, media_id: str) -> None:
        await self.store.delete(object_key(media_id))
        await self.store.delete(upload_key(media_id))
