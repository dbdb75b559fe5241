"""Apache Kafka in KRaft mode, one node, from Maven Central jars run with the JVM."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import uuid
from pathlib import Path

from infra.stack.maven import resolve_jars
from infra.stack.process import StackError, say
from infra.stack.service import LocalService

POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"

SERVER_PROPERTIES = """\
# Written by `parley stack up`; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
# Topics are created by `parley topics ensure` with explicit settings, never by accident.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumer groups join at once: no waiting for more members on a single node.
group.initial.rebalance.delay.ms=0
"""

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class Kafka(LocalService):
    name = "kafka"
    port_variable = "PARLEY_KAFKA_BOOTSTRAP"

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.kafka_host_port

    @property
    def lib(self) -> Path:
        return self.home / f"lib-{self.settings.kafka_version}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def install(self) -> None:
        resolve_jars("kafka", POM, "KAFKA_VERSION", self.settings.kafka_version, self.lib)

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xms{self.settings.kafka_heap}",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.lib}/*",
            main,
            *args,
        ]

    def prepare(self) -> None:
        host, port = self.host_port
        (self.home / "server.properties").write_text(
            SERVER_PROPERTIES.format(
                host=host,
                port=port,
                controller_port=self.settings.kafka_controller_port,
                data=self.data,
            )
        )
        (self.home / "log4j2.properties").write_text(LOG4J2.format(log=self.log))
        if (self.data / "meta.properties").exists():
            return
        cluster_file = self.home / "cluster.id"
        if not cluster_file.exists() or cluster_file.read_text().startswith("-"):
            # (an id starting with "-", from before, never formatted: make a new one)
            cluster_file.write_text(_kafka_cluster_id() + "\n")
        say("kafka: formatting the KRaft storage (first start)")
        done = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_file.read_text().strip(),
                "-c",
                str(self.home / "server.properties"),
                "--ignore-formatted",
            ),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-300:]
            raise StackError(f"kafka: formatting {self.data} failed: {tail}; see {self.log}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.home / "server.properties"))

    def healthy(self) -> bool:
        return kafka_answers(self.settings.kafka_bootstrap)


def _kafka_cluster_id() -> str:
    """A cluster id in Kafka's format: a UUID as 22 characters of URL-safe base64, never
    starting with "-" (as Kafka's own Uuid.randomUuid: the storage tool would read one
    that does as an option, and refuse to format; one fresh setup in 64 did)."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_answers(bootstrap: str, timeout_ms: int = 2000) -> bool:
    """Whether a broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            client_id="parley-health",
        )
        admin.describe_cluster()
        return True
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
