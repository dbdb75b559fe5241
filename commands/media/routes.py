"""HTTP routes `/v1/media/*` on the commands service: request an upload, ask for part
URLs and complete a multipart one, confirm it, abort it (docs/media.md). Each needs
`Authorization: Bearer <access token>`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from commands.accounts.access import access_of, authenticated
from commands.media.uploads import MediaUploads
from commands.ratelimit import Limit
from infra.web import read_json


def uploads_of(request: Request) -> MediaUploads:
    uploads = request.app.state.media
    assert isinstance(uploads, MediaUploads)
    return uploads


async def request_upload(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    await access.limiter.check({Limit.MEDIA_UPLOAD_PER_USER: str(identity.user_id)})
    return JSONResponse(await uploads_of(request).request(identity.user_id, body), 201)


async def confirm_upload(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    media_id = request.path_params["media_id"]
    media = await uploads_of(request).confirm(identity.user_id, media_id)
    return JSONResponse({"media": media})


async def part_urls(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    body = await read_json(request, access_of(request).settings.max_request_bytes)
    media_id = request.path_params["media_id"]
    multipart = uploads_of(request).multipart
    return JSONResponse(
        await multipart.part_urls(identity.user_id, media_id, body.get("part_numbers"))
    )


async def complete_upload(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    settings = access_of(request).settings
    # Each listed part is about 80 bytes of JSON: room for the most parts an upload has.
    body = await read_json(request, max(settings.max_request_bytes, 128 * settings.media_max_parts))
    media_id = request.path_params["media_id"]
    multipart = uploads_of(request).multipart
    return JSONResponse(await multipart.complete(identity.user_id, media_id, body.get("parts")))


async def abort_upload(request: Request) -> Response:
    identity = await authenticated(request)
    await uploads_of(request).abort(identity.user_id, request.path_params["media_id"])
    return Response(status_code=204)


def media_routes() -> list[Route]:
    return [
        Route("/v1/media/uploads", request_upload, methods=["POST"]),
        Route("/v1/media/{media_id}/parts", part_urls, methods=["POST"]),
        Route("/v1/media/{media_id}/complete", complete_upload, methods=["POST"]),
        Route("/v1/media/{media_id}/confirm", confirm_upload, methods=["POST"]),
        Route("/v1/media/{media_id}", abort_upload, methods=["DELETE"]),
    ]
