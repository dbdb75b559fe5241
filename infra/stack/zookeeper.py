"""Apache ZooKeeper, standalone, from Maven Central jars run with the JVM.

Run only when it is the gateways' registry (`PARLEY_REGISTRY=zookeeper`, docs/scaling.md):
one server on loopback (`zookeeper_hosts`, 127.0.0.1:12181), its data and log under
`.state/zookeeper/`. The tick is `zookeeper_tick_ms`, so sessions may be as short as
two ticks: a gateway that dies leaves the registry within its session timeout.
"""

from __future__ import annotations

import socket
from pathlib import Path

from infra.stack.maven import resolve_jars
from infra.stack.service import LocalService

POM = Path(__file__).resolve().parent.parent / "zookeeper" / "pom.xml"

ZOO_CFG = """\
# Written by `parley stack up`; edits are overwritten.
tickTime={tick}
minSessionTimeout={min_session}
maxSessionTimeout={max_session}
dataDir={data}
clientPortAddress={host}
clientPort={port}
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr,mntr
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
"""

LOGBACK = """\
<configuration>
  <appender name="file" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>[%d] %p %logger{{0}}: %m%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="file"/></root>
</configuration>
"""


class ZooKeeper(LocalService):
    name = "zookeeper"
    port_variable = "PARLEY_ZOOKEEPER_HOSTS"

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.zookeeper_host_port

    @property
    def lib(self) -> Path:
        return self.home / f"lib-{self.settings.zookeeper_version}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def install(self) -> None:
        version = self.settings.zookeeper_version
        resolve_jars("zookeeper", POM, "ZOOKEEPER_VERSION", version, self.lib)

    def prepare(self) -> None:
        host, port = self.host_port
        tick = self.settings.zookeeper_tick_ms
        self.data.mkdir(parents=True, exist_ok=True)
        (self.home / "zoo.cfg").write_text(
            ZOO_CFG.format(
                tick=tick,
                min_session=2 * tick,
                max_session=60_000,
                data=self.data,
                host=host,
                port=port,
            )
        )
        (self.home / "logback.xml").write_text(LOGBACK.format(log=self.log))

    def command(self) -> list[str]:
        heap = self.settings.zookeeper_heap
        return [
            "java",
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlogback.configurationFile={self.home / 'logback.xml'}",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            f"{self.lib}/*",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(self.home / "zoo.cfg"),
        ]

    def healthy(self) -> bool:
        return zookeeper_answers(*self.host_port)


def zookeeper_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether the server serves requests: its `srvr` answer has its version (`ruok` says
    `imok` as soon as the process listens, even when its database failed to load)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"srvr")
            return sock.recv(64).startswith(b"Zookeeper version:")
    except OSError:
        return False
