"""The shape every local service shares: install, prepare, start, health, stop, status."""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from infra.settings import Settings
from infra.stack.process import (
    StackError,
    log_tail,
    pid_alive,
    read_pid,
    reap_group,
    require_port,
    say,
    spawn,
    terminate,
    wait_until,
)


class State(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # our process runs but does not answer its health check
    STOPPED = "stopped"
    EXTERNAL = "external"  # not managed here; reachable
    UNREACHABLE = "unreachable"  # not managed here; not answering


@dataclass(frozen=True)
class Status:
    service: str
    state: State
    address: str
    pid: int | None
    log: str


class LocalService(ABC):
    """One service run from the project's state folder, as a detached process."""

    name: str
    port_variable: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = Path(settings.state_dir) / self.name
        self.log = self.home / f"{self.name}.log"
        self.pidfile = self.home / f"{self.name}.pid"

    # What each service says about itself.
    @property
    @abstractmethod
    def host_port(self) -> tuple[str, int]: ...

    @abstractmethod
    def install(self) -> None:
        """Make the binaries available (apt, Maven); idempotent."""

    @abstractmethod
    def prepare(self) -> None:
        """Create the data folder and configuration once; idempotent."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the service in the foreground."""

    @abstractmethod
    def healthy(self) -> bool:
        """A real request answered: Kafka metadata, a PostgreSQL query, a Redis PING."""

    def run_as(self) -> str | None:
        return None

    def environment(self) -> dict[str, str] | None:
        return None

    # Shared behaviour.
    @property
    def address(self) -> str:
        host, port = self.host_port
        return f"{host}:{port}"

    @property
    def managed(self) -> bool:
        return self.settings.is_managed(self.name)

    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    def status(self) -> Status:
        if not self.managed:
            state = State.EXTERNAL if self.healthy() else State.UNREACHABLE
            return Status(self.name, state, self.address, None, "")
        pid = self.pid()
        if pid is None:
            state = State.STOPPED
        else:
            state = State.HEALTHY if self.healthy() else State.UNHEALTHY
        return Status(self.name, state, self.address, pid, str(self.log))

    def up(self) -> bool:
        """Start the service unless it already runs healthy; True if this call started it."""
        if not self.managed:
            if not self.healthy():
                raise StackError(
                    f"{self.name}: external server at {self.address} does not answer "
                    "(it is not in PARLEY_MANAGED_SERVICES, so it is not started here)"
                )
            say(f"{self.name}: using external server at {self.address}")
            return False
        pid = self.pid()
        if pid is not None:
            if self._wait_healthy(pid):
                say(f"{self.name}: already running at {self.address} (pid {pid})")
                return False
            say(f"{self.name}: pid {pid} does not answer; restarting it")
            terminate(pid)
        stale = read_pid(self.pidfile)
        if stale is not None:
            reap_group(stale)
        self.home.mkdir(parents=True, exist_ok=True)
        self.install()
        self.prepare()
        host, port = self.host_port
        if port:
            require_port(self.name, host, port, self.port_variable)
        say(f"{self.name}: starting on {self.address} (log {self.log})")
        pid = spawn(self.command(), self.log, self.pidfile, self.environment(), self.run_as())
        if not self._wait_healthy(pid):
            reason = log_tail(self.log)
            terminate(pid)
            self.pidfile.unlink(missing_ok=True)
            raise StackError(
                f"{self.name}: not healthy within {self.settings.health_deadline_s:.0f}s; "
                f"see {self.log}" + (f" (last lines: {reason})" if reason else "")
            )
        say(f"{self.name}: healthy at {self.address} (pid {pid})")
        return True

    def down(self) -> None:
        if not self.managed:
            return
        pid = self.pid()
        if pid is None:
            say(f"{self.name}: not running")
        else:
            say(f"{self.name}: stopping pid {pid}")
            self.stop(pid)
        self.pidfile.unlink(missing_ok=True)

    def stop(self, pid: int) -> None:
        terminate(pid)

    def _wait_healthy(self, pid: int) -> bool:
        return wait_until(self.healthy, self.settings.health_deadline_s, lambda: pid_alive(pid))


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` and everything below it to ``user`` (used when root runs PostgreSQL)."""
    import pwd

    entry = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
