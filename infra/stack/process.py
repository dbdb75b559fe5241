"""Running one local service as a detached process: pid files, ports, logs, deadlines."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class StackError(Exception):
    """A local service could not be installed, started or stopped; the message says why."""


def say(message: str) -> None:
    """Tell the person at the terminal what the stack is doing, one line at a time."""
    print(f"parley stack: {message}", flush=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip().splitlines()[0]
        return int(text)
    except (OSError, ValueError, IndexError):
        return None


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on (host, port) now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def require_port(service: str, host: str, port: int, variable: str, wait_s: float = 5.0) -> None:
    """Fail clearly if the port stays taken (a dying process may hold it a moment)."""
    deadline = time.monotonic() + wait_s
    while not port_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not port_free(host, port):
        raise StackError(
            f"{service}: port {host}:{port} is already taken by another process; "
            f"stop it or choose another port with {variable}"
        )


def spawn(
    argv: Sequence[str],
    log: Path,
    pidfile: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> int:
    """Start a detached process (own session) writing to ``log``; record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            close_fds=True,
            cwd="/",
            **as_user(user),
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop root to ``user`` (nothing when ``user`` is None)."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def reap_group(pid: int) -> None:
    """Kill what is left of a dead service's process group (forked helpers hold ports)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it outlives the grace period."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.1)


def wait_until(check: Callable[[], bool], deadline_s: float, alive: Callable[[], bool]) -> bool:
    """Poll ``check`` until it holds, the deadline passes, or the process dies."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return check()
        time.sleep(0.2)
    return False


def log_tail(log: Path, lines: int = 5) -> str:
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail)


def require_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} not found: {hint}")
    return path


_apt_updated = False


def apt_install(*packages: str) -> None:
    """Install Debian packages (root only); runs `apt-get update` once per process."""
    global _apt_updated
    if os.geteuid() != 0:
        raise StackError(
            f"{' '.join(packages)} missing and not running as root: "
            f"install with `sudo apt-get install {' '.join(packages)}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        say("apt-get update")
        done = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"apt-get update failed: {done.stderr.strip()[-300:]}")
        _apt_updated = True
    say(f"apt-get install {' '.join(packages)}")
    done = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StackError(
            f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-300:]}"
        )
