"""Tokens against a real Redis: every JWT attack is refused, refresh rotates, logout ends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from redis.asyncio import Redis

from domain.account_errors import InvalidToken, TokenExpired
from domain.errors import DomainError
from infra.auth import Tokens, TokenType, logout_channel, signing_secret
from infra.settings import Settings
from tests.accounts.client import http_client, subscribed

SECRET_KEY_SIZE = 48


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def tokens(settings: Settings, redis: Redis) -> Tokens:
    return Tokens(settings, redis)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def hs(secret: str, digest: Any) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret.encode(), data, digest).digest()


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_a_fresh_access_token_names_user_device_and_session(tokens: Tokens) -> None:
    user_id = uuid.uuid4()
    pair = await tokens.issue(user_id, "phone-1")
    identity = await tokens.authenticate(pair.access_token)
    assert (identity.user_id, identity.device_id) == (user_id, "phone-1")
    claims = claims_of(pair.access_token)
    assert set(claims) == {"sub", "exp", "iat", "iss", "aud", "jti", "typ", "dev", "sid"}
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert jwt.get_unverified_header(pair.access_token)["alg"] == "HS256"
    refresh = claims_of(pair.refresh_token)
    assert refresh["exp"] - refresh["iat"] == 30 * 24 * 3600
    assert (refresh["typ"], refresh["sid"]) == ("refresh", claims["sid"])


async def test_every_jwt_attack_is_refused(tokens: Tokens, settings: Settings) -> None:
    pair = await tokens.issue(uuid.uuid4(), "phone-1")
    good = claims_of(pair.access_token)
    header = {"alg": "HS256", "typ": "JWT"}
    secret = signing_secret(settings)
    now = int(time.time())
    head, payload, signature = pair.access_token.split(".")
    other = {**good, "sub": str(uuid.uuid4())}
    attacks: dict[str, tuple[str, type[DomainError]]] = {
        "alg none": (forge({"alg": "none", "typ": "JWT"}, good, lambda _: b""), InvalidToken),
        "alg None": (forge({"alg": "None"}, good, lambda _: b""), InvalidToken),
        "wrong alg HS512": (
            forge({"alg": "HS512"}, good, hs(secret, hashlib.sha512)),
            InvalidToken,
        ),
        "wrong alg RS256": (forge({"alg": "RS256"}, good, lambda _: b"x" * 256), InvalidToken),
        "wrong key": (forge(header, good, hs("k" * SECRET_KEY_SIZE, hashlib.sha256)), InvalidToken),
        "wrong audience": (
            forge(header, {**good, "aud": "someone-else"}, hs(secret, hashlib.sha256)),
            InvalidToken,
        ),
        "wrong issuer": (
            forge(header, {**good, "iss": "evil"}, hs(secret, hashlib.sha256)),
            InvalidToken,
        ),
        "expired": (
            forge(
                header, {**good, "iat": now - 7200, "exp": now - 3600}, hs(secret, hashlib.sha256)
            ),
            TokenExpired,
        ),
        "issued in the future": (
            forge(
                header, {**good, "iat": now + 3600, "exp": now + 7200}, hs(secret, hashlib.sha256)
            ),
            InvalidToken,
        ),
        "no exp": (
            forge(
                header, {k: v for k, v in good.items() if k != "exp"}, hs(secret, hashlib.sha256)
            ),
            InvalidToken,
        ),
        "no session": (
            forge(
                header, {k: v for k, v in good.items() if k != "sid"}, hs(secret, hashlib.sha256)
            ),
            InvalidToken,
        ),
        "tampered payload": (
            f"{head}.{b64(json.dumps(other).encode())}.{signature}",
            InvalidToken,
        ),
        "tampered signature": (
            f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}",
            InvalidToken,
        ),
        "refresh token as access token": (pair.refresh_token, InvalidToken),
        "not a jwt": ("hello", InvalidToken),
        "empty": ("", InvalidToken),
    }
    for name, (token, error) in attacks.items():
        with pytest.raises(error):
            await tokens.authenticate(token)
            pytest.fail(f"accepted: {name}")
    with pytest.raises(InvalidToken):
        await tokens.refresh(pair.access_token)  # an access token cannot refresh


async def test_attacks_over_http_answer_401_with_the_code(fast: Settings) -> None:
    async with http_client(fast) as client:
        now = int(time.time())
        claims = {
            "sub": str(uuid.uuid4()), "iat": now, "exp": now + 60, "iss": fast.jwt_issuer,
            "aud": fast.jwt_audience, "jti": "j", "typ": "access", "dev": "d", "sid": "s",
        }  # fmt: skip
        none = forge({"alg": "none"}, claims, lambda _: b"")
        expired = forge(
            {"alg": "HS256"},
            {**claims, "iat": now - 100, "exp": now - 60},
            hs(signing_secret(fast), hashlib.sha256),
        )
        for token, code in [(none, "invalid_token"), (expired, "token_expired")]:
            answer = await client.post(
                "/v1/me/profile", json={"about": "x"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == code


async def test_tokens_issued_long_ago_have_expired(settings: Settings, redis: Redis) -> None:
    past = Tokens(settings, redis, clock=lambda: time.time() - 31 * 24 * 3600)
    pair = await past.issue(uuid.uuid4(), "phone-1")
    with pytest.raises(TokenExpired):
        await past.authenticate(pair.access_token)
    with pytest.raises(TokenExpired):
        await past.refresh(pair.refresh_token)


async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_session(
    tokens: Tokens, redis: Redis
) -> None:
    user_id = uuid.uuid4()
    first = await tokens.issue(user_id, "phone-1")
    second = await tokens.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert (await tokens.authenticate(second.access_token)).user_id == user_id
    third = await tokens.refresh(second.refresh_token)

    async with subscribed(redis, logout_channel(user_id)) as messages:
        with pytest.raises(InvalidToken, match="already used"):
            await tokens.refresh(first.refresh_token)  # a copy of a spent token
        announced = await messages()
    assert announced["reason"] == "refresh_reuse"
    assert announced["session_ids"] == [claims_of(first.access_token)["sid"]]
    # The whole session is over, for the thief and the owner alike.
    for refresh in (third.refresh_token, second.refresh_token):
        with pytest.raises(InvalidToken):
            await tokens.refresh(refresh)
    with pytest.raises(InvalidToken):
        await tokens.authenticate(third.access_token)


async def test_logout_revokes_the_session_and_announces_it(tokens: Tokens, redis: Redis) -> None:
    user_id = uuid.uuid4()
    phone = await tokens.issue(user_id, "phone-1")
    laptop = await tokens.issue(user_id, "laptop")
    async with subscribed(redis, logout_channel(user_id)) as messages:
        ended = await tokens.logout(phone.refresh_token)
        announced = await messages()
    sid = claims_of(phone.access_token)["sid"]
    assert ended == [sid]
    assert announced == {
        "user_id": str(user_id),
        "session_ids": [sid],
        "device_id": "phone-1",
        "reason": "logout",
    }
    with pytest.raises(InvalidToken):
        await tokens.refresh(phone.refresh_token)
    with pytest.raises(InvalidToken):
        await tokens.authenticate(phone.access_token)
    assert (await tokens.authenticate(laptop.access_token)).device_id == "laptop"
    assert await tokens.logout(phone.refresh_token) == [sid]  # logging out again is fine


async def test_logout_everywhere(tokens: Tokens, redis: Redis) -> None:
    user_id = uuid.uuid4()
    pairs = [await tokens.issue(user_id, device) for device in ("phone-1", "laptop", "tablet")]
    stale = pairs[0].refresh_token
    pairs[0] = await tokens.refresh(stale)
    with pytest.raises(InvalidToken):  # only the current refresh token may end every session
        await tokens.logout(stale, all_devices=True)
    async with subscribed(redis, logout_channel(user_id)) as messages:
        ended = await tokens.logout(pairs[1].refresh_token, all_devices=True)
        announced = await messages()
    sids = sorted(claims_of(p.access_token)["sid"] for p in pairs)
    assert ended == sids
    assert announced["session_ids"] == sids and announced["device_id"] is None
    for pair in pairs:
        with pytest.raises(InvalidToken):
            await tokens.authenticate(pair.access_token)


async def test_removing_a_device_ends_its_sessions(tokens: Tokens) -> None:
    user_id = uuid.uuid4()
    phone = await tokens.issue(user_id, "phone-1")
    laptop = await tokens.issue(user_id, "laptop")
    assert await tokens.logout_device(user_id, "phone-1") == [claims_of(phone.access_token)["sid"]]
    with pytest.raises(InvalidToken):
        await tokens.authenticate(phone.access_token)
    await tokens.authenticate(laptop.access_token)


def test_a_short_secret_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Tokens(settings.replace(jwt_secret="short"), Redis.from_url(settings.redis_url))


def test_decode_needs_no_redis(tokens: Tokens, settings: Settings) -> None:
    token = jwt.encode(
        {
            "sub": str(uuid.uuid4()),
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "jti": "j",
            "typ": "refresh",
            "dev": "d",
            "sid": "s",
        },
        signing_secret(settings),
        algorithm="HS256",
    )
    assert tokens.decode(token, TokenType.REFRESH).device_id == "d"
    with pytest.raises(InvalidToken, match="access token is needed"):
        tokens.decode(token)


def resign(token: str, secret: str, **changes: Any) -> str:
    """The token with some claims changed, signed again with the stack's secret: what
    anyone holding the secret (and one real token) could make."""
    return jwt.encode({**claims_of(token), **changes}, secret, algorithm="HS256")


async def test_a_token_naming_another_users_session_is_refused(
    tokens: Tokens, settings: Settings, redis: Redis
) -> None:
    secret = signing_secret(settings)
    mallory, victim = uuid.uuid4(), uuid.uuid4()
    own = await tokens.issue(mallory, "phone-1")
    theirs = await tokens.issue(victim, "phone-1")
    # Mallory keeps her real session and device but names the victim...
    as_victim = resign(own.access_token, secret, sub=str(victim))
    with pytest.raises(InvalidToken):
        await tokens.authenticate(as_victim)
    # ...or keeps herself and names another device of hers, on her own session.
    with pytest.raises(InvalidToken):
        await tokens.authenticate(resign(own.access_token, secret, dev="laptop"))
    # Refresh and logout check the session's owner too: no new pair for the victim, and
    # no ending of the victim's sessions with a token built on Mallory's session.
    with pytest.raises(InvalidToken):
        await tokens.refresh(resign(own.refresh_token, secret, sub=str(victim)))
    with pytest.raises(InvalidToken):
        await tokens.logout(resign(own.refresh_token, secret, sub=str(victim)), all_devices=True)
    with pytest.raises(InvalidToken):
        await tokens.logout(resign(own.refresh_token, secret, sub=str(victim)))
    # Both sessions are untouched by the attempts.
    assert (await tokens.authenticate(theirs.access_token)).user_id == victim
    assert (await tokens.authenticate(own.access_token)).user_id == mallory
    assert (await tokens.refresh(own.refresh_token)).user_id == mallory


async def test_a_token_living_longer_than_its_kind_is_refused(
    tokens: Tokens, settings: Settings
) -> None:
    secret = signing_secret(settings)
    pair = await tokens.issue(uuid.uuid4(), "phone-1")
    iat = claims_of(pair.access_token)["iat"]
    year_out = resign(pair.access_token, secret, exp=iat + 365 * 24 * 3600)
    with pytest.raises(InvalidToken, match="longer"):
        await tokens.authenticate(year_out)
    # At the lifetime plus the leeway it is still a token; one second more is not.
    longest = settings.access_token_ttl_s + settings.jwt_leeway_s
    assert (await tokens.authenticate(resign(pair.access_token, secret, exp=iat + longest))).user_id
    with pytest.raises(InvalidToken):
        await tokens.authenticate(resign(pair.access_token, secret, exp=iat + longest + 1))
    refresh_iat = claims_of(pair.refresh_token)["iat"]
    long_refresh = resign(
        pair.refresh_token, secret, exp=refresh_iat + settings.refresh_token_ttl_s + 3600
    )
    with pytest.raises(InvalidToken):
        await tokens.refresh(long_refresh)
    with pytest.raises(InvalidToken):  # issued in the future, to live longer from now
        await tokens.authenticate(resign(pair.access_token, secret, iat=iat + 600))
