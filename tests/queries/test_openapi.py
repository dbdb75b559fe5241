"""The OpenAPI document cannot drift from the app: every route and its path parameters are
in it, nothing else is, and every reference in it resolves."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from queries.openapi import DOCUMENT, ERROR_CODES
from queries.routes import QUERY_PARAMETERS, routes


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve(ref: str) -> Any:
    node: Any = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _params(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return [_resolve(p["$ref"]) if "$ref" in p else p for p in operation.get("parameters", [])]


@pytest.mark.unit
def test_every_route_is_documented_and_nothing_else() -> None:
    app_routes = {
        route.path: sorted((route.methods or set()) - {"HEAD"})
        for route in routes()
        if isinstance(route, Route)
    }
    documented = {path: sorted(m.upper() for m in ops) for path, ops in DOCUMENT["paths"].items()}
    assert app_routes == documented


@pytest.mark.unit
def test_path_parameters_match_the_routes() -> None:
    for path, operations in DOCUMENT["paths"].items():
        in_path = set(re.findall(r"{(\w+)}", path))
        for operation in operations.values():
            path_params = {p["name"] for p in _params(operation) if p["in"] == "path"}
            assert path_params == in_path, path
            assert "200" in operation["responses"], path
            if operation.get("security") != []:
                assert {"400", "401", "404", "425", "500"} <= set(operation["responses"]), path


@pytest.mark.unit
def test_query_parameters_match_what_the_routes_accept() -> None:
    for path, known in QUERY_PARAMETERS.items():
        operation = DOCUMENT["paths"][path]["get"]
        assert {p["name"] for p in _params(operation) if p["in"] == "query"} == set(known), path


@pytest.mark.unit
def test_every_reference_resolves_and_every_component_is_used() -> None:
    refs = set(_refs(DOCUMENT))
    for ref in refs:
        assert _resolve(ref) is not None, ref
    for kind in ("schemas", "parameters", "responses"):
        for name in DOCUMENT["components"][kind]:
            assert f"#/components/{kind}/{name}" in refs, (kind, name)


@pytest.mark.unit
def test_error_codes_in_the_code_are_in_the_document() -> None:
    import queries.errors as errors

    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and hasattr(cls, "code") and cls.__module__ == errors.__name__
    }
    assert codes | set(errors.STATUS_BY_CODE) <= set(ERROR_CODES)


async def test_the_document_is_served(client: httpx.AsyncClient) -> None:
    answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.json() == DOCUMENT
    assert answer.json()["openapi"].startswith("3.1")
