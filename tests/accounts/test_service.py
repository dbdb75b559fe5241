"""The commands service's account routes in process: bodies, answers and error codes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from infra.settings import Settings
from tests.accounts.client import PASSWORD, bearer, http_client, login, new_handles, register


async def test_register_login_and_change_own_settings(fast: Settings) -> None:
    async with http_client(fast) as client:
        user_id, username, phone = await register(client)
        friend_id, friend_name, _ = await register(client)
        tokens = await login(client, username.upper())  # usernames are case-folded
        assert tokens["user_id"] == user_id
        assert tokens["token_type"] == "Bearer"
        assert tokens["expires_in"] == fast.access_token_ttl_s
        auth = bearer(tokens)

        by_phone = await client.post(
            "/v1/auth/login",
            json={"phone": phone, "password": PASSWORD, "device_id": "tablet"},
        )
        assert by_phone.status_code == 200 and by_phone.json()["user_id"] == user_id

        calls = [
            ("/v1/me/profile", {"display_name": "Ada", "about": "hi"}, True),
            ("/v1/me/profile", {"display_name": "Ada"}, False),
            ("/v1/me/privacy", {"last_seen": "CONTACTS"}, True),
            ("/v1/me/contacts", {"action": "add", "username": friend_name}, True),
            ("/v1/me/contacts", {"action": "add", "user_id": friend_id}, False),
            ("/v1/me/blocks", {"action": "block", "user_id": friend_id}, True),
            ("/v1/me/blocks", {"action": "unblock", "user_id": friend_id}, True),
            ("/v1/me/devices", {"action": "register", "device_id": "web", "name": "Web"}, True),
            ("/v1/me/devices", {"action": "remove", "device_id": "web"}, True),
            ("/v1/me/contacts", {"action": "remove", "user_id": friend_id}, True),
        ]
        for path, body, changed in calls:
            answer = await client.post(path, json=body, headers=auth)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json() == {"changed": changed}, (path, body)


async def test_errors_have_a_code_a_message_and_a_status(fast: Settings) -> None:
    async with http_client(fast) as client:
        user_id, username, phone = await register(client)
        tokens = await login(client, username)
        other, _ = new_handles()
        cases = [
            (
                "/v1/auth/register",
                {"username": "x", "phone": phone, "password": PASSWORD},
                400,
                "invalid_username",
            ),
            (
                "/v1/auth/register",
                {"username": other, "phone": "12345", "password": PASSWORD},
                400,
                "invalid_phone",
            ),
            (
                "/v1/auth/register",
                {"username": other, "phone": "+447700900999", "password": "short"},
                400,
                "weak_password",
            ),
            (
                "/v1/auth/register",
                {"username": username, "phone": "+447700900998", "password": PASSWORD},
                409,
                "username_taken",
            ),
            (
                "/v1/auth/register",
                {"username": other, "phone": phone, "password": PASSWORD},
                409,
                "phone_taken",
            ),
            ("/v1/auth/register", {"username": other}, 400, "bad_request"),
            (
                "/v1/auth/login",
                {"username": username, "password": "wrong password", "device_id": "d"},
                401,
                "invalid_credentials",
            ),
            (
                "/v1/auth/login",
                {"username": username, "password": PASSWORD, "device_id": "bad id!"},
                400,
                "invalid_device",
            ),
            ("/v1/auth/refresh", {"refresh_token": "nonsense"}, 401, "invalid_token"),
            ("/v1/me/profile", {"display_name": "A"}, 401, "invalid_token"),
        ]
        for path, body, status, code in cases:
            answer = await client.post(path, json=body)
            assert answer.status_code == status, (path, body, answer.text)
            error = answer.json()["error"]
            assert error["code"] == code, (path, body, error)
            assert error["message"]

        auth = bearer(tokens)
        authed = [
            (
                "/v1/me/contacts",
                {"action": "add", "user_id": str(uuid.uuid4())},
                404,
                "unknown_user",
            ),
            ("/v1/me/contacts", {"action": "add", "user_id": user_id}, 400, "self_target"),
            ("/v1/me/blocks", {"action": "block", "username": "nobody_here"}, 404, "unknown_user"),
            ("/v1/me/privacy", {"last_seen": "FRIENDS"}, 400, "bad_request"),
            ("/v1/me/profile", {"display_name": "x" * 65}, 400, "invalid_profile"),
        ]
        for path, body, status, code in authed:
            answer = await client.post(path, json=body, headers=auth)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body

        not_json = await client.post("/v1/auth/login", content=b"{nope")
        assert not_json.json()["error"]["code"] == "bad_request"
        missing = await client.get("/v1/nothing")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        wrong_method = await client.get("/v1/auth/login")
        assert wrong_method.status_code == 405


async def test_request_bodies_are_size_limited(fast: Settings) -> None:
    async with http_client(fast.replace(max_request_bytes=1024)) as client:
        big = {"username": "a" * 2000, "phone": "+447700900123", "password": PASSWORD}
        answer = await client.post("/v1/auth/register", json=big)
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "too_large"

        async def chunks() -> AsyncIterator[
            bytes
        ]:  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield b" " * 200

        streamed = await client.post("/v1/auth/register", content=chunks())
        assert streamed.status_code == 413


async def test_healthz(fast: Settings) -> None:
    async with http_client(fast) as client:
        answer = await client.get("/healthz")
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
