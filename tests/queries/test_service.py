"""The service around the routes: health, readiness, errors, logout, logs, the CLI."""

from __future__ import annotations

import logging
import urllib.request

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis

from infra.auth import SESSION_KEY, Tokens
from infra.settings import Settings
from parley.wiring import open_read_side
from queries.resources import APPLICATION_NAME
from queries.service import create_app
from tests.queries.conftest import World
from tests.services import Service


async def test_health_and_readiness(client: httpx.AsyncClient, world: World) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    body = ready.json()
    assert ready.status_code == 200, body
    assert body["ready"] is True and body["postgres"] == "ok" and body["redis"] == "ok"
    assert isinstance(body["projection_lag"], int) and body["projection_lag"] <= body["max_lag"]


async def test_readiness_fails_when_the_projections_lag_too_far(
    query_settings: Settings, world: World
) -> None:
    app = create_app(query_settings.replace(queries_ready_max_lag=-1), open_read_side)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://q") as client,
    ):
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["ready"] is False


async def test_unknown_routes_and_methods_answer_in_the_error_shape(
    client: httpx.AsyncClient, world: World
) -> None:
    missing = await client.get("/v1/nothing", headers=world.alice.auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    post = await client.post("/v1/chats", headers=world.alice.auth)
    assert post.status_code == 405 and post.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in post.headers["allow"]
    extra = await client.get("/v1/inbox", params={"limt": 5}, headers=world.alice.auth)
    assert extra.status_code == 400 and extra.json()["error"]["code"] == "bad_parameter"


async def test_a_logged_out_session_is_refused_at_once(
    client: httpx.AsyncClient, world: World, topics: Settings
) -> None:
    redis = aioredis.Redis.from_url(topics.redis_url)
    try:
        pair = await Tokens(topics, redis).issue(world.erin.user_id, "laptop")
        auth = {"Authorization": f"Bearer {pair.access_token}"}
        assert (await client.get("/v1/chats", headers=auth)).status_code == 200
        session = Tokens(topics, redis).decode(pair.access_token).session_id
        await redis.delete(SESSION_KEY.format(session_id=session))
        refused = await client.get("/v1/chats", headers=auth)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"
    finally:
        await redis.aclose()


async def test_access_logs_have_ids_and_no_bodies(
    client: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="parley.queries.http"):
        await client.get(f"/v1/chats/{world.ab}/messages", headers=world.bob.auth)
    lines = [r.getMessage() for r in caplog.records if r.name == "parley.queries.http"]
    assert len(lines) == 1
    line = lines[0]
    assert "event=http_request method=GET route=/v1/chats/{chat_id}/messages status=200" in line
    assert f"user_id={world.bob.user_id}" in line and "source=" in line
    assert "hello" not in line and "aGVsbG8" not in line


def test_parley_serve_queries_answers(queries_service: tuple[Service, str]) -> None:
    _, base_url = queries_service
    with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as answer:
        assert answer.status == 200


async def test_a_restarted_database_costs_no_failed_request(
    client: httpx.AsyncClient, world: World, topics: Settings
) -> None:
    assert (await client.get("/v1/chats", headers=world.alice.auth)).status_code == 200
    with psycopg.connect(topics.pg_conninfo, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = %s",
            (APPLICATION_NAME, topics.pg_db),
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    for _ in range(3):
        answer = await client.get(f"/v1/chats/{world.ab}/messages", headers=world.alice.auth)
        assert answer.status_code == 200, answer.text


async def test_an_unreachable_database_answers_503(query_settings: Settings, world: World) -> None:
    app = create_app(query_settings, open_read_side)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://q") as client,
    ):
        await app.state.read_side.pool.close()  # as if PostgreSQL were gone for good
        answer = await client.get(f"/v1/chats/{world.ab}", headers=world.alice.auth)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"
    assert answer.headers["retry-after"] == "1"


async def test_metrics_count_requests_by_status_and_errors_by_code(
    client: httpx.AsyncClient, world: World
) -> None:
    from tests.metrics_text import parse

    before = parse((await client.get("/metrics")).text)
    refused = await client.get("/v1/inbox")  # no token
    assert refused.status_code == 401
    answer = await client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = parse(answer.text)
    key = 'parley_http_requests_total{status="401"}'
    assert after[key] - before.get(key, 0) >= 1
    code = refused.json()["error"]["code"]
    errors = f'parley_http_errors_total{{code="{code}"}}'
    assert after[errors] - before.get(errors, 0) >= 1
    seconds = "parley_http_request_seconds_count"
    assert after[seconds] > before.get(seconds, 0)
