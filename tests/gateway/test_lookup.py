"""Finding people: `POST /v1/users/lookup` by exact username or phone number, limited
per caller, telling no more than registration does (docs/auth.md)."""

from __future__ import annotations

import uuid

import pytest

from client import CommandFailed, lookup_user, register_and_login
from client.chat import _post
from tests.gateway.conftest import Stack


def test_users_are_found_by_exact_username_or_phone_only(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    phone = f"+4479{uuid.uuid4().int % 10**8:08d}"
    ada = register_and_login(stack.base, f"ada_{tag}", phone=phone)
    finder = register_and_login(stack.base, f"finder_{tag}")
    shown = {"user_id": ada.user_id, "username": f"ada_{tag}", "display_name": f"ada_{tag}"}

    assert lookup_user(stack.base, finder.access_token, username=f"ADA_{tag}") == shown
    spaced = f"{phone[:3]} {phone[3:7]}-{phone[7:]}"  # formatted as people write it
    assert lookup_user(stack.base, finder.access_token, phone=spaced) == shown

    def code(body: dict[str, object], token: str = finder.access_token) -> str:
        with pytest.raises(CommandFailed) as refused:
            _post(stack.base, "/v1/users/lookup", body, token=token)
        return refused.value.code

    # Exact only: no prefix, no listing, no pattern.
    assert code({"username": f"ada_{tag[:-1]}"}) == "unknown_user"
    assert code({"username": "ada_"}) == "unknown_user"
    assert code({"phone": phone[:-1]}) == "unknown_user"
    assert code({"username": "a%"}) == "invalid_username"
    assert code({}) == "bad_request"
    assert code({"username": f"ada_{tag}", "phone": phone}) == "bad_request"
    assert code({"username": f"ada_{tag}"}, token="nope") == "invalid_token"
    # Being blocked by ada changes nothing in the answer: blocked users are not told.
    body = {"action": "block", "user_id": finder.user_id}
    _post(stack.base, "/v1/me/blocks", body, token=ada.access_token)
    assert lookup_user(stack.base, finder.access_token, username=f"ada_{tag}") == shown


def test_lookups_are_limited_per_caller(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    finder = register_and_login(stack.base, f"seeker_{tag}")
    other = register_and_login(stack.base, f"other_{tag}")
    burst = stack.settings.rate_lookup_user_burst
    answers = []
    for i in range(burst + 1):
        try:
            lookup_user(stack.base, finder.access_token, username=f"nobody_{tag}_{i}")
        except CommandFailed as exc:
            answers.append(exc.code)
    assert answers == ["unknown_user"] * burst + ["rate_limited"]
    # Another caller still may.
    found = lookup_user(stack.base, other.access_token, username=f"seeker_{tag}")
    assert found["user_id"] == finder.user_id
