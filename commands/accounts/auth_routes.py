"""HTTP routes `/v1/auth/*`: register, log in, refresh, log out (docs/auth.md)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from commands.accounts.access import access_of, client_address
from commands.ratelimit import Limit
from domain.account_errors import InvalidCredentials
from domain.handles import normalise_phone, normalise_username
from domain.user import User, clean_device, clean_display_name, validate_password
from infra.web import BadRequest, bool_field, optional_text, read_json, text_field

log = logging.getLogger(__name__)

DEFAULT_DEVICE_NAME = "unnamed device"


async def register(request: Request) -> JSONResponse:
    access = access_of(request)
    await access.limiter.check({Limit.REGISTER_PER_ADDRESS: client_address(request)})
    body = await read_json(request, access.settings.max_request_bytes)
    username = normalise_username(text_field(body, "username"))
    phone = normalise_phone(text_field(body, "phone"))
    display_name = clean_display_name(text_field(body, "display_name", username))
    password = text_field(body, "password")
    validate_password(password)
    password_hash = await run_in_threadpool(access.passwords.hash, password)
    user = await run_in_threadpool(
        access.accounts.register, username, phone, display_name, password_hash
    )
    return JSONResponse(
        {
            "user_id": str(user.id),
            "username": user.username,
            "phone": user.phone,
            "display_name": user.display_name,
        },
        201,
    )


async def login(request: Request) -> JSONResponse:
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    handle = _login_handle(body)
    password = text_field(body, "password")
    device_id, device_name = clean_device(
        text_field(body, "device_id"), optional_text(body, "device_name") or DEFAULT_DEVICE_NAME
    )
    named = optional_text(body, "device_name") is not None
    address = client_address(request)
    # Per account *and* address: someone guessing from elsewhere cannot lock the owner out.
    await access.limiter.check(
        {Limit.LOGIN_PER_ACCOUNT: f"{handle} {address}", Limit.LOGIN_PER_ADDRESS: address}
    )
    user = await run_in_threadpool(_find_user, request, handle)
    stored_hash = user.password_hash if user is not None else None
    # Verified even for an unknown user (against a dummy hash): the same time, the same answer.
    matched = await run_in_threadpool(access.passwords.verify, stored_hash, password)
    if user is None or not matched:
        log.info("event=login_failed user_id=%s", user.id if user is not None else "-")
        raise InvalidCredentials()

    def add_device(current: User) -> bool:
        name = device_name if named else current.devices.get(device_id, device_name)
        return current.register_device(device_id, name)

    await run_in_threadpool(access.accounts.update, user.id, add_device)
    pair = await access.tokens.issue(user.id, device_id)
    request.state.user_id = str(user.id)
    return JSONResponse(pair.to_json())


async def refresh(request: Request) -> JSONResponse:
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    pair = await access.tokens.refresh(text_field(body, "refresh_token"))
    request.state.user_id = str(pair.user_id)
    return JSONResponse(pair.to_json())


async def logout(request: Request) -> JSONResponse:
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    ended = await access.tokens.logout(
        text_field(body, "refresh_token"), bool_field(body, "all_devices", False)
    )
    return JSONResponse({"ended_sessions": len(ended)})


def auth_routes() -> list[Route]:
    return [
        Route("/v1/auth/register", register, methods=["POST"]),
        Route("/v1/auth/login", login, methods=["POST"]),
        Route("/v1/auth/refresh", refresh, methods=["POST"]),
        Route("/v1/auth/logout", logout, methods=["POST"]),
    ]


def _login_handle(body: dict[str, Any]) -> str:
    """The normalised username or phone number a login names (exactly one of them)."""
    username, phone = optional_text(body, "username"), optional_text(body, "phone")
    if (username is None) == (phone is None):
        raise BadRequest("give either 'username' or 'phone'")
    return normalise_username(username) if username is not None else normalise_phone(phone or "")


def _find_user(request: Request, handle: str) -> User | None:
    accounts = access_of(request).accounts
    user_id = accounts.user_id_for(handle)
    return None if user_id is None else accounts.user(user_id)
