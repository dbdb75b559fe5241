"""`POST /v1/users/lookup`: find one user by exact username or phone number (docs/auth.md).

Only an exact, normalised handle is looked up, never a prefix or a listing, and each
caller may ask `LOOKUP_PER_USER` times (a refused lookup learns nothing). A handle
names a user or not: registration already tells anyone that much (`username_taken`,
`phone_taken`), and the answer tells no more than the profile of that user id does
(`GET /v1/users/{user_id}`): never their phone number, last seen or blocks. Whether the
user blocked the caller changes nothing in the answer: blocked users are not told.

A POST rather than a GET, so that phone numbers stay out of URLs and access logs.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from commands.accounts.access import Access, access_of, authenticated
from commands.ratelimit import Limit
from domain.account_errors import UnknownUser
from domain.handles import normalise_phone, normalise_username
from infra.web import BadRequest, read_json, text_field


async def lookup(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    await access.limiter.check({Limit.LOOKUP_PER_USER: str(identity.user_id)})
    body = await read_json(request, access.settings.max_request_bytes)
    found = await run_in_threadpool(_find, access, body)
    return JSONResponse(found)


def _find(access: Access, body: dict[str, Any]) -> dict[str, str]:
    """The user the body names by exactly one of `username`, `phone`; `unknown_user`."""
    given = [name for name in ("username", "phone") if body.get(name) is not None]
    if len(given) != 1:
        raise BadRequest("name the user by one of 'username' or 'phone'")
    raw = text_field(body, given[0])
    handle = normalise_username(raw) if given[0] == "username" else normalise_phone(raw)
    user_id = access.accounts.user_id_for(handle)
    if user_id is None:
        raise UnknownUser()
    user = access.accounts.user(user_id)
    return {"user_id": str(user.id), "username": user.username, "display_name": user.display_name}


def lookup_routes() -> list[Route]:
    return [Route("/v1/users/lookup", lookup, methods=["POST"])]
