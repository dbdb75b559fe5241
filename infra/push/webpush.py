"""Web Push (RFC 8030) with an aes128gcm-encrypted payload (RFC 8291, on RFC 8188) and
VAPID application-server identification (RFC 8292).

The VAPID key pair is made on first use and kept in `<state_dir>/push/vapid.pem` (or
read from `PARLEY_WEBPUSH_VAPID_KEY`); its public half is what a browser's
`pushManager.subscribe` takes as `applicationServerKey` (`GET /v1/push/config`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.push.endpoints import AddressRefused, EndpointPolicy, EndpointRefused
from infra.push.provider import Notification, Outcome, Result, result_of
from infra.settings import Settings

RECORD_SIZE = 4096
VAPID_TTL_S = 12 * 3600  # RFC 8292: at most 24 hours


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def vapid_key_path(settings: Settings) -> Path:
    return Path(settings.webpush_vapid_key or Path(settings.state_dir) / "push" / "vapid.pem")


def load_vapid_key(settings: Settings) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key, made and saved (owner-only) the first time it is asked for."""
    path = vapid_key_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    return loaded


def raw_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point (65 bytes) browsers and RFC 8291 use."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def encrypt(plaintext: bytes, ua_public: bytes, auth_secret: bytes) -> bytes:
    """The aes128gcm body for one subscription (RFC 8291 section 3.4, one record)."""
    as_key = ec.generate_private_key(ec.SECP256R1())
    as_public = raw_public_key(as_key.public_key())
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    ecdh_secret = as_key.exchange(ec.ECDH(), ua_key)
    prk_key = _hmac(auth_secret, ecdh_secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    salt = os.urandom(16)
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    if len(plaintext) + 1 + 16 > RECORD_SIZE:
        raise ValueError("a push payload must fit one record")
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    header = salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public
    return header + ciphertext


class WebPush:
    """Sends to a subscription's endpoint: `target` is the browser's PushSubscription
    JSON, `{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}`.

    The endpoint is checked against the policy again before each send (it may have been
    stored under another one), and `client` connects through `PublicOnlyResolver`
    (`parley.wiring.push_providers`), which checks the addresses. A refusal by either
    is `failed`, not retried (infra/push/endpoints.py)."""

    name = "webpush"

    def __init__(self, settings: Settings, client: aiohttp.ClientSession) -> None:
        self._policy = EndpointPolicy.from_settings(settings)
        self._key = load_vapid_key(settings)
        self._public = b64url(raw_public_key(self._key.public_key()))
        self._subject = settings.webpush_subject
        self._ttl_s = settings.push_ttl_s
        self._client = client
        self._tokens: dict[str, tuple[str, float]] = {}  # audience -> (jwt, expires)

    @property
    def public_key(self) -> str:
        return self._public

    def _vapid(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        token, expires = self._tokens.get(audience, ("", 0.0))
        now = time.time()
        if expires - now < 3600:  # a fresh one well before the last expires
            expires = now + VAPID_TTL_S
            claims = {"aud": audience, "exp": int(expires), "sub": self._subject}
            token = jwt.encode(claims, self._key, algorithm="ES256")
            self._tokens[audience] = (token, expires)
        return f"vapid t={token}, k={self._public}"

    async def send(self, target: dict[str, Any], note: Notification) -> Result:
        try:
            endpoint = self._policy.check(str(target["endpoint"]))
        except EndpointRefused as refused:
            return Result(Outcome.FAILED, detail=f"endpoint refused: {refused}")
        except (KeyError, TypeError):
            return Result(Outcome.GONE, detail="unusable subscription: no endpoint")
        try:
            body = encrypt(
                orjson.dumps(note.data()),
                unb64url(target["keys"]["p256dh"]),
                unb64url(target["keys"]["auth"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return Result(Outcome.GONE, detail=f"unusable subscription: {type(exc).__name__}")
        headers = {
            "TTL": str(self._ttl_s),
            "Topic": note.collapse_key,
            "Urgency": "high",
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self._vapid(endpoint),
        }
        try:
            # A redirect could point anywhere, past the policy: push services do not send one.
            async with self._client.post(
                endpoint, data=body, headers=headers, allow_redirects=False
            ) as response:
                detail = (await response.text(errors="replace"))[:200]
                return result_of(response.status, response.headers, detail)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return Result(Outcome.FAILED, detail=f"address refused: {exc.os_error}")
            raise

    async def close(self) -> None:
        return None
