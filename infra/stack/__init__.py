"""The local stack: Kafka, PostgreSQL, Redis, the object store and, when it is the gateways'
registry, ZooKeeper, from the state folder.

Imported by the CLI and the test fixtures only; services never import it.
"""

from __future__ import annotations

from infra.settings import Settings
from infra.stack.kafka import Kafka
from infra.stack.objectstore import ObjectStoreService
from infra.stack.postgres import Postgres
from infra.stack.process import StackError, say
from infra.stack.redis import Redis
from infra.stack.service import LocalService, State, Status
from infra.stack.zookeeper import ZooKeeper

__all__ = ["LocalService", "StackError", "State", "Status", "services", "stack_down", "stack_up"]


def services(settings: Settings) -> list[LocalService]:
    """The servers, in start order: ZooKeeper only when it is the registry."""
    servers = [Postgres(settings), Redis(settings), Kafka(settings), ObjectStoreService(settings)]
    if settings.registry == "zookeeper":
        servers.append(ZooKeeper(settings))
    return servers


def stack_up(settings: Settings) -> None:
    """Start whatever is not running; on failure stop what this call started, then raise."""
    started: list[LocalService] = []
    try:
        for service in services(settings):
            if service.up():
                started.append(service)
    except BaseException:
        for service in reversed(started):
            say(f"{service.name}: stopping it again, since the stack did not come up whole")
            service.down()
        raise


def stack_down(settings: Settings) -> None:
    for service in reversed(services(settings)):
        service.down()


def stack_status(settings: Settings) -> list[Status]:
    return [service.status() for service in services(settings)]
