"""schemathesis against `/openapi.json` of a real `parley serve queries` process: requests
generated from the document (valid and invalid), no 5xx, every answer as documented.

Two thirds of the generated chat ids are swapped for chats of the world, so the routes
answer with real pages and receipts, not only 404s. The one check left out is
`positive_data_acceptance`: a well-formed but unknown cursor is rightly a 400, and a
well-formed position header for a chat that never reaches it is rightly a 425.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from queries.openapi import DOCUMENT
from tests.queries.conftest import World
from tests.services import Service


@pytest.fixture(scope="package")
def api_schema(queries_service: tuple[Service, str]) -> Any:
    _, base_url = queries_service
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


def _pick(value: object, choices: list[Any]) -> Any:
    """A stable choice among `choices` for a generated value, or None for a third of them."""
    digest = hashlib.sha256(str(value).encode()).digest()[0]
    return None if digest % 3 == 0 else choices[digest % len(choices)]


def _with_world(case: Any, world: World) -> Any:
    """The case with some of its ids swapped for the world's (unless the path is the
    part a negative case made invalid)."""
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH):
        return case
    params = case.path_parameters or {}
    if "chat_id" in params:
        chat = _pick(params["chat_id"], [world.ab, world.trip, world.long])
        if chat is not None:
            params["chat_id"] = str(chat)
    if "user_id" in params:
        user = _pick(params["user_id"], [world.alice, world.bob, world.dave])
        if user is not None:
            params["user_id"] = str(user.user_id)
    return case


@pytest.mark.parametrize("path", sorted(DOCUMENT["paths"]))
def test_the_api_matches_its_document(
    path: str, api_schema: Any, world: World, queries_service: tuple[Service, str]
) -> None:
    _, base_url = queries_service
    operation = api_schema[path]["GET"]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: Any) -> None:
        # A negative case may have left the token out on purpose: then it stays out.
        negative_headers = case.meta is not None and case.meta.is_negative_at(
            ParameterLocation.HEADER
        )
        _with_world(case, world).call_and_validate(
            base_url=base_url,
            headers={} if negative_headers else world.alice.auth,
            excluded_checks=[positive_data_acceptance],
            timeout=10,
        )

    check()


def test_no_request_left_a_trace_of_a_server_error(queries_service: tuple[Service, str]) -> None:
    service, _ = queries_service
    assert "event=internal_error" not in service.text()
