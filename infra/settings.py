"""One settings object, read from the environment, with defaults for a developer machine.

Every component takes its hosts, ports, names and limits from here; no other module
holds a literal host or port. Variables are named ``PARLEY_<FIELD>`` in upper case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def _default_state_dir() -> str:
    return str(ROOT / ".state")


@dataclass(frozen=True)
class Settings:
    """Everything a Parley process needs to know about where things are and how big."""

    # Where the local stack keeps its data and logs (git-ignored).
    state_dir: str = field(default_factory=_default_state_dir)
    # Which services `parley stack` installs and runs here; the rest are external.
    managed_services: str = "kafka,postgres,redis"

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_version: str = "4.4.0"
    kafka_heap: str = "768m"
    topic_prefix: str = ""
    events_partitions: int = 12
    commands_partitions: int = 12
    replication_factor: int = 1
    min_insync_replicas: int = 1

    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_user: str = "parley"
    pg_password: str = "parley"
    pg_db: str = "parley"

    redis_url: str = "redis://127.0.0.1:16379/0"

    health_deadline_s: float = 60.0

    # The write side.
    aggregate_cache_size: int = 10_000
    max_body_bytes: int = 64 * 1024
    max_group_members: int = 256
    processor_group: str = "parley-processor"
    processor_batch_max: int = 500
    processor_linger_ms: int = 2
    snowflake_lease_ttl_ms: int = 15_000
    command_timeout_s: float = 10.0

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        return host, int(port)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    @property
    def pg_conninfo(self) -> str:
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"password={self.pg_password} dbname={self.pg_db}"
        )

    def topic(self, name: str) -> str:
        """The full Kafka topic name for one of Parley's logical topics."""
        return f"{self.topic_prefix}{name}"

    def is_managed(self, service: str) -> bool:
        return service in {s.strip() for s in self.managed_services.split(",") if s.strip()}

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read ``PARLEY_*`` variables over the defaults; a bad value names its variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = f"PARLEY_{f.name.upper()}"
        if key not in env:
            continue
        raw = env[key]
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            if kind == "int":
                values[f.name] = int(raw)
            elif kind == "float":
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ValueError(f"{key}={raw!r} is not a valid {kind}") from exc
    return Settings(**values)
