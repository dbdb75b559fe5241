"""PostgreSQL from Debian's packages, run as its own instance in the state folder."""

from __future__ import annotations

import glob
import os
import pwd
import subprocess
from pathlib import Path

from infra.stack.process import StackError, apt_install, as_user, say
from infra.stack.service import LocalService, chown_tree

# Durability stays on (fsync, synchronous commit): a client told "stored" must be right.
CONF = """\
# Written by `parley stack up`; edits are overwritten.
listen_addresses = '{host}'
port = {port}
unix_socket_directories = '{sockets}'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
wal_level = replica
max_wal_size = 2GB
logging_collector = off
log_min_messages = warning
"""


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


class Postgres(LocalService):
    name = "postgres"
    port_variable = "PARLEY_PG_PORT"

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.pg_host, self.settings.pg_port

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def sockets(self) -> Path:
        return self.home / "run"

    def run_as(self) -> str | None:
        # PostgreSQL refuses to run as root; Debian's package creates the `postgres` user.
        return "postgres" if os.geteuid() == 0 else None

    def _bin(self, tool: str) -> str:
        bindir = _bindir()
        if bindir is None:
            raise StackError("postgres: no PostgreSQL server binaries in /usr/lib/postgresql")
        return str(bindir / tool)

    def _run(self, argv: list[str], what: str) -> None:
        done = subprocess.run(
            argv, capture_output=True, text=True, cwd="/", **as_user(self.run_as())
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-400:]
            raise StackError(f"postgres: {what} failed: {tail}; see {self.log}")

    def install(self) -> None:
        if _bindir() is None:
            apt_install("postgresql")
        if _bindir() is None:
            raise StackError("postgres: installed, but no server binaries in /usr/lib/postgresql")

    def prepare(self) -> None:
        user = self.run_as()
        if user is not None:
            _check_reachable(self.home, user)
        self.sockets.mkdir(parents=True, exist_ok=True)
        if not (self.data / "PG_VERSION").exists():
            if self.data.exists() and any(self.data.iterdir()):
                raise StackError(
                    f"postgres: {self.data} is not empty but holds no cluster (corrupt state?); "
                    f"move it away and run again"
                )
            say("postgres: creating the database cluster (first start)")
            self.data.mkdir(parents=True, exist_ok=True)
            pwfile = self.home / ".pw"
            pwfile.write_text(self.settings.pg_password + "\n")
            if user:
                chown_tree(self.home, user)
            try:
                self._run(
                    [
                        self._bin("initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        self.settings.pg_user,
                        f"--pwfile={pwfile}",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ],
                    "initdb",
                )
            finally:
                pwfile.unlink(missing_ok=True)
        host, port = self.host_port
        (self.data / "postgresql.auto.conf").write_text(
            CONF.format(host=host, port=port, sockets=self.sockets)
        )
        if user:
            chown_tree(self.home, user)
        self.data.chmod(0o700)

    def command(self) -> list[str]:
        return [self._bin("postgres"), "-D", str(self.data)]

    def up(self) -> bool:
        started = super().up()
        self._ensure_database()
        return started

    def _ensure_database(self) -> None:
        if not self.managed:
            return
        import psycopg

        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.pg_db,)
            ).fetchone()
            if row is None:
                say(f"postgres: creating database {self.settings.pg_db}")
                conn.execute(f'CREATE DATABASE "{self.settings.pg_db}"')

    def _conninfo(self, dbname: str) -> str:
        s = self.settings
        return (
            f"host={s.pg_host} port={s.pg_port} user={s.pg_user} password={s.pg_password} "
            f"dbname={dbname} connect_timeout=2"
        )

    def healthy(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self._conninfo("postgres")) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def stop(self, pid: int) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back sessions, checkpoint, exit.
        import signal
        import time

        from infra.stack.process import pid_alive, terminate

        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            terminate(pid)


def _check_reachable(path: Path, user: str) -> None:
    """The `postgres` user must be able to walk down to the state folder."""
    entry = pwd.getpwnam(user)
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if parent.stat().st_uid != entry.pw_uid and not mode & 0o001:
            raise StackError(
                f"postgres: the user {user} cannot enter {parent}; "
                f"run `chmod o+x {parent}` or set PARLEY_STATE_DIR to a reachable folder"
            )
