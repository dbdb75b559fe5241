"""A one-node Kafka of a test's own, for tests that stop or kill the broker.

Its own ports and data folder, the jars of the local stack: stopping the shared broker
breaks whatever else uses the stack at the time, and another session's `stack up`
racing to restart it can leave two brokers fighting over one data folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.servers import free_port
from infra.settings import Settings
from infra.stack.kafka import Kafka


@contextmanager
def private_kafka(base_settings: Settings, folder: Path) -> Iterator[Kafka]:
    """A broker under `folder`, started, and stopped (for good) at the end; its
    `settings.kafka_bootstrap` is where it listens."""
    shared = Kafka(base_settings)
    state = folder / "state"
    (state / "kafka").mkdir(parents=True)
    (state / "kafka" / shared.lib.name).symlink_to(shared.lib)
    kafka = Kafka(
        base_settings.replace(
            state_dir=str(state),
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            kafka_heap="384m",
            managed_services="kafka",
        )
    )
    try:
        kafka.up()
        yield kafka
    finally:
        kafka.down()
