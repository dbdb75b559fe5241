"""Token buckets in the real Redis (hit, refused with a retry-after, refilled) and in
memory (the gateway's, reconciled with Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from commands.ratelimit import (
    _RECONCILE,
    Bucket,
    Decision,
    Limit,
    LocalBuckets,
    RateLimiter,
    SharedBuckets,
    _key,
    buckets_from_settings,
)
from domain.account_errors import RateLimited
from infra.settings import Settings
from tests.accounts.client import PASSWORD, http_client, register

TIGHT = Bucket(burst=3, per_s=4.0)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


async def wait_until(condition: Callable[[], Awaitable[bool]], deadline_s: float) -> float:
    """Poll until the condition holds; returns how long it took, fails at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if await condition():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {deadline_s}s")


async def test_a_bucket_empties_refuses_and_refills(redis: Redis) -> None:
    limiter = RateLimiter(redis, {Limit.SEND_PER_USER: TIGHT})
    key = {Limit.SEND_PER_USER: str(uuid.uuid4())}
    taken = [await limiter.take(key) for _ in range(TIGHT.burst)]
    assert all(d.allowed for d in taken)
    assert taken[-1].remaining == pytest.approx(0, abs=0.1)
    refused = await limiter.take(key)
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 1 / TIGHT.per_s + 0.01
    with pytest.raises(RateLimited) as raised:
        await limiter.check(key)
    assert raised.value.code == "rate_limited" and raised.value.retry_after_s > 0

    async def allowed_again() -> bool:
        return (await limiter.take(key)).allowed

    waited = await wait_until(allowed_again, deadline_s=5)
    assert waited <= refused.retry_after_s + 1


async def test_refused_requests_take_nothing_from_any_bucket(redis: Redis) -> None:
    limiter = RateLimiter(
        redis,
        {Limit.SEND_PER_USER: Bucket(5, 0.001), Limit.SEND_PER_CONNECTION: Bucket(1, 0.001)},
    )
    user, connection = str(uuid.uuid4()), str(uuid.uuid4())
    both = {Limit.SEND_PER_USER: user, Limit.SEND_PER_CONNECTION: connection}
    assert (await limiter.take(both)).allowed
    for _ in range(3):  # the connection's bucket is empty: refused, and the user's untouched
        assert not (await limiter.take(both)).allowed
    user_only = {Limit.SEND_PER_USER: user}
    outcomes = [(await limiter.take(user_only)).allowed for _ in range(5)]
    assert outcomes == [True, True, True, True, False]
    # Another connection of the same user has its own bucket but shares the user's.
    other = {Limit.SEND_PER_USER: user, Limit.SEND_PER_CONNECTION: str(uuid.uuid4())}
    assert not (await limiter.take(other)).allowed


async def test_settings_give_every_limit_a_bucket(settings: Settings, redis: Redis) -> None:
    buckets = buckets_from_settings(settings)
    assert set(buckets) == set(Limit)
    assert buckets[Limit.LOGIN_PER_ACCOUNT] == Bucket(10, 0.05)
    limiter = RateLimiter(redis, buckets)
    assert await limiter.take({}) == Decision(True, 0.0, float("inf"))
    with pytest.raises(ValueError, match="can never fit"):
        await limiter.take({Limit.LOGIN_PER_ACCOUNT: "x"}, cost=11)


async def test_logins_are_limited_per_account_then_allowed_again(fast: Settings) -> None:
    limited = fast.replace(rate_login_account_burst=3, rate_login_account_per_s=2.0)
    async with http_client(limited) as client:
        _, username, _ = await register(client)

        async def attempt(password: str) -> int:
            answer = await client.post(
                "/v1/auth/login",
                json={"username": username, "password": password, "device_id": "d"},
            )
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "rate_limited"
                assert answer.headers["Retry-After"] == "1"
            return answer.status_code

        assert [await attempt("wrong password") for _ in range(3)] == [401, 401, 401]
        assert await attempt(PASSWORD) == 429  # even the right password waits its turn

        async def logged_in() -> bool:
            return await attempt(PASSWORD) == 200

        assert await wait_until(logged_in, deadline_s=10) <= 2


async def test_registrations_are_limited_per_address(fast: Settings) -> None:
    limited = fast.replace(rate_register_address_burst=2, rate_register_address_per_s=0.01)
    async with http_client(limited, address="10.77.0.1") as client:
        await register(client)
        await register(client)
        answer = await client.post("/v1/auth/register", json={})
        assert answer.status_code == 429
        assert int(answer.headers["Retry-After"]) >= 99
    async with http_client(limited, address="10.77.0.2") as elsewhere:
        await register(elsewhere)


# Buckets decided in memory (the gateway's): the same arithmetic, and shared through Redis.


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.unit
@hypothesis_settings(max_examples=300, deadline=None)
@given(
    burst=st.integers(1, 20),
    per_s=st.floats(0.5, 50),
    steps=st.lists(st.tuples(st.floats(0, 2), st.booleans()), min_size=1, max_size=200),
)
def test_local_buckets_never_allow_more_than_burst_plus_refill(
    burst: int, per_s: float, steps: list[tuple[float, bool]]
) -> None:
    clock = Clock()
    buckets = LocalBuckets(
        {Limit.SEND_PER_CONNECTION: Bucket(burst, per_s), Limit.SEND_PER_USER: Bucket(3, 1.0)},
        clock,
    )
    start = clock.now
    allowed = 0
    for wait, with_user in steps:
        clock.now += wait
        keys = {Limit.SEND_PER_CONNECTION: "c"}
        if with_user:
            keys[Limit.SEND_PER_USER] = "u"
        decision = buckets.take(keys)
        if decision.allowed:
            allowed += 1
        else:
            # Refused: nothing taken, and after retry_after_s the same request passes.
            again = buckets.take(keys)
            assert not again.allowed
            clock.now += decision.retry_after_s + 1e-6
            assert buckets.take(keys).allowed
            allowed += 1
        assert allowed <= burst + (clock.now - start) * per_s + 1e-6


async def test_shared_buckets_count_every_gateways_takes(redis: Redis) -> None:
    tight = {Limit.SEND_PER_USER: Bucket(10, 0.001)}
    one, two = SharedBuckets(redis, tight), SharedBuckets(redis, tight)
    user = str(uuid.uuid4())
    key = {Limit.SEND_PER_USER: user}
    await one.load([Limit.SEND_PER_USER], user)
    await two.load([Limit.SEND_PER_USER], user)
    assert [one.take(key).allowed for _ in range(4)] == [True] * 4
    assert [two.take(key).allowed for _ in range(3)] == [True] * 3
    await one.flush()
    await two.flush()
    await one.flush()  # nothing new from `one`: its level still follows `two`'s takes
    await one.load([Limit.SEND_PER_USER], user)
    assert [one.take(key).allowed for _ in range(4)] == [True, True, True, False]
    # Leaving and coming back (a reconnect, another gateway) starts from the shared level.
    await one.flush()
    one.forget([Limit.SEND_PER_USER], user)
    three = SharedBuckets(redis, tight)
    await three.load([Limit.SEND_PER_USER], user)
    refused = three.take(key)
    assert not refused.allowed and refused.retry_after_s > 100


async def test_a_failed_flush_keeps_the_takes_for_the_next(settings: Settings) -> None:
    bucket = {Limit.SEND_PER_USER: Bucket(5, 0.001)}
    user = str(uuid.uuid4())
    dead = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    buckets = SharedBuckets(dead, bucket)
    buckets.local.set_level(Limit.SEND_PER_USER, user, 5)
    assert buckets.take({Limit.SEND_PER_USER: user}).allowed
    with pytest.raises(Exception):  # noqa: B017 - any connection error
        await buckets.flush()
    await dead.aclose()
    live = Redis.from_url(settings.redis_url)
    try:
        buckets._reconcile_script = live.register_script(_RECONCILE)
        await buckets.flush()
        level = await live.hget(_key(Limit.SEND_PER_USER, user), "tokens")
        assert level is not None and float(level) == pytest.approx(4, abs=0.01)
    finally:
        await live.aclose()
