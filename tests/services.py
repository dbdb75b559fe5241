"""Run Parley's services as real subprocesses in tests, and wait on their logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Service:
    """One `parley serve NAME` process with its log file."""

    def __init__(self, name: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.terminated = False

    def start(self) -> Service:
        self.terminated = False
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parley.cli", "serve", self.name],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, pattern: str, deadline_s: float = 60.0, after: int = 0) -> str:
        """Wait until the log (from byte `after`) matches; fail with the log's tail."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            text = self.text()[after:]
            found = regex.search(text)
            if found:
                return found.group(0)
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no /{pattern}/ in log; tail:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, once: a second one makes uvicorn skip its clean shutdown."""
        if self.proc is not None and self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def stop_together(services: Iterable[Service]) -> None:
    """SIGTERM every one, then wait for each: their shutdowns (a Faust worker's takes
    about a second) overlap instead of adding up."""
    services = list(services)
    for service in services:
        service.terminate()
    for service in services:
        service.stop()


@contextmanager
def running(name: str, log: Path, env: dict[str, str] | None = None) -> Iterator[Service]:
    service = Service(name, log, env).start()
    try:
        yield service
    finally:
        service.stop()
