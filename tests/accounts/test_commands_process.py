"""The real `parley serve commands` process: races, logout, logs, clean shutdown."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from infra.auth import logout_channel
from infra.settings import Settings
from tests.accounts.client import FAST_HASHING, GENEROUS_LIMITS, PASSWORD, new_handles, subscribed
from tests.fullstack import NO_BALANCER
from tests.services import Service

ENV = {
    "PARLEY_COMMANDS_PORT": "0",  # any free port; the service logs which
    **NO_BALANCER,
    **{f"PARLEY_{name.upper()}": str(value) for name, value in FAST_HASHING.items()},
    **{f"PARLEY_{name.upper()}": str(value) for name, value in GENEROUS_LIMITS.items()},
}


def start(settings: Settings, log: Path) -> tuple[Service, str]:
    service = Service("commands", log, ENV).start()
    line = service.wait_for_log(r"event=commands_listening host=\S+ port=\d+")
    port = re.search(r"port=(\d+)", line)
    assert port is not None
    return service, f"http://{settings.commands_host}:{port.group(1)}"


@dataclass(frozen=True)
class Running:
    service: Service
    base_url: str


@pytest.fixture(scope="module")
def commands(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    service, base_url = start(settings, tmp_path_factory.mktemp("commands") / "commands.log")
    try:
        yield Running(service, base_url)
    finally:
        service.stop()


@pytest.fixture
async def client(commands: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=commands.base_url, timeout=30) as http:
        yield http


async def test_healthz(client: httpx.AsyncClient) -> None:
    answer = await client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


async def test_simultaneous_registrations_of_one_username(client: httpx.AsyncClient) -> None:
    username, _ = new_handles()
    bodies = [
        {"username": username, "phone": new_handles()[1], "password": PASSWORD} for _ in range(12)
    ]
    answers = await asyncio.gather(*(client.post("/v1/auth/register", json=b) for b in bodies))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * 11, [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {
        "username_taken"
    }


async def test_logout_ends_the_session_and_tells_the_gateways(
    client: httpx.AsyncClient, settings: Settings, commands: Running
) -> None:
    username, phone = new_handles()
    registered = await client.post(
        "/v1/auth/register", json={"username": username, "phone": phone, "password": PASSWORD}
    )
    user_id = registered.json()["user_id"]
    login = await client.post(
        "/v1/auth/login",
        json={"phone": phone, "password": PASSWORD, "device_id": "phone-1", "device_name": "P"},
    )
    tokens = login.json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    privacy = await client.post("/v1/me/privacy", json={"last_seen": "NOBODY"}, headers=auth)
    assert privacy.json() == {"changed": True}

    redis = Redis.from_url(settings.redis_url)
    try:
        async with subscribed(redis, logout_channel(user_id)) as messages:
            logout = await client.post(
                "/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}
            )
            assert (logout.status_code, logout.json()) == (200, {"ended_sessions": 1})
            announced = await messages()
    finally:
        await redis.aclose()
    assert announced["user_id"] == user_id and announced["device_id"] == "phone-1"
    assert announced["reason"] == "logout" and len(announced["session_ids"]) == 1

    after = await client.post("/v1/me/profile", json={"about": "x"}, headers=auth)
    assert (after.status_code, after.json()["error"]["code"]) == (401, "invalid_token")
    refreshed = await client.post(
        "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert (refreshed.status_code, refreshed.json()["error"]["code"]) == (401, "invalid_token")

    # One structured line per request, with ids; never a password or a token.
    commands.service.wait_for_log(
        r"event=http_request method=POST path=/v1/auth/refresh status=401"
    )
    log = commands.service.text()
    assert re.search(
        rf"event=http_request method=POST path=/v1/me/privacy status=200 ms=\S+ user_id={user_id}",
        log,
    )
    assert PASSWORD not in log and tokens["refresh_token"] not in log
    assert tokens["access_token"].split(".")[2] not in log


def test_sigterm_stops_the_service_cleanly(settings: Settings, tmp_path: Path) -> None:
    service, base = start(settings, tmp_path / "commands.log")
    try:
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        service.stop()
    assert service.proc is not None and service.proc.returncode == 0, service.text()[-2000:]
    assert "event=commands_stopped" in service.text()
