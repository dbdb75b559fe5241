"""One structured log line per HTTP request of the queries service.

`event=http_request method=GET route=/v1/chats/{chat_id}/messages status=200 ms=1.4
user_id=<uuid> source=cache waited_ms=-`: the route template (ids stay out of the path
field; the user id is logged on its own), never a body or a query string.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("parley.queries.http")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        source = "-"

        async def send_status(message: Message) -> None:
            nonlocal status, source
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name == b"x-parley-read-source":
                        source = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            state = scope.get("state", {})
            log.info(
                "event=http_request method=%s route=%s status=%d ms=%.1f user_id=%s "
                "source=%s waited_ms=%s",
                scope["method"],
                getattr(route, "path", "-"),
                status,
                (time.perf_counter() - started) * 1000,
                state.get("user_id", "-"),
                source,
                state.get("waited_ms", "-"),
            )
