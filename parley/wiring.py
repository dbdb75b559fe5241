"""The adapters each service runs with, built here and handed in (the composition root).

A service module takes what it works with (stores, pools, clients, the command bus) and
never opens them itself, so a test can hand it in-memory adapters or real ones. Here
they are opened on the settings' servers, given to the service, and closed after it:

- the processor: the event store, its snowflake worker-id lease, the Redis client its
  replies go out on, what it knows of users (the directory), the Kafka consumer, and
  the admin client that deletes decided commands from the commands topic;
- the commands service: the accounts store, password hasher, tokens and rate limits
  (`Access`), the gateway's command bus and PostgreSQL pool, and the upload flow with
  the object store (`MediaUploads`);
- the queries service: its PostgreSQL pool, Redis, the token checker and the object
  store's URL signer (`ReadSide`);
- the notifier: the push providers the settings configure (`push_providers`);
- the balancer's sync: the registry's watch and HAProxy's runtime API.

The relay and the Faust workers open their connections in `streams/` still: they have
one adapter each and no test that would hand them another. Before any service starts,
`migrate` creates the tables it needs (the one place that creates tables).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import aiohttp
import psycopg
import redis
from aiohttp.abc import AbstractResolver
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from starlette.concurrency import run_in_threadpool

from commands.accounts.access import Access
from commands.accounts.application import open_accounts
from commands.gateway.bus import CommandBus
from commands.gateway.gateway import GatewayAdapters
from commands.media.uploads import MediaUploads
from commands.processor.consumer import consume_commands, open_consumer
from commands.processor.people import open_people
from commands.processor.processor import CommandProcessor
from commands.processor.publishing import EventPublisher
from commands.processor.truncate import CommandTruncator, open_admin, truncating
from commands.ratelimit import RateLimiter, buckets_from_settings
from commands.service import run_commands_service
from infra.auth import Passwords, Tokens
from infra.balancer import BalancerSync, RuntimeApi, api_paths
from infra.event_store import open_store
from infra.health import Health
from infra.leases import LeasedSnowflake, WorkerLease
from infra.objectstore import ObjectStore
from infra.pg_pool import checked_pool
from infra.push.apns import Apns
from infra.push.endpoints import EndpointPolicy, PublicOnlyResolver
from infra.push.fcm import Fcm
from infra.push.provider import Provider
from infra.push.webpush import WebPush
from infra.registry import open_registry
from infra.settings import Settings
from infra.topics import COMMANDS
from projections.schema import migrate
from queries.resources import APPLICATION_NAME, POOL_WAIT_S, ReadSide
from queries.service import run_queries_service
from streams import notifier, relay, workers

log = logging.getLogger("parley.wiring")


def run_processor(
    settings: Settings, stop: threading.Event, ready: threading.Event | None = None
) -> None:
    """The command processor on the settings' servers until `stop` is set."""
    migrate(settings)
    client = redis.Redis.from_url(settings.redis_url)
    lease = WorkerLease(client, ttl_ms=settings.snowflake_lease_ttl_ms)
    lease.acquire()
    lease.start_renewing()
    store = open_store(settings)
    people = open_people(settings.pg_conninfo)
    try:
        client_id = f"parley-processor-{lease.worker_id}"
        owner = f"{client_id}-{uuid.uuid4().hex[:12]}"  # this run's claim on its partitions
        publisher = None
        if settings.events_publisher == "processor":
            publisher = EventPublisher(settings, store, client_id, owner)
        processor = CommandProcessor(
            settings, store, LeasedSnowflake(lease), client, people, publisher
        )
        truncator = open_truncator(settings, client_id)
        on_commit = None if truncator is None else truncator.committed
        consumer = open_consumer(settings, client_id, on_commit)
        log.info("event=processor_wired worker_id=%d", lease.worker_id)
        with truncating(truncator, settings.commands_truncate_interval_s):
            consume_commands(settings, processor, consumer, stop, ready, on_commit)
    finally:
        lease.release()
        store.close()
        people.close()
        client.close()


def open_truncator(settings: Settings, client_id: str) -> CommandTruncator | None:
    """What deletes decided commands from the commands topic behind the processor whose
    consumer is `client_id`, up to what that consumer commits (docs/log.md); None when
    the interval is 0 (off). Its admin client connects in the truncator's thread."""
    if settings.commands_truncate_interval_s <= 0:
        return None
    # kafka-python's client is the processor's only one (its consumer and producer are
    # librdkafka's): an outage is the truncator's one line, `commands_truncate_failed`,
    # not the library's four per connection attempt (95 lines for two Kafka restarts).
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    return CommandTruncator(partial(open_admin, settings, client_id), settings.topic(COMMANDS))


def run_commands(settings: Settings, stop: threading.Event) -> None:
    """The commands service (accounts routes and the gateway) until `stop` is set."""
    migrate(settings)
    run_commands_service(settings, stop, open_access, gateway_adapters, open_media)


def run_queries(settings: Settings, stop: threading.Event) -> None:
    """The queries service until `stop` is set."""
    migrate(settings)
    run_queries_service(settings, stop, open_read_side)


def run_relay(settings: Settings, stop: threading.Event) -> None:
    """The relay from the event store to Kafka until `stop` is set."""
    migrate(settings)
    relay.run_relay(settings, stop)


def run_notifier(settings: Settings, stop: threading.Event) -> None:
    """The push notifier with the providers the settings configure, until `stop` is set."""
    migrate(settings)

    async def main() -> None:
        async with push_providers(settings) as providers:
            await notifier.run(settings, stop, providers)

    asyncio.run(main())


def run_balancer(settings: Settings, stop: threading.Event) -> None:
    """HAProxy's gateway slots kept equal to the registry's live gateways until `stop`."""

    async def main() -> None:
        registry = open_registry(settings)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=lambda: (stop.wait(), loop.call_soon_threadsafe(stopped.set)), daemon=True
        ).start()
        try:
            watch = registry.watch(settings.registry_report_s)
            apis = [RuntimeApi(path) for path in api_paths(settings)]
            await BalancerSync(settings, watch, apis).run(stopped)
        finally:
            await registry.close()

    asyncio.run(main())


def push_http(
    settings: Settings, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """An HTTP/1.1 client of Web Push or FCM (APNs has its own, on HTTP/2).

    aiohttp, not httpx: with httpx the notifier spent 80 % of its CPU in the client (its
    pool scans every connection per request) and sent 244 pushes/s; with aiohttp 468/s
    (`parley bench push`, docs/performance.md)."""
    timeout = aiohttp.ClientTimeout(total=settings.push_timeout_s)
    connector = aiohttp.TCPConnector(limit=256, resolver=resolver)
    return aiohttp.ClientSession(timeout=timeout, connector=connector)


@asynccontextmanager
async def push_providers(settings: Settings) -> AsyncIterator[dict[str, Provider]]:
    """Each provider whose settings are given (docs/push.md), the others off, and their
    HTTP clients, closed on the way out (the providers are closed by their user).

    Web Push has a client of its own: its endpoints are the users', so it connects only
    to public addresses (`PublicOnlyResolver`); FCM's URLs are the operator's."""
    resolver = PublicOnlyResolver(EndpointPolicy.from_settings(settings))
    try:
        async with (
            push_http(settings) as client,
            push_http(settings, resolver) as webpush_client,
        ):
            providers: dict[str, Provider] = {}
            if settings.webpush_subject:
                providers["webpush"] = WebPush(settings, webpush_client)
            if settings.fcm_service_account:
                providers["fcm"] = Fcm(settings, client)
            if settings.apns_key_path:
                providers["apns"] = Apns(settings)
            yield providers
    finally:
        await resolver.close()  # a connector closes only a resolver it made


def run_workers(settings: Settings) -> None:
    """The Faust workers until they are stopped (Faust handles SIGTERM and SIGINT)."""
    migrate(settings)
    workers.run_workers(settings)


@asynccontextmanager
async def open_access(settings: Settings) -> AsyncIterator[Access]:
    """The accounts store, passwords, tokens and rate limits; closed on the way out."""
    accounts = await run_in_threadpool(open_accounts, settings)
    # A blocking pool: a burst (hundreds of sockets closing at once) waits for a
    # connection instead of failing with MaxConnectionsError. A pool handed to a client
    # brings its own retry policy, none by default: after a Redis restart every pooled
    # connection then failed its next command once (`/v1/auth/refresh` answered 500).
    # This is the policy redis-py gives the clients it builds from a URL: a broken
    # connection is dropped and the command sent again on a new one.
    client = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=10,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), 10),
        )
    )
    try:
        passwords = await run_in_threadpool(Passwords, settings)
        tokens = Tokens(settings, client)
        limiter = RateLimiter(client, buckets_from_settings(settings))
        yield Access(settings, accounts, passwords, tokens, limiter, client)
    finally:
        await client.aclose()
        accounts.close()


def gateway_adapters(settings: Settings) -> GatewayAdapters:
    """A new gateway's id, its command bus (replies on its own channel), its pool and
    the registry it joins (`PARLEY_REGISTRY`).

    Opened and closed by the gateway's `start` and `stop`, with the app's lifespan.
    """
    gateway_id = f"gw-{uuid.uuid4().hex[:12]}"
    health = Health()
    return GatewayAdapters(
        gateway_id=gateway_id,
        health=health,
        bus=CommandBus(settings, reply_to=gateway_id, health=health),
        pool=checked_pool(settings.pg_conninfo, min_size=1, max_size=settings.gateway_pool_size),
        registry=open_registry(settings),
    )


@asynccontextmanager
async def open_media(settings: Settings) -> AsyncIterator[MediaUploads]:
    """The upload flow with its own small pool and the object store."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_conninfo, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    media = MediaUploads(settings, ObjectStore(settings), pool)
    try:
        yield media
    finally:
        await media.close()
        await pool.close()


@asynccontextmanager
async def open_read_side(settings: Settings) -> AsyncIterator[ReadSide]:
    """The queries service's pool, Redis and token checker; closed on the way out."""
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        settings.pg_conninfo,
        min_size=1,
        max_size=settings.queries_pool_size,
        kwargs={
            "autocommit": True,
            "application_name": APPLICATION_NAME,
            "options": f"-c statement_timeout={settings.queries_statement_timeout_ms}",
        },
        open=False,
        name="queries",
        timeout=POOL_WAIT_S,
    )
    await pool.open()
    client = Redis.from_url(settings.redis_url)
    try:
        yield ReadSide(settings, pool, client, Tokens(settings, client), ObjectStore(settings))
    finally:
        await client.aclose()
        await pool.close()
