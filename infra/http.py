"""Serving an ASGI app under uvicorn on a socket we bind, until asked to stop.

Shared by the commands and queries services: binds before uvicorn starts (port 0 picks
a free one), logs `event=<name>_listening` with the real address once serving, and
stops cleanly on SIGTERM/SIGINT (uvicorn's) or when `stop` is set. A service with a
`drain` (the gateway) runs it on the first SIGTERM/SIGINT before uvicorn stops; a
second signal stops at once.
stops cleanly on SIGTERM/SIGINT (uvicorn's) or when `stop` is set.

A client's address is the socket's peer. `X-Forwarded-For` (and `-Proto`) is believed
only from the proxies listed in `trusted_proxies` (`PARLEY_TRUSTED_PROXIES`: addresses
or networks, comma-separated); by default from none, since anyone can send the header
and the per-address rate limits would then be per whatever the client wrote.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("parley.http")

Drain = Callable[[], Awaitable[None]]
"""What a service does between SIGTERM and stopping (bounded by the service itself)."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server, running `drain` on the first exit signal before it stops."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if self._draining or self.should_exit or loop is None:
            super().handle_exit(sig, frame)  # a second signal, or not serving yet
            return
        self._captured_signals.append(sig)
        self._draining = True
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._tasks.append(asyncio.create_task(self._drain_then_exit(), name="drain"))

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        except Exception:  # a failed drain must not keep the process up
            log.exception("event=drain_failed")
        self.should_exit = True


def serve(
    app: Any,
    name: str,
    host: str,
    port: int,
    stop: threading.Event,
    drain: Drain | None = None,
    trusted_proxies: str = "",
    bound: Callable[[str, int], None] | None = None,
    **uvicorn_options: Any,
) -> None:
    """Run `app` on host:port until stopped; `bound` is told the address once the socket
    is bound (before the app starts); `uvicorn_options` go to `uvicorn.Config`."""
    for logger in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound_host, bound_port = sock.getsockname()[:2]
    if bound is not None:
        bound(bound_host, bound_port)
    proxies = [p.strip() for p in trusted_proxies.split(",") if p.strip()]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        **uvicorn_options,
    )
    server = uvicorn.Server(config) if drain is None else DrainingServer(config, drain)

    def watch() -> None:
        while not server.started and not stop.wait(0.05):
            pass
        if server.started:
            log.info("event=%s_listening host=%s port=%d", name, bound_host, bound_port)
        stop.wait()
        server.should_exit = True

    threading.Thread(target=watch, name=f"{name}-watch", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        log.info("event=%s_stopped", name)
