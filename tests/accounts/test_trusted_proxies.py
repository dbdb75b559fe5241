"""Whose address a limit counts: the socket's peer, unless a trusted proxy says otherwise.

The commands service runs as a real process (uvicorn, as deployed); a registration is
refused by the per-address limit (1 then none) before its body is read, so `{}` answers
400 while the address has room and 429 once it has none.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bench.servers import free_port
from commands.ratelimit import Limit, _key
from infra.settings import Settings
from tests.services import running

ONE_REGISTRATION = {
    "PARLEY_RATE_REGISTER_ADDRESS_BURST": "1",
    "PARLEY_RATE_REGISTER_ADDRESS_PER_S": "0.001",
}


def forget_loopback(settings: Settings) -> None:
    """Empty loopback's registration bucket: other tests register from 127.0.0.1 too."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.delete(_key(Limit.REGISTER_PER_ADDRESS, "127.0.0.1"))
    finally:
        client.close()


@pytest.fixture
def commands(topics: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    env = {**ONE_REGISTRATION, "PARLEY_COMMANDS_PORT": str(port), **request.param}
    forget_loopback(topics)
    try:
        with running("commands", tmp_path / "commands.log", env) as service:
            service.wait_for_log(r"event=commands_listening")
            yield f"http://127.0.0.1:{port}"
    finally:
        forget_loopback(topics)


def register_from(base: str, forwarded_for: str) -> int:
    answer = httpx.post(
        f"{base}/v1/auth/register", json={}, headers={"X-Forwarded-For": forwarded_for}
    )
    return answer.status_code


def fresh_address() -> str:
    return f"203.0.113.{secrets.randbelow(250) + 1}, 10.{secrets.randbelow(250)}.0.1"


@pytest.mark.parametrize("commands", [{}], indirect=True)
def test_by_default_no_client_chooses_its_address(commands: str) -> None:
    # Every request comes from 127.0.0.1, whatever X-Forwarded-For claims.
    assert [register_from(commands, fresh_address()) for _ in range(3)] == [400, 429, 429]


@pytest.mark.parametrize("commands", [{"PARLEY_TRUSTED_PROXIES": "127.0.0.1"}], indirect=True)
def test_a_trusted_proxys_forwarded_address_is_the_clients(commands: str) -> None:
    first, second = f"198.51.100.{secrets.randbelow(250)}", f"192.0.2.{secrets.randbelow(250)}"
    assert register_from(commands, first) == 400
    assert register_from(commands, first) == 429
    assert register_from(commands, second) == 400  # another client behind the same proxy
