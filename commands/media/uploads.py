"""Media uploads on the commands service: request, confirm, attach to a send, collect.

A client asks for an upload (kind, size, MIME type, sha256) and gets a presigned PUT
(or a multipart upload: `commands.media.multipart`); after the PUT it confirms, and
the object is probed in a separate process (`infra.media_probe`): size, sha256 and
the type its bytes show must match what was declared, and an image gets its
dimensions and a WebP thumbnail. Only a confirmed upload can be sent, and only by its
owner; the gateway swaps the client's `media` for the stored reference
(`confirmed_media`), counting the send on the upload, and gives the count back if the
processor refuses the send (`release_media`); a forward of it by anyone moves its last
send too (`forwarded_media`). A failed confirm deletes the object and
the row; unconfirmed uploads are deleted after `media_gc_grace_s`, and confirmed ones
that no send took after `media_unsent_grace_s` (`MediaUploads.collect`); sent ones
nobody received, after the inbox's retention (`commands.media.retention`); the objects
of deleted and disappeared messages, once no live message carries them
(`commands.media.erasure`).

The uploads live in `media.uploads`, their own schema: they are state of the commands
service, not a projection of the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from commands.media.erasure import MediaErasure
from commands.media.multipart import MultipartUploads, part_limits_from_settings
from commands.media.retention import MediaRetention
from domain.media import (
    BadUpload,
    MediaError,
    MediaExpired,
    MediaKind,
    MediaLimits,
    MediaNotConfirmed,
    MediaNotUploaded,
    MediaSent,
    SizeMismatch,
    UnknownMedia,
    UploadRequest,
    check_stored,
    is_media_id,
    new_media_id,
    object_key,
    plan_upload,
    upload_key,
)
from domain.messages import MediaRef
from domain.multipart import PartPlan, plan_parts
from infra.media_probe import ProbeChildren, probe
from infra.objectstore import ObjectStore
from infra.settings import Settings

log = logging.getLogger("parley.media")

_COLUMNS = (
    "media_id, kind, mime_type, size, sha256, confirmed, width, height, thumbnail, duration_ms"
)


def limits_from_settings(settings: Settings) -> MediaLimits:
    return MediaLimits(
        image=settings.media_max_image_bytes,
        video=settings.media_max_video_bytes,
        audio=settings.media_max_audio_bytes,
        document=settings.media_max_document_bytes,
    )


def _ref(row: tuple[Any, ...]) -> MediaRef:
    media_id, kind, mime_type, size, sha256, _, width, height, thumbnail, duration_ms = row
    return MediaRef(media_id, mime_type, size, sha256, kind, width, height, thumbnail, duration_ms)


async def _owned(conn: AsyncConnection[Any], owner: UUID, media_id: object) -> tuple[Any, ...]:
    """The owner's upload row; `unknown_media` for anyone else's or none at all."""
    if not is_media_id(media_id):
        raise UnknownMedia()
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM media.uploads WHERE media_id = %s AND owner = %s",
        (media_id, owner),
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownMedia()
    return tuple(row)


async def confirmed_media(conn: AsyncConnection[Any], owner: UUID, media: object) -> dict[str, Any]:
    """The stored reference of a confirmed upload of `owner`, for a `send` to carry; it is
    marked sent in the same statement, so the collector cannot take it from under the send."""
    media_id = media.get("media_id") if isinstance(media, dict) else None
    if not is_media_id(media_id):
        raise UnknownMedia()
    cur = await conn.execute(
        "UPDATE media.uploads SET sent = sent OR confirmed, "
        "sends = sends + CASE WHEN confirmed THEN 1 ELSE 0 END, "
        "sent_at = CASE WHEN confirmed AND fate IS NULL THEN now() ELSE sent_at END "
        f"WHERE media_id = %s AND owner = %s RETURNING {_COLUMNS}, fate",
        (media_id, owner),
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownMedia()
    if not row[5]:
        raise MediaNotConfirmed()
    if row[-1] in ("expiring", "expired", "erasing", "erased"):
        raise MediaExpired()
    return _ref(tuple(row[:-1])).to_dict()


async def forwarded_media(conn: AsyncConnection[Any], media: object) -> None:
    """A forward sends someone's media again: its retention counts from now, as for its
    owner's sends (`sent_at`); `media_expired` if the sweep has taken it. A reference
    with no upload row (sent before uploads were kept) is forwarded as it is."""
    media_id = media.get("media_id") if isinstance(media, dict) else None
    if not is_media_id(media_id):
        return
    cur = await conn.execute(
        "UPDATE media.uploads SET sent_at = CASE WHEN fate IS NULL THEN now() ELSE sent_at END "
        "WHERE media_id = %s RETURNING fate",
        (media_id,),
    )
    row = await cur.fetchone()
    if row is not None and row[0] in ("expiring", "expired"):
        raise MediaExpired()


async def release_media(conn: AsyncConnection[Any], owner: UUID, media: object) -> None:
    """Give back the send `confirmed_media` counted, for a send the processor refused: an
    upload no send took is collected after `media_unsent_grace_s` like any unsent one."""
    media_id = media.get("media_id") if isinstance(media, dict) else None
    await conn.execute(
        "UPDATE media.uploads SET sends = sends - 1, sent = sends > 1 "
        "WHERE media_id = %s AND owner = %s AND sends > 0",
        (media_id, owner),
    )


class MediaUploads:
    """The upload flow of one commands process: its pool, its store, its limits."""

    def __init__(
        self, settings: Settings, store: ObjectStore, pool: AsyncConnectionPool[Any]
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.limits = limits_from_settings(settings)
        self._probes = asyncio.Semaphore(settings.media_probe_concurrency)
        self._children = ProbeChildren()
        self.part_limits = part_limits_from_settings(settings)
        self.multipart = MultipartUploads(settings, store, pool, self._forget)
        self.retention = MediaRetention(
            store,
            pool,
            retention_s=settings.inbox_ttl_days * 86400,
            batch=settings.media_sweep_batch,
            interval_s=settings.media_sweep_interval_s,
        )
        self.erasure = MediaErasure(
            store,
            pool,
            grace_s=settings.media_erase_grace_s,
            batch=settings.media_sweep_batch,
            interval_s=settings.media_erase_interval_s,
        )

    async def request(self, owner: UUID, declared: dict[str, Any]) -> dict[str, Any]:
        """Record a requested upload and sign its PUT URL."""
        upload = plan_upload(
            declared.get("kind"),
            declared.get("size"),
            declared.get("mime_type"),
            declared.get("sha256"),
            self.limits,
        )
        multipart = declared.get("multipart", False)
        if not isinstance(multipart, bool):
            raise BadUpload("multipart must be true or false")
        if multipart:
            plan = plan_parts(upload.size, declared.get("part_size"), self.part_limits)
        else:  # one PUT, whatever the size
            plan = PartPlan(upload.size, upload.size)
        media_id = new_media_id()
        multipart_id = None
        if multipart:  # before the row: a row always names an upload the store knows
            multipart_id = await self.store.create_multipart(upload_key(media_id), upload.mime_type)
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO media.uploads (media_id, owner, kind, mime_type, size, sha256, "
                "multipart_id, part_size, completed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    media_id,
                    owner,
                    upload.kind.value,
                    upload.mime_type,
                    upload.size,
                    upload.sha256,
                    multipart_id,
                    plan.part_size,
                    not multipart,
                ),
            )
        ttl = self.settings.media_upload_url_ttl_s
        log.info(
            "event=media_requested media_id=%s owner=%s kind=%s parts=%d",
            media_id,
            owner,
            upload.kind,
            plan.parts,
        )
        if multipart:
            return {
                "media_id": media_id,
                "multipart": {
                    "part_size": plan.part_size,
                    "parts": plan.parts,
                    "expires_in_s": self.settings.media_multipart_ttl_s,
                },
            }
        return {
            "media_id": media_id,
            "upload_url": self.store.presign_put(upload_key(media_id), ttl),
            "method": "PUT",
            "headers": {"Content-Type": upload.mime_type},
            "expires_in_s": ttl,
        }

    async def confirm(self, owner: UUID, media_id: str) -> dict[str, Any]:
        """Check the uploaded object and make the upload sendable; its reference."""
        async with self.pool.connection() as conn:
            row = await _owned(conn, owner, media_id)
        if row[5]:
            return _ref(row).to_dict()
        upload = UploadRequest(MediaKind(row[1]), row[3], row[2], row[4])
        head = await self.store.head(upload_key(media_id))
        if head is None:
            raise MediaNotUploaded()
        key = object_key(media_id)
        try:
            if head.size != upload.size:
                raise SizeMismatch(f"declared {upload.size} bytes, stored {head.size}")
            started = time.perf_counter()
            await self.store.copy(upload_key(media_id), key)
            async with self._probes:
                probed = await probe(
                    self.store.presign_get(key, self.settings.media_probe_timeout_s + 60),
                    upload.size,
                    self._children,
                    kind=upload.kind,
                    max_pixels=self.settings.media_max_pixels,
                    max_duration_s=self.settings.media_max_duration_s,
                    thumbnail_px=self.settings.media_thumbnail_px,
                    memory_mib=self.settings.media_probe_memory_mib,
                    cpu_s=self.settings.media_probe_cpu_s,
                    timeout_s=self.settings.media_probe_timeout_s,
                )
            check_stored(upload, probed.size, probed.sha256, probed.sniffed)
            if probed.image_error is not None:
                raise probed.image_error
        except MediaError as exc:
            await self._forget(media_id)
            log.info("event=media_refused media_id=%s owner=%s code=%s", media_id, owner, exc.code)
            raise
        await self.store.delete(upload_key(media_id))
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE media.uploads SET confirmed = true, width = %s, height = %s, "
                f"thumbnail = %s, duration_ms = %s WHERE media_id = %s RETURNING {_COLUMNS}",
                (probed.width, probed.height, probed.thumbnail, probed.duration_ms, media_id),
            )
            updated = await cur.fetchone()
        if updated is None:  # collected while it was probed
            raise UnknownMedia()
        log.info(
            "event=media_confirmed media_id=%s owner=%s probe_ms=%.1f",
            media_id,
            owner,
            1000 * (time.perf_counter() - started),
        )
        return _ref(tuple(updated)).to_dict()

    async def close(self) -> None:
        """Stop the probe child kept waiting."""
        await self._children.close()

    async def collect(self, grace_s: float, unsent_grace_s: float) -> int:
        """Delete the uploads left unconfirmed for longer than `grace_s` (a multipart one:
        its `media_multipart_ttl_s` and then `grace_s`, during which it answers
        `upload_expired`), and the confirmed ones no send took within `unsent_grace_s`;
        how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT media_id, confirmed FROM media.uploads WHERE NOT sent "
                "AND created_at < now() - make_interval(secs => CASE WHEN confirmed THEN %s "
                "WHEN multipart_id IS NOT NULL THEN %s + %s ELSE %s END) "
                "ORDER BY created_at LIMIT 1000",
                (unsent_grace_s, self.settings.media_multipart_ttl_s, grace_s, grace_s),
            )
            stale = [(row[0], row[1]) for row in await cur.fetchall()]
        gone = [
            media_id for media_id, confirmed in stale if await self._forget(media_id, confirmed)
        ]
        if gone:
            log.info("event=media_collected uploads=%d", len(gone))
        return len(gone)

    async def collect_forever(self) -> None:
        """`collect` every `media_gc_interval_s`, and the retention sweep when its round
        is due (`media.sweeps`); a failed round is logged and retried."""
        while True:
            await asyncio.sleep(self.settings.media_gc_interval_s)
            try:
                await self.collect(
                    self.settings.media_gc_grace_s, self.settings.media_unsent_grace_s
                )
                if await self.retention.claim():
                    await self.retention.sweep()
            except Exception as exc:  # the store or database away: the next round retries
                log.warning("event=media_collect_failed error=%s", type(exc).__name__)

    async def erase_forever(self) -> None:
        """The erasure sweep's round every `media_erase_interval_s`, when this process
        claims it (`commands.media.erasure`); a failed round is logged and retried."""
        while True:
            await asyncio.sleep(self.settings.media_erase_interval_s)
            try:
                if await self.erasure.claim():
                    await self.erasure.sweep()
            except Exception as exc:  # the store or database away: the next round retries
                log.warning("event=media_erasure_failed error=%s", type(exc).__name__)

    async def _forget(self, media_id: str, confirmed: bool = False) -> bool:
        """Delete an upload never sent, row first (a send marks it sent atomically), then
        its parts and objects; whether it was still there to delete."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM media.uploads WHERE media_id = %s AND confirmed = %s AND NOT sent "
                "RETURNING multipart_id, completed",
                (media_id, confirmed),
            )
            row = await cur.fetchone()
        if row is None:
            return False
        multipart_id, completed = row
        if multipart_id is not None and not completed:
            await self.store.abort_multipart(upload_key(media_id), multipart_id)
        await self.store.delete(upload_key(media_id))
        await self.store.delete(object_key(media_id))
        return True

    async def abort(self, owner: UUID, media_id: str) -> None:
        """The owner drops an upload no send took (in progress or confirmed)."""
        async with self.pool.connection() as conn:
            row = await _owned(conn, owner, media_id)
        if not await self._forget(media_id, row[5]):
            raise MediaSent()
        log.info("event=media_aborted media_id=%s owner=%s", media_id, owner)
