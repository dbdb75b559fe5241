"""Servers a scenario starts for itself: the WebSocket baseline, and the helpers for it.

Processes started here (and Parley's private services, `bench.stack`) get their
open-file soft limit raised to the hard one, as a deployment would (systemd's
`LimitNOFILE`).
"""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.settings import ROOT, Settings


@dataclass(frozen=True)
class Server:
    base: str  # http://host:port
    pid: int
    log: Path


_LOWEST_PORT = 20_000
_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the kernel picks for an outgoing connection (Linux's default
    when the setting cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to on `host`, for a server about to be started on it.

    Drawn below the kernel's ephemeral range, never the same twice in one process. A port
    the kernel hands out for a bind to 0 is in that range, so between the check and the
    server's own bind an outgoing connection (a Kafka or Redis client's) could take it
    as its local port, and the server would fail with "Address already in use"."""
    ceiling = max(_ephemeral_floor(), _LOWEST_PORT + 1_000)
    draw = random.SystemRandom()
    for _ in range(500):
        port = draw.randrange(_LOWEST_PORT, ceiling)
        if port in _handed_out:
            continue
        try:
            with socket.socket() as sock:
                sock.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {_LOWEST_PORT}-{ceiling - 1}")


def raise_open_files() -> None:
    """In a child before exec: its open-file soft limit up to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextmanager
def spawned(
    argv: list[str], log: Path, ready: str, env: dict[str, str], base: str, start_s: float = 60
) -> Iterator[Server]:
    """Run `argv` (output to `log`) until the block ends; ready when `ready` is logged."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_open_files,
        )
    try:
        deadline = time.monotonic() + start_s
        while not re.search(ready, log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(argv[2:4])} did not start; see {log}")
            time.sleep(0.05)
        yield Server(base, proc.pid, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def echo_server(settings: Settings, workdir: Path, ws: str = "picows") -> Iterator[Server]:
    """The WebSocket baseline (`bench.echo`) on a free port: picows as the gateway, or
    one of uvicorn's own WebSocket protocols (`ws`)."""
    host = settings.commands_host
    port = free_port(host)
    argv = [
        sys.executable,
        "-m",
        "bench.echo",
        "--host",
        host,
        "--port",
        str(port),
        "--max-frame-bytes",
        str(settings.ws_max_frame_bytes),
        "--heartbeat-s",
        str(settings.ws_heartbeat_s),
        "--ws",
        ws,
    ]
    with spawned(
        argv, workdir / "echo.log", r"Uvicorn running|listening", {}, f"http://{host}:{port}"
    ) as server:
        yield server
