"""Passwords: argon2 hashes, and logins that do not tell unknown users from wrong passwords."""

from __future__ import annotations

import statistics
import time

from infra.auth import Passwords
from infra.settings import Settings
from tests.accounts.client import GENEROUS_LIMITS, PASSWORD, http_client, new_handles, register

ROUNDS = 7


def test_hashes_verify_and_never_contain_the_password(fast: Settings) -> None:
    passwords = Passwords(fast)
    hashed = passwords.hash(PASSWORD)
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert hashed != passwords.hash(PASSWORD)  # salted
    assert passwords.verify(hashed, PASSWORD)
    assert not passwords.verify(hashed, PASSWORD + "!")
    assert not passwords.verify(None, PASSWORD)  # an unknown user never matches
    assert not passwords.verify("not-a-hash", PASSWORD)
    assert passwords.needs_rehash(Passwords(fast.replace(argon2_time_cost=2)).hash("x"))


async def test_wrong_password_and_unknown_user_look_the_same(settings: Settings) -> None:
    """Same answer, and similar time: the unknown user's login verifies a dummy hash.

    Attempts alternate so that any load on the machine falls on both alike; the medians
    over several attempts must be within a factor of three of each other (without the
    dummy hash they differ by two orders of magnitude).
    """
    real_hashing = settings.replace(**GENEROUS_LIMITS)
    async with http_client(real_hashing) as client:
        _, username, _ = await register(client)
        unknown, _ = new_handles()
        answers: dict[str, list[tuple[int, str]]] = {"wrong": [], "unknown": []}
        times: dict[str, list[float]] = {"wrong": [], "unknown": []}
        for _ in range(ROUNDS):
            for case, name in (("wrong", username), ("unknown", unknown)):
                started = time.perf_counter()
                answer = await client.post(
                    "/v1/auth/login",
                    json={"username": name, "password": "not the password", "device_id": "d"},
                )
                times[case].append(time.perf_counter() - started)
                answers[case].append((answer.status_code, answer.text))

    assert set(answers["wrong"]) == set(answers["unknown"])
    assert len(set(answers["wrong"])) == 1
    status, body = answers["wrong"][0]
    assert status == 401 and '"invalid_credentials"' in body

    # Without the dummy hash the ratio is below 0.05 (a lookup against an argon2 verify).
    ratio = statistics.median(times["unknown"]) / statistics.median(times["wrong"])
    assert 1 / 3 < ratio < 3, times
