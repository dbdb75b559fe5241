"""Malformed and random frames: the parser only ever says ProtocolError, and a live
gateway answers every frame without dropping the connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.gateway.protocol import (
    COMMAND_FRAMES,
    OTHER_FRAMES,
    ProtocolError,
    command_args,
    parse_frame,
)
from tests.gateway.conftest import Stack

TYPES = sorted(COMMAND_FRAMES) + sorted(OTHER_FRAMES)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = [
    "id",
    "chat_id",
    "to",
    "local_id",
    "kind",
    "text",
    "body",
    "media",
    "up_to",
    "name",
    "members",
    "user_id",
    "state",
    "cursors",
]
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=12)},
    optional={name: json_values | st.uuids().map(str) for name in FIELDS},
)


@settings(max_examples=2000, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | frames.map(lambda f: json.dumps(f).encode())
)
def test_the_parser_only_ever_answers_with_protocol_errors(raw: bytes) -> None:
    try:
        frame = parse_frame(raw)
        if frame.type in COMMAND_FRAMES:
            command_args(frame)
    except ProtocolError as exc:
        assert exc.code in {"bad_json", "bad_frame", "unknown_type", "invalid_body"}


def test_a_live_gateway_answers_every_random_frame(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()
    examples: list[dict[str, Any]] = []

    @settings(max_examples=400, deadline=None, database=None)
    @given(frame=frames)
    def collect(frame: dict[str, Any]) -> None:
        examples.append(frame)

    collect()

    async def scenario() -> None:
        a = await stack.client(alice)
        chat = (await a.send_text("seed", to=bob.user_id)).chat_id
        assert a._ws is not None
        expected: set[str] = set()
        sent_frames: dict[str, str] = {}
        unreadable = 0
        for n, frame in enumerate(examples):
            frame = dict(frame)
            if n % 3 == 0 and "chat_id" in frame:
                frame["chat_id"] = chat  # some reach a real chat
            frame["id"] = f"f{n}"
            text = json.dumps(frame)
            sent_frames[frame["id"]] = text[:500]
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError:
                unreadable += 1  # e.g. Infinity, integers over 64 bits: an error with no id
                await a._ws.send(text)
                continue
            state = frame.get("state", "start")  # a typing frame without a state is a start
            silent = frame.get("type") == "typing" and state in ("start", "stop")
            if not silent:  # a well-formed typing frame is volatile: no answer
                expected.add(frame["id"])
            await a._ws.send(json.dumps(frame))
        answered: set[str] = set()

        def all_answered() -> bool:
            answered.update(f.get("id", "") for f in a.frames)
            anonymous = sum(1 for f in a.frames if f.get("type") == "error" and not f["id"])
            return expected <= answered and anonymous >= unreadable

        try:
            await a.wait_until(all_answered, timeout_s=120)
        except TimeoutError:
            missing = sorted(expected - answered)
            shown = [sent_frames[m] for m in missing[:3]]
            raise AssertionError(f"unanswered of {len(expected)}: {shown}") from None
        assert (await a.request({"type": "ping"}))["type"] == "pong"
        await a.close()

    asyncio.run(scenario())
    assert examples  # the strategy produced frames
