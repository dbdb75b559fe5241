"""Every service's `/metrics` after real traffic: gateways, processors, relay, workers.

Users on the three gateways chat through the balancer; afterwards each live service is
scraped (each page checked line by line as the text format) and the counters and
histograms of every stage have moved by what the clients did: the sends acknowledged,
the commands decided, committed and published, the events relayed and projected, the
lag of each partition the processors own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from client.chat import ChatClient
from tests.metrics_text import scrape
from tests.scale.conftest import Balanced

PAIRS = 3
MESSAGES = 10
Samples = dict[str, float]


def _live(balanced: Balanced) -> dict[str, str]:
    """The services of the fixture still running (another test may have stopped one)."""
    return {
        name: url
        for name, url in balanced.metrics.items()
        if (service := balanced.services.get(name)) is not None
        and service.proc is not None
        and service.proc.poll() is None
    }


def _sum(scrapes: dict[str, Samples], kind: str, sample: str) -> float:
    """A sample added up over every instance of a kind and, unlabelled, its labels."""
    total = 0.0
    for name, samples in scrapes.items():
        if name.split("-")[0] != kind:
            continue
        for key, value in samples.items():
            if key == sample or key.startswith(sample + "{"):
                total += value
    return total


def test_every_service_counts_the_traffic_it_carried(balanced: Balanced) -> None:
    urls = _live(balanced)
    assert {n.split("-")[0] for n in urls} == {"commands", "processor", "relay", "workers"}
    before = {name: scrape(url) for name, url in urls.items()}
    users = [balanced.account(f"metrics-{i}") for i in range(2 * PAIRS)]
    sent = PAIRS * MESSAGES

    async def traffic() -> None:
        clients = [await balanced.client(user) for user in users]
        for i in range(MESSAGES):
            for p in range(PAIRS):
                sender, receiver = clients[2 * p], clients[2 * p + 1]
                await sender.send_text(f"m{i}", to=receiver.user_id, local_id=f"mt-{p}-{i}")
        for p in range(PAIRS):
            receiver = clients[2 * p + 1]

            def has_all(r: ChatClient = receiver) -> bool:
                return sum(c.contiguous for c in r.chats.values()) == MESSAGES

            await receiver.wait_until(has_all, timeout_s=30)
        for client in clients:
            await client.close()

    asyncio.run(traffic())

    def moved(kind: str, sample: str, by: float) -> Callable[[dict[str, Samples]], bool]:
        return lambda now: _sum(now, kind, sample) - _sum(before, kind, sample) >= by

    checks = {
        # the gateways: every send acknowledged, each command's round trip timed
        "acks": moved("commands", "parley_gateway_acks_total", sent),
        "command round trips": moved("commands", "parley_gateway_command_seconds_count", sent),
        # the processors: decided, waited in Kafka, committed, published, in batches
        "commands decided": moved("processor", "parley_processor_commands_total", sent),
        "waits in Kafka": moved("processor", "parley_processor_wait_seconds_count", sent),
        "batches": moved("processor", "parley_processor_batch_seconds_count", 1),
        "commits": moved("processor", "parley_processor_commit_seconds_count", 1),
        "publishes": moved("processor", "parley_processor_publish_seconds_count", 1),
        "batch sizes": moved("processor", "parley_processor_batch_commands_sum", sent),
        # the relay: every event published (the sends, and the receipts the clients sent)
        "events relayed": moved("relay", "parley_relay_published_total", sent),
        "relay publishes": moved("relay", "parley_relay_publish_seconds_count", 1),
        # the workers: every event projected, both stages timed
        "events projected": moved("workers", "parley_workers_events_total", sent),
        "projection lags": moved("workers", "parley_workers_projected_seconds_count", sent),
        "postgres stage": moved("workers", "parley_workers_postgres_seconds_count", 1),
        "redis stage": moved("workers", "parley_workers_redis_seconds_count", 1),
    }
    deadline = time.monotonic() + 30
    while True:
        now = {name: scrape(url) for name, url in urls.items()}
        missing = [what for what, check in checks.items() if not check(now)]
        if not missing:
            break
        assert time.monotonic() < deadline, f"never moved: {missing}"
        time.sleep(0.2)
    # Lags per partition: the processors own the commands topic's partitions between
    # them (librdkafka reports every 5 s), the workers the events topic's they took.
    commands_partitions = balanced.settings.commands_partitions
    deadline = time.monotonic() + 15
    while True:
        now = {name: scrape(url) for name, url in urls.items()}
        owned = {
            key
            for name, samples in now.items()
            if name.startswith("processor")
            for key in samples
            if key.startswith("parley_processor_consumer_lag{")
        }
        if len(owned) == commands_partitions:
            break
        assert time.monotonic() < deadline, f"lags of {sorted(owned)} only"
        time.sleep(0.5)
    worker_lags = [k for k in now["workers"] if k.startswith("parley_workers_consumer_lag{")]
    assert worker_lags, "the workers report the lag of the partitions they consumed"
    assert all(now["workers"][k] >= 0 for k in worker_lags)
    # Each process serves its own registry: a processor's page is not a gateway's.
    assert not any(k.startswith("parley_gateway_") for k in now["processor-1"])
