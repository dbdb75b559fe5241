"""Multipart uploads on the commands service: a big file in parts, each its own PUT.

The client asks for an upload with `"multipart": true`; Parley starts a multipart upload
in the store and records its plan (part size, number of parts). The client then asks
for presigned part URLs (any part, any number of times: a failed part is PUT again with
a fresh URL), PUTs the parts straight to the store, and completes the upload with the
parts' ETags; the store joins them into the object the client would have PUT in one go,
and the ordinary confirm checks it (`commands.media.uploads`). An upload not completed
within `media_multipart_ttl_s` is expired: its parts are dropped and its row deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from domain.media import BadUpload, SizeMismatch, UnknownMedia, is_media_id, upload_key
from domain.multipart import (
    PartLimits,
    PartMismatch,
    PartPlan,
    UploadExpired,
    check_completion,
    check_part_numbers,
)
from infra.objectstore import NoSuchUpload, ObjectStore, PartRejected, StoredPart
from infra.settings import Settings

log = logging.getLogger("parley.media")


def part_limits_from_settings(settings: Settings) -> PartLimits:
    return PartLimits(
        min_part=settings.media_part_min_bytes,
        max_part=settings.media_part_max_bytes,
        max_parts=settings.media_max_parts,
    )


class MultipartUploads:
    """The part URLs, completion and expiry of multipart uploads."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        pool: AsyncConnectionPool[Any],
        forget: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.forget = forget  # deletes an upload not sent: row, parts, objects

    async def part_urls(self, owner: UUID, media_id: str, numbers: object) -> dict[str, Any]:
        """Presigned PUT URLs for the parts asked for."""
        multipart_id, plan, completed = await self._open(owner, media_id)
        if completed:
            raise BadUpload("the upload is completed: confirm it")
        ttl = self.settings.media_upload_url_ttl_s
        key = upload_key(media_id)
        return {
            "parts": [
                {
                    "part_number": number,
                    "size": plan.size_of(number),
                    "url": self.store.presign_part(key, multipart_id, number, ttl),
                    "method": "PUT",
                }
                for number in check_part_numbers(numbers, plan)
            ],
            "expires_in_s": ttl,
        }

    async def complete(self, owner: UUID, media_id: str, listed: object) -> dict[str, Any]:
        """Join the uploaded parts into the object; the upload is then confirmed as usual."""
        multipart_id, plan, completed = await self._open(owner, media_id)
        if completed:  # a completion asked again (its answer was lost): the same answer
            return {"media_id": media_id, "parts": plan.parts, "size": plan.size}
        key = upload_key(media_id)
        try:
            stored = await self.store.list_parts(key, multipart_id)
            parts = check_completion(listed, plan, {p.number: (p.etag, p.size) for p in stored})
            await self.store.complete_multipart(
                key, multipart_id, [StoredPart(n, etag, plan.size_of(n)) for n, etag in parts]
            )
        except NoSuchUpload:
            await self.forget(media_id)
            raise UploadExpired() from None
        except PartRejected as exc:  # the store saw the parts change after they were listed
            log.info("event=media_parts_rejected media_id=%s reason=%s", media_id, exc)
            raise PartMismatch() from None
        except SizeMismatch:  # a part of the wrong size: nothing is kept
            await self.forget(media_id)
            raise
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE media.uploads SET completed = true WHERE media_id = %s", (media_id,)
            )
        log.info("event=media_parts_completed media_id=%s parts=%d", media_id, plan.parts)
        return {"media_id": media_id, "parts": plan.parts, "size": plan.size}

    async def _open(self, owner: UUID, media_id: str) -> tuple[str, PartPlan, bool]:
        """The store's upload id, the plan and whether it is completed, of an owner's
        multipart upload; `upload_expired` past its time unless completed."""
        if not is_media_id(media_id):
            raise UnknownMedia()
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT multipart_id, size, part_size, completed, "
                "created_at < now() - make_interval(secs => %s) "
                "FROM media.uploads WHERE media_id = %s AND owner = %s",
                (self.settings.media_multipart_ttl_s, media_id, owner),
            )
            row = await cur.fetchone()
        if row is None:
            raise UnknownMedia()
        multipart_id, size, part_size, completed, expired = row
        if multipart_id is None:
            raise BadUpload("not a multipart upload")
        if expired and not completed:
            await self.forget(media_id)
            raise UploadExpired()
        return multipart_id, PartPlan(size, part_size), completed
