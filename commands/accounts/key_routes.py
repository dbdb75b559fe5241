"""HTTP routes for end-to-end encryption keys (docs/e2e.md): public keys only.

- `PUT /v1/me/keys`: the calling device's identity key, its signed prekey (the
  signature is checked against the identity key) and new one-time prekeys;
- `GET /v1/me/keys`: how many one-time prekeys the device has left (refill when low);
- `DELETE /v1/me/keys`: the device publishes no keys any more;
- `GET /v1/users/{user_id}/devices`: a user's device list (ids, identity keys, version);
- `POST /v1/users/{user_id}/keys`: a prekey bundle for each of the user's devices, each
  taking one one-time prekey; rate-limited per (requester, target). A POST because it
  changes the server's state (the keys it hands out are gone).

Keys travel as standard base64 with padding, like message bodies.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from commands.accounts.access import access_of, authenticated
from commands.ratelimit import Limit
from domain.errors import DomainError
from infra.web import BadRequest, read_json
from projections.key_store import (
    Bundle,
    DeviceKeys,
    TooManyPrekeys,
    count_prekeys,
    device_lists,
    publish_keys,
    remove_device,
    take_bundles,
)

KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_PREKEYS_PER_UPLOAD = 100
MAX_KEY_ID = 2**53 - 1  # exact in every JSON reader, JavaScript's included


class BadSignature(DomainError):
    """A signed prekey whose signature the identity key does not verify."""

    code = "bad_signature"
    default_message = "the signed prekey's signature does not verify with the identity key"


class PrekeyPoolFull(DomainError):
    """An upload that would leave the device more one-time prekeys than allowed."""

    code = "prekey_pool_full"
    default_message = "the device holds as many one-time prekeys as it may"


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    """The commands service's PostgreSQL pool (the gateway's: it reads the same tables)."""
    pool = request.app.state.gateway.pool
    assert isinstance(pool, AsyncConnectionPool)
    return pool


def encode_key(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_key(value: Any, name: str, size: int = KEY_BYTES) -> bytes:
    """`size` bytes from standard base64 text, or `bad_request` naming the field."""
    try:
        data = base64.b64decode(str(value).encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise BadRequest(f"'{name}' must be base64") from None
    if not isinstance(value, str) or len(data) != size:
        raise BadRequest(f"'{name}' must be {size} bytes in base64")
    return data


def _key_id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_KEY_ID:
        raise BadRequest(f"'{name}' must be an integer from 0 to 2^53-1")
    return value


def verified_keys(body: dict[str, Any]) -> DeviceKeys:
    """The identity key and signed prekey a body names, the signature checked."""
    identity = decode_key(body.get("identity_key"), "identity_key")
    signed = body.get("signed_prekey")
    if not isinstance(signed, dict):
        raise BadRequest("'signed_prekey' must be {key_id, public_key, signature}")
    keys = DeviceKeys(
        identity_key=identity,
        signed_prekey_id=_key_id(signed.get("key_id"), "signed_prekey.key_id"),
        signed_prekey=decode_key(signed.get("public_key"), "signed_prekey.public_key"),
        signed_prekey_signature=decode_key(
            signed.get("signature"), "signed_prekey.signature", SIGNATURE_BYTES
        ),
    )
    try:
        Ed25519PublicKey.from_public_bytes(identity).verify(
            keys.signed_prekey_signature, keys.signed_prekey
        )
    except (InvalidSignature, ValueError):
        raise BadSignature() from None
    return keys


def _prekeys(body: dict[str, Any]) -> list[tuple[int, bytes]]:
    given = body.get("one_time_prekeys", [])
    if not isinstance(given, list) or len(given) > MAX_PREKEYS_PER_UPLOAD:
        raise BadRequest(f"'one_time_prekeys' must be a list of at most {MAX_PREKEYS_PER_UPLOAD}")
    prekeys = []
    for item in given:
        if not isinstance(item, dict):
            raise BadRequest("each one-time prekey is {key_id, public_key}")
        prekeys.append(
            (
                _key_id(item.get("key_id"), "one_time_prekeys.key_id"),
                decode_key(item.get("public_key"), "one_time_prekeys.public_key"),
            )
        )
    return prekeys


async def publish(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    access = access_of(request)
    body = await read_json(request, access.settings.max_request_bytes)
    keys = verified_keys(body)
    prekeys = _prekeys(body)
    try:
        async with _pool(request).connection() as conn:
            held, changed = await publish_keys(
                conn,
                identity.user_id,
                identity.device_id,
                keys,
                prekeys,
                access.settings.e2e_max_prekeys,
            )
    except TooManyPrekeys as exc:
        raise PrekeyPoolFull(str(exc)) from None
    return JSONResponse(
        {"device_id": identity.device_id, "one_time_prekeys": held, "device_list_changed": changed}
    )


async def count(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    async with _pool(request).connection() as conn:
        held = await count_prekeys(conn, identity.user_id, identity.device_id)
    return JSONResponse({"device_id": identity.device_id, "one_time_prekeys": held})


async def unpublish(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    async with _pool(request).connection() as conn:
        removed = await remove_device(conn, identity.user_id, identity.device_id)
    return JSONResponse({"removed": removed})


def _target(request: Request) -> UUID:
    try:
        return UUID(request.path_params["user_id"])
    except ValueError:
        raise BadRequest("not a user id") from None


async def devices(request: Request) -> JSONResponse:
    await authenticated(request)
    user_id = _target(request)
    async with _pool(request).connection() as conn:
        listed = (await device_lists(conn, [user_id]))[user_id]
    return JSONResponse(
        {
            "user_id": str(user_id),
            "version": listed.version,
            "devices": [
                {"device_id": device, "identity_key": encode_key(key)}
                for device, key in listed.devices.items()
            ],
        }
    )


def bundle_json(bundle: Bundle) -> dict[str, Any]:
    keys = bundle.keys
    prekey = bundle.one_time_prekey
    return {
        "device_id": bundle.device_id,
        "identity_key": encode_key(keys.identity_key),
        "signed_prekey": {
            "key_id": keys.signed_prekey_id,
            "public_key": encode_key(keys.signed_prekey),
            "signature": encode_key(keys.signed_prekey_signature),
        },
        "one_time_prekey": None
        if prekey is None
        else {"key_id": prekey[0], "public_key": encode_key(prekey[1])},
    }


async def bundles(request: Request) -> JSONResponse:
    identity = await authenticated(request)
    user_id = _target(request)
    access = access_of(request)
    await access.limiter.check({Limit.KEY_BUNDLE_PER_PAIR: f"{identity.user_id}:{user_id}"})
    # Your own other devices, never the one asking.
    skip = identity.device_id if user_id == identity.user_id else None
    only = await _device_ids(request, access.settings.max_request_bytes)
    async with _pool(request).connection() as conn:
        version, taken = await take_bundles(conn, user_id, skip, only)
    return JSONResponse(
        {"user_id": str(user_id), "version": version, "devices": [bundle_json(b) for b in taken]}
    )


async def _device_ids(request: Request, max_bytes: int) -> list[str] | None:
    """The devices a bundle request names (`{"device_ids": [...]}`), None for all."""
    if not await request.body():
        return None
    body = await read_json(request, max_bytes)
    given = body.get("device_ids")
    if given is None:
        return None
    if not isinstance(given, list) or not all(isinstance(d, str) for d in given):
        raise BadRequest("'device_ids' must be a list of device ids")
    return given


async def forget_device_keys(pool: AsyncConnectionPool[Any], user_id: UUID, device_id: str) -> None:
    """Remove the keys of a device the user removed: senders stop encrypting for it."""
    async with pool.connection() as conn:
        await remove_device(conn, user_id, device_id)


def key_routes() -> list[Route]:
    return [
        Route("/v1/me/keys", publish, methods=["PUT"]),
        Route("/v1/me/keys", count, methods=["GET"]),
        Route("/v1/me/keys", unpublish, methods=["DELETE"]),
        Route("/v1/users/{user_id}/devices", devices, methods=["GET"]),
        Route("/v1/users/{user_id}/keys", bundles, methods=["POST"]),
    ]
