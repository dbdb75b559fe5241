"""Redis from Debian's packages, run as its own instance with append-only persistence."""

from __future__ import annotations

import shutil

from infra.stack.process import StackError, apt_install
from infra.stack.service import LocalService

# Presence and the Redis projections live here: persistence on, fsync every second.
CONF = """\
# Written by `parley stack up`; edits are overwritten.
bind {host}
port {port}
protected-mode yes
daemonize no
dir {home}
logfile ""
appendonly yes
appendfsync everysec
save 900 1
maxclients 10000
"""


class Redis(LocalService):
    name = "redis"
    port_variable = "PARLEY_REDIS_URL"

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.redis_host_port

    def install(self) -> None:
        if shutil.which("redis-server") is None:
            apt_install("redis-server")
        if shutil.which("redis-server") is None:
            raise StackError("redis: installed, but redis-server is not on PATH")

    def prepare(self) -> None:
        host, port = self.host_port
        (self.home / "redis.conf").write_text(CONF.format(host=host, port=port, home=self.home))

    def command(self) -> list[str]:
        return ["redis-server", str(self.home / "redis.conf")]

    def healthy(self) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(
                self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False
