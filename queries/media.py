"""`GET /v1/chats/{chat_id}/media/{media_id}`: a short-lived download URL for a media file.

Answered to whoever sees a message of the chat that carries the media (the chat's
visibility rules, `queries.membership`); anyone else gets `404 unknown_media`, the same
as for media that does not exist; media deleted by the retention sweep answers `410
media_expired`. The URL is a presigned GET of the object store
(Range works), valid for `media_download_url_ttl_s`: a leaked URL soon stops working.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response

from domain.media import MediaExpired, UnknownMedia, is_media_id, object_key
from infra.auth import Identity
from infra.timestamps import utc_iso
from projections.schema import LIVE_SCHEMA
from queries.membership import load_membership
from queries.params import chat_id_param
from queries.position import read_your_writes
from queries.resources import read_side_of
from queries.responses import answer

_CARRIED_BY = sql.SQL(
    "SELECT seq, media FROM {s}.messages WHERE chat_id = %s AND media IS NOT NULL "
    "AND media->>'media_id' = %s ORDER BY seq"
).format(s=sql.Identifier(LIVE_SCHEMA))
# Media sent but never delivered is deleted after the inbox's retention (docs/media.md).
_EXPIRED = (
    "SELECT 1 FROM media.uploads WHERE media_id = %s "
    "AND fate IN ('expiring', 'expired', 'erasing', 'erased')"
)


async def media_download(request: Request, identity: Identity) -> Response:
    chat_id = chat_id_param(request)
    media_id = request.path_params["media_id"]
    if not is_media_id(media_id):
        raise UnknownMedia()
    await read_your_writes(request, identity.user_id)
    read_side = read_side_of(request)
    async with read_side.pool.connection() as conn:
        membership = await load_membership(conn, chat_id, identity.user_id)
        cur = await conn.execute(_CARRIED_BY, (chat_id, media_id))
        carried = [(seq, media) for seq, media in await cur.fetchall() if membership.sees(seq)]
        if not carried:
            raise UnknownMedia()
        cur = await conn.execute(_EXPIRED, (media_id,))
        if await cur.fetchone() is not None:
            raise MediaExpired()
    ttl = read_side.settings.media_download_url_ttl_s
    media = carried[0][1]
    return answer(
        {
            "media_id": media_id,
            "mime_type": media["mime_type"],
            "size": media["size"],
            "url": read_side.objects.presign_get(object_key(media_id), ttl),
            "expires_at": utc_iso(datetime.now(UTC) + timedelta(seconds=ttl)),
        }
    )
