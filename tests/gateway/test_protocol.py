"""The client frame parser: any input is a frame or a typed `ProtocolError`, never a crash.

Pure (`make test-unit`): no server, no socket; what the gateway does with each error is
tested over real WebSockets in test_fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.gateway.protocol import (
    COMMAND_FRAMES,
    MAX_ID_CHARS,
    OTHER_FRAMES,
    ClientFrame,
    ProtocolError,
    command_args,
    parse_frame,
)

pytestmark = pytest.mark.unit

CODES = {"bad_json", "bad_frame", "unknown_type"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_input_is_a_frame_or_a_typed_error(raw: bytes | str) -> None:
    try:
        frame = parse_frame(raw)
    except ProtocolError as exc:
        assert exc.code in CODES
    else:
        assert frame.type in COMMAND_FRAMES or frame.type in OTHER_FRAMES


@given(
    st.sampled_from(sorted(COMMAND_FRAMES)),
    st.dictionaries(st.sampled_from(["chat_id", "to", "up_to", "text", "name"]), json_values),
)
def test_a_command_frame_with_any_fields_gives_its_args_or_a_typed_error(
    kind: str, fields: dict[str, Any]
) -> None:
    frame = parse_frame(json.dumps({"type": kind, "id": "r1", **fields}))
    try:
        command_args(frame)
    except ProtocolError as exc:
        assert exc.code in CODES | {"too_large"}
        assert exc.request_id == "r1"  # the error names the frame it answers


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff", "bad_json"),
        ("[1]", "bad_frame"),
        ('{"type": "send", "id": 5}', "bad_frame"),
        (json.dumps({"type": "send", "id": "x" * (MAX_ID_CHARS + 1)}), "bad_frame"),
        ('{"id": "r"}', "bad_frame"),
        ('{"type": "launch", "id": "r"}', "unknown_type"),
    ],
)
def test_each_malformed_frame_has_its_code(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(raw)
    assert caught.value.code == code


def test_a_well_formed_frame_keeps_its_id_and_fields() -> None:
    frame = parse_frame('{"type": "ping", "id": "p1", "extra": 1}')
    assert frame == ClientFrame("ping", "p1", {"type": "ping", "id": "p1", "extra": 1})
