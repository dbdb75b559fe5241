"""Hostile JSON against the commands service's HTTP routes and both parsers: a typed 400,
never a 500, whatever the body; and the smaller holes a hostile client found."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from commands.gateway.protocol import (
    COMMAND_FRAMES,
    OTHER_FRAMES,
    ProtocolError,
    command_args,
    parse_frame,
)
from infra.json_bounds import MAX_JSON_DEPTH
from infra.settings import Settings
from infra.web import BadRequest, parse_json_object
from tests.accounts.client import PASSWORD, bearer, http_client, login, register

ROUTES = [
    "/v1/auth/register",
    "/v1/auth/login",
    "/v1/auth/refresh",
    "/v1/auth/logout",
    "/v1/me/profile",
    "/v1/me/privacy",
    "/v1/me/contacts",
    "/v1/me/blocks",
    "/v1/me/devices",
]


def nested_body(levels: int) -> bytes:
    """A register body whose `username` nests arrays so that the body is `levels` deep."""
    inner = "[" * (levels - 1) + "]" * (levels - 1)
    return b'{"username": ' + inner.encode() + b', "phone": "+447700900123"}'


async def test_a_deeply_nested_body_is_a_400_on_every_route(fast: Settings) -> None:
    async with http_client(fast) as client:
        _, username, _ = await register(client)
        auth = bearer(await login(client, username))
        for path in ROUTES:
            for levels in (MAX_JSON_DEPTH + 1, 1000, 5000):  # 5000: beyond orjson's own limit
                answer = await client.post(path, content=nested_body(levels), headers=auth)
                assert answer.status_code == 400, (path, levels, answer.text)
                assert answer.json()["error"]["code"] == "bad_request"
        # At the bound, the body is parsed and judged on its fields.
        answer = await client.post("/v1/auth/register", content=nested_body(MAX_JSON_DEPTH))
        assert answer.json()["error"] == {
            "code": "bad_request",
            "message": "'username' must be a string",
        }


async def test_removing_a_device_no_device_could_have_is_invalid_device(fast: Settings) -> None:
    async with http_client(fast) as client:
        _, username, _ = await register(client)
        auth = bearer(await login(client, username))
        for device_id in ["d" * 500, "", "bad id!"]:
            answer = await client.post(
                "/v1/me/devices", json={"action": "remove", "device_id": device_id}, headers=auth
            )
            assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_device")
        unknown = await client.post(
            "/v1/me/devices", json={"action": "remove", "device_id": "d" * 128}, headers=auth
        )
        assert (unknown.status_code, unknown.json()) == (200, {"changed": False})


async def test_wrong_passwords_from_elsewhere_do_not_lock_the_owner_out(fast: Settings) -> None:
    limited = fast.replace(rate_login_account_burst=10, rate_login_account_per_s=0.05)
    async with http_client(limited, address="10.66.0.1") as attacker:
        _, username, _ = await register(attacker)
        wrong = {"username": username, "password": "not the password", "device_id": "d"}
        statuses = [
            (await attacker.post("/v1/auth/login", json=wrong)).status_code for _ in range(12)
        ]
        assert statuses == [401] * 10 + [429] * 2
        right = {**wrong, "password": PASSWORD}
        assert (await attacker.post("/v1/auth/login", json=right)).status_code == 429
    async with http_client(limited, address="10.66.0.2") as owner:
        assert (await owner.post("/v1/auth/login", json=right)).status_code == 200


# Properties: whatever JSON-ish input, the parsers answer only with their typed errors.

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested 1-40 levels, in arrays and objects mixed."""
    value: Any = draw(json_scalars)
    for _ in range(draw(st.integers(1, 40))):
        value = [value] if draw(st.booleans()) else {draw(st.text(max_size=3)): value}
    return value


hostile_text = (
    st.text(max_size=20)
    | st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=8)  # never ASCII
    | st.sampled_from(["\u202e\u0000\ud7ff", "héllo==", "YWJj=", "YWJj"])
)
sends = st.fixed_dictionaries(
    {"type": st.just("send"), "local_id": st.text(min_size=1, max_size=8)},
    optional={
        "to": st.uuids().map(str),
        "kind": st.sampled_from(["text", "media", "ciphertext"]) | json_values,
        "body": hostile_text | json_values,
        "text": hostile_text | json_values,
        "media": json_values | deep(),
    },
)
frames = sends | st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(COMMAND_FRAMES) + sorted(OTHER_FRAMES))},
    optional={
        "id": st.text(max_size=8),
        "local_id": st.text(min_size=1, max_size=8),
        "to": st.uuids().map(str),
        "chat_id": st.uuids().map(str) | json_values,
        "kind": st.sampled_from(["text", "media", "ciphertext"]) | json_values,
        "body": hostile_text | json_values,
        "text": hostile_text | json_values,
        "media": json_values | deep(),
        "up_to": json_values,
        "members": json_values | deep(),
        "cursors": json_values | deep(),
        "name": hostile_text,
        "user_id": st.uuids().map(str) | json_values,
        "state": json_values,
    },
)


def raw_documents() -> st.SearchStrategy[bytes]:
    return (
        st.binary(max_size=200)
        | json_values.map(lambda v: json.dumps(v).encode())
        | deep().map(lambda v: json.dumps(v).encode())
        | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
        | st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
    )


@hypothesis_settings(max_examples=1500, deadline=None)
@given(raw=raw_documents() | frames.map(lambda f: json.dumps(f).encode()))
def test_the_frame_parser_only_ever_answers_with_protocol_errors(raw: bytes) -> None:
    try:
        frame = parse_frame(raw)
        if frame.type in COMMAND_FRAMES:
            command_args(frame)
    except ProtocolError as exc:
        assert exc.code in {"bad_json", "bad_frame", "unknown_type", "invalid_body"}


@hypothesis_settings(max_examples=1500, deadline=None)
@given(raw=raw_documents())
def test_the_body_parser_only_ever_answers_bad_request(raw: bytes) -> None:
    with contextlib.suppress(BadRequest):
        assert isinstance(parse_json_object(raw), dict)


def test_no_hostile_body_gets_a_500(fast: Settings) -> None:
    examples: list[tuple[str, bytes]] = []

    @hypothesis_settings(max_examples=400, deadline=None, database=None)
    @given(
        path=st.sampled_from(ROUTES),
        body=raw_documents() | frames.map(lambda f: json.dumps(f).encode()),
    )
    def collect(path: str, body: bytes) -> None:
        examples.append((path, body))

    collect()

    async def post_all() -> list[tuple[str, bytes, int, Any]]:
        answers = []
        async with http_client(fast) as client:
            for path, body in examples:
                answer = await client.post(path, content=body)
                answers.append((path, body, answer.status_code, answer.json()))
        return answers

    for path, body, status, answer in asyncio.run(post_all()):
        assert status < 500, (path, body[:200], answer)
        if status >= 400:
            assert isinstance(answer["error"]["code"], str), answer
