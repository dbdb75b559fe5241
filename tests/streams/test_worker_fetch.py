"""The workers' Kafka consumer does not let the broker hold a fetch for 1.5 s."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams import workers


async def test_the_worker_consumer_fetch_wait_is_bounded() -> None:
    assert AIOKafkaConsumerThread._create_worker_consumer is workers._create_worker_consumer
    # The attribute the patch sets is the one aiokafka's `start()` hands to its fetcher:
    # if a new aiokafka renames it, this fails instead of the patch silently doing nothing.
    consumer = AIOKafkaConsumer(fetch_max_wait_ms=1500)
    assert consumer._fetch_max_wait_ms == 1500
    assert workers.FETCH_MAX_WAIT_MS <= 50
