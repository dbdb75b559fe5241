"""JSON answers of the queries service (orjson), tagged with where they were read from."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

SOURCE_HEADER = "X-Parley-Read-Source"
"""`cache` (Redis answered the hot part) or `database` (PostgreSQL did); for tests and logs."""


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def answer(body: Any, source: str | None = None, status: int = 200) -> Response:
    """A 200 JSON answer; `source` says whether the cache or the database answered."""
    headers = {SOURCE_HEADER: source} if source is not None else None
    return JSON(body, status, headers=headers)
