"""Passwords (argon2) and tokens (JWT, HS256) over sessions kept in Redis.

A login opens a *session* (one device's login): a Redis hash `parley:session:<sid>`
holding the user, the device and the id of the one refresh token that is currently
valid for it, set to expire with that refresh token. Access tokens are short-lived and
name their session (`sid`); `Tokens.authenticate` checks that the session still exists,
so a logout ends its access tokens at once for every service that authenticates. A
refresh rotates the session's refresh token id; presenting a rotated (older) one again
means the token was copied, so the whole session is revoked.

Logout publishes on Redis channel `parley:logout:<user_id>` a JSON message
`{"user_id", "session_ids", "device_id", "reason"}`: every gateway closes the live
connections of that user that were opened with one of those sessions (docs/auth.md).

Over 400 lines on purpose: passwords, tokens and sessions share the one session record
and the one argument about when a token stops working; split, each would restate it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis

from domain.account_errors import InvalidToken, TokenExpired
from infra.local_secret import local_secret
from infra.settings import Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ALLOWED_ALGORITHMS = (ALGORITHM,)
"""The only algorithm a token may name; `none`, RS*/ES* and other HS* are refused."""
MIN_SECRET_BYTES = 32
DEVELOPMENT_JWT_SECRET = "parley-dev-only-jwt-secret-set-PARLEY_JWT_SECRET-in-production"
"""A value published in Parley's repository: anyone could sign tokens with it, so it is
refused (`signing_secret`)."""
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud", "jti", "typ", "dev", "sid")
SESSION_KEY = "parley:session:{session_id}"
USER_SESSIONS_KEY = "parley:sessions:{user_id}"
LOGOUT_CHANNEL = "parley:logout:{user_id}"


def signing_secret(settings: Settings) -> str:
    """The key tokens are signed and checked with: `PARLEY_JWT_SECRET` when set, else this
    stack's own random key, made at first start under the state folder
    (`infra.local_secret`), so every service of the stack shares it. A published or short
    key is refused with a `ValueError` that says what to do."""
    given = settings.jwt_secret
    if not given:
        return local_secret(settings.state_dir, "jwt_secret")
    if given == DEVELOPMENT_JWT_SECRET:
        msg = (
            "PARLEY_JWT_SECRET is the development value published in Parley's repository, "
            "so anyone could sign tokens with it: unset it (a random secret is then kept "
            "under the state folder) or set a secret of your own"
        )
        raise ValueError(msg)
    if len(given.encode()) < MIN_SECRET_BYTES:
        msg = f"PARLEY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
        raise ValueError(msg)
    return given


def logout_channel(user_id: UUID) -> str:
    """The Redis channel on which a user's logouts are announced to the gateways."""
    return LOGOUT_CHANNEL.format(user_id=user_id)


class Passwords:
    """argon2id hashing; at most `password_hash_concurrency` hashes at once (memory-hard)."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._slots = threading.BoundedSemaphore(settings.password_hash_concurrency)
        self._dummy_hash = self.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        with self._slots:
            return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether the password matches; with no hash (an unknown user) the same work is
        done against a dummy hash and the answer is False, so both take the same time."""
        with self._slots:
            try:
                matched: bool = self._hasher.verify(password_hash or self._dummy_hash, password)
            except (VerificationError, InvalidHashError):
                matched = False
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


class TokenType(StrEnum):
    """The `typ` claim: what a token may be used for."""

    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who presented a valid token: the user, their device and their session."""

    user_id: UUID
    device_id: str
    session_id: str
    token_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a login or a refresh answers."""

    user_id: UUID
    device_id: str
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "device_id": self.device_id,
            "token_type": "Bearer",
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "refresh_expires_in": self.refresh_expires_in,
        }


# KEYS[1] = the session; ARGV = presented refresh token id, new id, ttl ms, the token's
# user and device. 1: rotated; 0: no such session (revoked or expired); -2: the session
# is another user's or device's (a forged token; the session is left alone); -1: a
# rotated token was reused, so the session is revoked.
_ROTATE = """
local session = redis.call('HMGET', KEYS[1], 'refresh', 'user', 'device')
local current = session[1]
if not current then return 0 end
if session[2] ~= ARGV[4] or session[3] ~= ARGV[5] then return -2 end
if current ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
  return -1
end
redis.call('HSET', KEYS[1], 'refresh', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class Tokens:
    """Issues, checks, refreshes and revokes tokens; sessions live in Redis."""

    def __init__(
        self, settings: Settings, redis: Redis, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = signing_secret(settings)
        self._settings = settings
        self._redis = redis
        self._clock = clock
        self._rotate = redis.register_script(_ROTATE)

    # Checking

    def decode(self, token: str, expected: TokenType = TokenType.ACCESS) -> Identity:
        """Check a token's signature, algorithm, claims and kind, without I/O.

        Raises `token_expired` past `exp`, `invalid_token` for anything else wrong,
        including a token that lives longer than its kind's lifetime (`exp - iat`).
        Does not see revocation: use `authenticate` for that.
        """
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {type(exc).__name__}") from None
        if claims["typ"] != expected.value:
            raise InvalidToken(f"a {expected.value} token is needed")
        lifetime = s.access_token_ttl_s if expected is TokenType.ACCESS else s.refresh_token_ttl_s
        try:
            lived = int(claims["exp"]) - int(claims["iat"])
        except (TypeError, ValueError):
            raise InvalidToken() from None
        if lived > lifetime + s.jwt_leeway_s:
            raise InvalidToken("the token lives longer than its kind may")
        try:
            user_id = UUID(str(claims["sub"]))
        except ValueError:
            raise InvalidToken() from None
        device_id, session_id, token_id = claims["dev"], claims["sid"], claims["jti"]
        if not all(isinstance(v, str) and v for v in (device_id, session_id, token_id)):
            raise InvalidToken()
        return Identity(user_id, device_id, session_id, token_id, int(claims["exp"]))

    async def authenticate(self, access_token: str) -> Identity:
        """The identity of a valid access token whose session has not been logged out and
        belongs to the token's user and device."""
        identity = self.decode(access_token, TokenType.ACCESS)
        await self._check_session(identity, required=True)
        return identity

    async def _check_session(self, identity: Identity, required: bool) -> None:
        """`invalid_token` unless the session the token names is its user's and device's
        (a token naming someone else's session was forged); an ended session is refused
        only when `required`."""
        user, device = await self._redis.hmget(
            self._session_key(identity.session_id), ["user", "device"]
        )
        if user is None:
            if required:
                raise InvalidToken("the session has ended; log in again")
            return
        if (
            _text(user) != str(identity.user_id)
            or device is None
            or _text(device) != identity.device_id
        ):
            log.warning(
                "event=token_session_mismatch user_id=%s sid=%s",
                identity.user_id,
                identity.session_id,
            )
            raise InvalidToken()

    # Issuing and rotating

    async def issue(self, user_id: UUID, device_id: str) -> TokenPair:
        """Open a new session for a user's device and return its first tokens."""
        session_id = uuid.uuid4().hex
        refresh_id = uuid.uuid4().hex
        ttl_ms = self._settings.refresh_token_ttl_s * 1000
        sessions = USER_SESSIONS_KEY.format(user_id=user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._session_key(session_id),
                mapping={"user": str(user_id), "device": device_id, "refresh": refresh_id},
            )
            pipe.pexpire(self._session_key(session_id), ttl_ms)
            pipe.sadd(sessions, session_id)
            pipe.pexpire(sessions, ttl_ms)
            await pipe.execute()
        log.info(
            "event=session_opened user_id=%s device_id=%s sid=%s", user_id, device_id, session_id
        )
        return self._pair(user_id, device_id, session_id, refresh_id)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """New tokens for a session; the presented refresh token is spent."""
        identity = self.decode(refresh_token, TokenType.REFRESH)
        new_id = uuid.uuid4().hex
        ttl_ms = self._settings.refresh_token_ttl_s * 1000
        key = self._session_key(identity.session_id)
        outcome = int(
            await self._rotate(
                keys=[key],
                args=[identity.token_id, new_id, ttl_ms, str(identity.user_id), identity.device_id],
            )
        )
        if outcome == -2:
            log.warning(
                "event=token_session_mismatch user_id=%s sid=%s",
                identity.user_id,
                identity.session_id,
            )
            raise InvalidToken()
        if outcome == -1:
            log.warning(
                "event=refresh_token_reused user_id=%s sid=%s",
                identity.user_id,
                identity.session_id,
            )
            await self._announce(
                identity.user_id, [identity.session_id], identity.device_id, "refresh_reuse"
            )
            raise InvalidToken("this refresh token was already used; log in again")
        if outcome == 0:
            raise InvalidToken("the session has ended; log in again")
        await self._redis.pexpire(USER_SESSIONS_KEY.format(user_id=identity.user_id), ttl_ms)
        return self._pair(identity.user_id, identity.device_id, identity.session_id, new_id)

    # Ending sessions

    async def logout(self, refresh_token: str, all_devices: bool = False) -> list[str]:
        """End the token's session (or all the user's sessions); returns the ended ids.

        Ending one session is idempotent: one already ended is announced again, not an
        error. Ending all needs the session's current refresh token.
        """
        identity = self.decode(refresh_token, TokenType.REFRESH)
        await self._check_session(identity, required=all_devices)
        if all_devices:
            # Only the holder of a session's current refresh token may end every session.
            current = await self._redis.hget(self._session_key(identity.session_id), "refresh")
            if current is None or _text(current) != identity.token_id:
                raise InvalidToken("the session has ended; log in again")
            members = await self._redis.smembers(USER_SESSIONS_KEY.format(user_id=identity.user_id))
            session_ids = sorted({_text(m) for m in members} | {identity.session_id})
        else:
            session_ids = [identity.session_id]
        await self._end(identity.user_id, session_ids, all_devices)
        device = None if all_devices else identity.device_id
        await self._announce(identity.user_id, session_ids, device, "logout")
        return session_ids

    async def logout_device(self, user_id: UUID, device_id: str) -> list[str]:
        """End every session of one of a user's devices (it was removed)."""
        members = await self._redis.smembers(USER_SESSIONS_KEY.format(user_id=user_id))
        ended = []
        for session_id in sorted(_text(m) for m in members):
            owner = await self._redis.hget(self._session_key(session_id), "device")
            if owner is not None and _text(owner) == device_id:
                ended.append(session_id)
        await self._end(user_id, ended, everything=False)
        await self._announce(user_id, ended, device_id, "device_removed")
        return ended

    async def _end(self, user_id: UUID, session_ids: Iterable[str], everything: bool) -> None:
        ids = list(session_ids)
        sessions = USER_SESSIONS_KEY.format(user_id=user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for session_id in ids:
                pipe.delete(self._session_key(session_id))
            if everything:
                pipe.delete(sessions)
            elif ids:
                pipe.srem(sessions, *ids)
            await pipe.execute()
        log.info("event=sessions_ended user_id=%s count=%d", user_id, len(ids))

    async def _announce(
        self, user_id: UUID, session_ids: list[str], device_id: str | None, reason: str
    ) -> None:
        message = {
            "user_id": str(user_id),
            "session_ids": session_ids,
            "device_id": device_id,
            "reason": reason,
        }
        await self._redis.publish(logout_channel(user_id), json.dumps(message))

    # Encoding

    def _pair(self, user_id: UUID, device_id: str, session_id: str, refresh_id: str) -> TokenPair:
        s = self._settings
        access = self._encode(
            TokenType.ACCESS, user_id, device_id, session_id, uuid.uuid4().hex, s.access_token_ttl_s
        )
        refresh = self._encode(
            TokenType.REFRESH, user_id, device_id, session_id, refresh_id, s.refresh_token_ttl_s
        )
        return TokenPair(
            user_id, device_id, access, refresh, s.access_token_ttl_s, s.refresh_token_ttl_s
        )

    def _encode(
        self,
        kind: TokenType,
        user_id: UUID,
        device_id: str,
        session_id: str,
        token_id: str,
        ttl_s: int,
    ) -> str:
        now = int(self._clock())
        claims = {
            "sub": str(user_id),
            "iat": now,
            "exp": now + ttl_s,
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "jti": token_id,
            "typ": kind.value,
            "dev": device_id,
            "sid": session_id,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    @staticmethod
    def _session_key(session_id: str) -> str:
        return SESSION_KEY.format(session_id=session_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
