"""Servers a scenario starts for itself: the WebSocket baseline, and the helpers for it.

Processes started here (and Parley's private services, `bench.stack`) get their
open-file soft limit raised to the hard one, as a deployment would (systemd's
`LimitNOFILE`).
"""

from __future__ import annotations

import os
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


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
def echo_server(settings: Settings, workdir: Path, ws: str = "auto") -> Iterator[Server]:
    """The WebSocket baseline (`bench.echo`) on a free port, with uvicorn's `ws`."""
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
