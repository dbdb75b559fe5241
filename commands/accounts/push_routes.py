"""HTTP routes for push notifications (docs/push.md): a device registers where its
pushes go, and a user says what they may show and when.

- `GET /v1/push/config`: which providers are on, and the Web Push VAPID public key;
- `POST /v1/me/push`: the calling device's push target, replacing the one it had;
- `DELETE /v1/me/push`: the calling device gets no more pushes;
- `GET|POST /v1/me/push/prefs`: previews, do-not-disturb, muted chats.

Logging out a device, or removing it, also removes its target (`forget_device_targets`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from commands.accounts.access import access_of, authenticated
from infra.push.endpoints import EndpointPolicy, EndpointRefused
from infra.push.webpush import b64url, load_vapid_key, raw_public_key, unb64url
from infra.settings import Settings
from infra.web import BadRequest, choice_field, read_json, text_field
from projections.push_store import (
    PROVIDERS,
    read_prefs,
    register_target,
    remove_targets,
    write_prefs,
)

MAX_TOKEN_CHARS = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


@asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(settings.pg_conninfo, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


def enabled_providers(settings: Settings) -> list[str]:
    on = {
        "webpush": bool(settings.webpush_subject),
        "fcm": bool(settings.fcm_service_account),
        "apns": bool(settings.apns_key_path),
    }
    return [name for name in PROVIDERS if on[name]]


async def config(request: Request) -> JSONResponse:
    settings = access_of(request).settings
    providers = enabled_providers(settings)
    key = None
    if "webpush" in providers:
        key = b64url(raw_public_key(load_vapid_key(settings).public_key()))
    return JSONResponse({"providers": providers, "vapid_public_key": key})


def _target(settings: Settings, body: dict[str, Any], provider: str) -> dict[str, Any]:
    """The target a registration names, checked for shape, and a Web Push endpoint for
    being a push service's (infra/push/endpoints.py); not for reachability."""
    if provider == "webpush":
        sub = body.get("subscription")
        if not isinstance(sub, dict) or not isinstance(sub.get("keys"), dict):
            raise BadRequest("'subscription' must be a PushSubscription: endpoint and keys")
        endpoint = text_field(sub, "endpoint")
        try:
            EndpointPolicy.from_settings(settings).check(endpoint)
        except EndpointRefused as refused:
            raise PushEndpointRefused(f"'subscription.endpoint' refused: {refused}") from None
        keys = sub["keys"]
        _key(keys, "auth", 16)
        if _key(keys, "p256dh", 65)[0] != 4:
            raise BadRequest("'subscription.keys.p256dh' must be an uncompressed P-256 key")
        return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}
    token = text_field(body, "token")
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise BadRequest("'token' must be a provider's device token")
    if provider == "apns" and not all(c in "0123456789abcdefABCDEF" for c in token):
        raise BadRequest("an APNs 'token' is hexadecimal")
    return {"token": token}


async def register(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    provider = choice_field(body, "provider", PROVIDERS)
    if provider not in enabled_providers(access.settings):
        raise PushProviderOff(f"{provider} is not configured on this server")
    target = _target(access.settings, body, provider)
    async with _connection(access.settings) as conn:
        await register_target(conn, identity.user_id, identity.device_id, provider, target)
    return JSONResponse({"registered": provider, "device_id": identity.device_id})


async def unregister(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    settings = access_of(request).settings
    async with _connection(settings) as conn:
        removed = await remove_targets(conn, identity.user_id, identity.device_id)
    return JSONResponse({"removed": removed})


async def prefs(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    async with _connection(access.settings) as conn:
        if request.method == "POST":
            body = await read_json(request, access.settings.max_request_bytes)
            await write_prefs(
                conn,
                identity.user_id,
                _optional_bool(body, "previews"),
                _optional_bool(body, "dnd"),
                _chat_ids(body, "mute"),
                _chat_ids(body, "unmute"),
            )
        return JSONResponse(await read_prefs(conn, identity.user_id))


async def forget_device_targets(settings: Settings, user_id: UUID, device_id: str | None) -> None:
    """Remove the push target of a device logged out or removed (every device's: None)."""
    async with _connection(settings) as conn:
        await remove_targets(conn, user_id, device_id)


def push_routes() -> list[Route]:
    return [
        Route("/v1/push/config", config, methods=["GET"]),
        Route("/v1/me/push", register, methods=["POST"]),
        Route("/v1/me/push", unregister, methods=["DELETE"]),
        Route("/v1/me/push/prefs", prefs, methods=["GET", "POST"]),
    ]


class PushProviderOff(BadRequest):
    """A registration for a provider this server is not configured for."""

    code = "push_provider_off"
    default_message = "that push provider is not configured on this server"


class PushEndpointRefused(BadRequest):
    """A Web Push endpoint that is not a push service's https URL (docs/push.md)."""

    code = "push_endpoint_refused"
    default_message = "that endpoint is not a push service this server sends to"


def _key(keys: dict[str, Any], name: str, size: int) -> bytes:
    """A subscription key: base64url (RFC 4648 section 5, unpadded or padded) of `size`
    bytes, so its text is bounded before it is decoded."""
    text = text_field(keys, name)
    value = b""
    if len(text) <= 4 * -(-size // 3) and _BASE64URL.fullmatch(text):
        with contextlib.suppress(ValueError):
            value = unb64url(text.rstrip("="))
    if len(value) != size:
        raise BadRequest(f"'subscription.keys.{name}' must be base64url of {size} bytes")
    return value


def _optional_bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value


def _chat_ids(body: dict[str, Any], name: str) -> list[UUID]:
    value = body.get(name, [])
    if not isinstance(value, list) or len(value) > 1000:
        raise BadRequest(f"'{name}' must be a list of chat ids")
    try:
        return [UUID(v) for v in value]
    except (TypeError, ValueError, AttributeError):
        raise BadRequest(f"'{name}' must be a list of chat ids") from None
