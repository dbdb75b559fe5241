"""Media of deleted and disappeared messages: the objects go once no live message carries them.

When a message's keys are erased (deleted for everyone, or its time up), the media id it
carried is noted in `erased_media` (`infra.message_keys`). Every
`media_erase_interval_s` one commands process (it claims the round in `media.sweeps`,
as the retention sweep does) takes the notes at least `media_erase_grace_s` old, and for
each:

- a live message still carries it (a forward's copy, or the same upload sent to
  another chat): a message has a key naming it for as long as it is neither deleted
  nor disappeared, so the note is dropped (that message's own erasure notes it again).
  A message stored before keys existed has none; a live row of it in the read model
  puts the note back for another grace instead;
- a send took the upload within the grace, or the retention sweep is deleting it:
  looked at again later, or dropped;
- else the upload is marked `erasing` (from then on no send can take it:
  `media_expired`), its objects are deleted, it is marked `erased` (the row stays as a
  tombstone) and the note is dropped. A round cut short finishes in the next one.

The grace covers a forward in flight: the gateway read the message before its delete,
and its copy's key is not stored yet. Each step is idempotent.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from commands.media.retention import claim_round
from domain.media import object_key, upload_key
from infra.objectstore import ObjectStore

log = logging.getLogger("parley.media")

SWEEP = "erasure"

_DUE = (
    "SELECT media_id FROM erased_media WHERE erased_at < now() - make_interval(secs => %s) "
    "ORDER BY erased_at LIMIT %s"
)
_CARRIED = (
    "SELECT EXISTS (SELECT 1 FROM message_keys WHERE media_id = %(m)s), "
    " EXISTS (SELECT 1 FROM read.messages WHERE media IS NOT NULL "
    "   AND media->>'media_id' = %(m)s AND deleted_at IS NULL "
    "   AND (expires_at IS NULL OR expires_at > now())), "
    " u.media_id IS NOT NULL, u.fate, "
    " coalesce(u.sent_at >= now() - make_interval(secs => %(grace)s), false) "
    "FROM (SELECT 1) one LEFT JOIN media.uploads u ON u.media_id = %(m)s"
)
_ERASING = (
    # Only if no send took it within the grace: from then on none can (`confirmed_media`).
    "UPDATE media.uploads SET fate = 'erasing' WHERE media_id = %(m)s "
    "AND (fate IS NULL OR fate = 'kept') "
    "AND (sent_at IS NULL OR sent_at < now() - make_interval(secs => %(grace)s)) "
    "RETURNING media_id"
)
_ERASED = (
    "UPDATE media.uploads SET fate = 'erased', thumbnail = NULL "
    "WHERE media_id = %s AND fate = 'erasing'"
)
_DROP = "DELETE FROM erased_media WHERE media_id = %s"
_AGAIN = "UPDATE erased_media SET erased_at = now() WHERE media_id = %s"
_GONE_ALREADY = frozenset({"expiring", "expired", "erased"})


class MediaErasure:
    """The erasure sweep over one database and one bucket."""

    def __init__(
        self,
        store: ObjectStore,
        pool: AsyncConnectionPool[Any],
        grace_s: float,
        batch: int,
        interval_s: float,
        name: str = SWEEP,
    ) -> None:
        self.store = store
        self.pool = pool
        self.grace_s = grace_s
        self.batch = batch
        self.interval_s = interval_s
        self.name = name

    async def claim(self) -> bool:
        """Take this round if it is due; whether taken."""
        return await claim_round(self.pool, self.name, self.interval_s)

    async def sweep(self) -> int:
        """Decide the notes due (one batch); how many objects were deleted."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_DUE, (self.grace_s, self.batch))
            due = [row[0] for row in await cur.fetchall()]
        erased = 0
        for media_id in due:
            if await self._decide(media_id):
                erased += 1
        if due:
            log.info("event=media_erasure_swept due=%d erased=%d", len(due), erased)
        return erased

    async def _decide(self, media_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CARRIED, {"m": media_id, "grace": self.grace_s})
            row = await cur.fetchone()
            assert row is not None
            by_key, by_row, uploaded, fate, recent = row
            if by_key or fate in _GONE_ALREADY:
                await conn.execute(_DROP, (media_id,))
                return False
            if by_row or recent:
                await conn.execute(_AGAIN, (media_id,))
                return False
            if uploaded and fate != "erasing":
                cur = await conn.execute(_ERASING, {"m": media_id, "grace": self.grace_s})
                if await cur.fetchone() is None:  # a send took it meanwhile
                    await conn.execute(_AGAIN, (media_id,))
                    return False
        await self.store.delete(object_key(media_id))
        await self.store.delete(upload_key(media_id))
        async with self.pool.connection() as conn:
            await conn.execute(_ERASED, (media_id,))
            await conn.execute(_DROP, (media_id,))
        log.info("event=media_erased media_id=%s", media_id)
        return True
