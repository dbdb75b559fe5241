"""Fixtures of the query tests: the real pipeline, a scripted world, the app in process.

All are package-scoped: the pipeline's processes (its relay holds the relay lock of the
test database) stop when this package's tests end, before other packages start theirs.

The world (built once): alice and bob chat 1:1; alice's group "Trip" with bob, carol
and dave, dave removed after seq 3; alice sends carol 130 messages (longer than the
recent cache); erin and frank, strangers to the others, have a chat and a group.
Then alice blocks carol, frank blocks erin, bob shows his last seen to contacts only
(alice is one), dave hides his from everyone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import redis

from commands.accounts.application import open_accounts
from commands.command import CommandType, Outcome
from domain.visibility import LastSeenPrivacy
from infra.routing import last_seen_key, presence_key
from infra.settings import Settings
from parley.wiring import open_read_side
from projections.schema import migrate
from queries.service import create_app
from tests.queries.world import (
    User,
    dm,
    group,
    receipt,
    register,
    remove,
    run_commands,
    send,
    wait_projected,
)
from tests.services import Service, running

LONG_CHAT = 130
BOB_LAST_SEEN_MS = 1_760_000_000_000


@dataclass
class World:
    users: dict[str, User]
    ab: UUID  # alice-bob
    trip: UUID  # alice (admin), bob, carol; dave until seq 3
    long: UUID  # alice-carol, LONG_CHAT messages from alice
    ef: UUID  # erin-frank
    hideout: UUID  # erin (admin), frank
    outcomes: list[Outcome]

    def __getattr__(self, name: str) -> User:
        users = self.__dict__.get("users", {})
        if name in users:
            return users[name]  # type: ignore[no-any-return]
        raise AttributeError(name)


@pytest.fixture(scope="package")
def pipeline(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    logs = tmp_path_factory.mktemp("queries-pipeline")
    migrate(topics)
    with (
        running("processor", logs / "processor.log") as processor,
        running("relay", logs / "relay.log") as relay,
        running("workers", logs / "workers.log") as workers,
    ):
        processor.wait_for_log(r"partitions_assigned partitions=\[\d")
        relay.wait_for_log(r"event=relay_active")
        workers.wait_for_log(r"Worker ready")
        yield


@pytest.fixture(scope="package")
def world(topics: Settings, pipeline: None) -> World:
    accounts = open_accounts(topics)
    try:
        names = ["alice", "bob", "carol", "dave", "erin", "frank"]
        u = {name: register(accounts, topics, name) for name in names}
        alice, bob, carol, dave = (u[n].user_id for n in names[:4])
        erin, frank = u["erin"].user_id, u["frank"].user_id
        ab, long, ef = (
            dm(u["alice"], u["bob"]),
            dm(u["alice"], u["carol"]),
            dm(u["erin"], u["frank"]),
        )
        trip, hideout = uuid.uuid4(), uuid.uuid4()

        def script(r: str) -> list[object]:
            return [
                send(ab, alice, "a1", "hello bob", r, to=bob),
                send(ab, alice, "a2", "are you there", r, to=bob),
                send(ab, alice, "a3", "?", r, to=bob),
                send(ab, bob, "b1", "yes", r, to=alice),
                receipt(ab, bob, CommandType.MARK_DELIVERED, 3, r),
                receipt(ab, bob, CommandType.MARK_READ, 2, r),
                group(trip, alice, [bob, carol, dave], "Trip", r),
                send(trip, alice, "g1", "plan", r),
                send(trip, bob, "g2", "ok", r),
                send(trip, alice, "g3", "dates?", r),
                remove(trip, alice, dave, r),
                send(trip, alice, "g4", "dave is out", r),
                send(trip, bob, "g5", "fine", r),
                receipt(trip, carol, CommandType.MARK_READ, 5, r),
                receipt(trip, bob, CommandType.MARK_DELIVERED, 5, r),
                receipt(trip, bob, CommandType.MARK_READ, 1, r),
                [send(long, alice, f"l{i}", f"line {i}", r, to=carol) for i in range(LONG_CHAT)],
                send(ef, erin, "e1", "psst", r, to=frank),
                send(ef, frank, "f1", "go away", r, to=erin),
                group(hideout, erin, [frank], "Hideout", r),
                send(hideout, erin, "h1", "still here", r),
            ]

        outcomes = run_commands(topics, script)
        accounts.update(alice, lambda user: user.block(carol))
        accounts.update(frank, lambda user: user.block(erin))
        accounts.update(bob, lambda user: user.add_contact(alice))
        accounts.update(bob, lambda user: user.set_last_seen_privacy(LastSeenPrivacy.CONTACTS))
        accounts.update(dave, lambda user: user.set_last_seen_privacy(LastSeenPrivacy.NOBODY))
    finally:
        accounts.close()
    cache = redis.Redis.from_url(topics.redis_url)
    cache.set(last_seen_key(bob), BOB_LAST_SEEN_MS)
    cache.hset(presence_key(bob), "conn-1", "gw-1")
    cache.set(last_seen_key(alice), BOB_LAST_SEEN_MS + 1)
    cache.set(last_seen_key(dave), BOB_LAST_SEEN_MS + 2)
    cache.close()
    wait_projected(topics, outcomes)
    return World(u, ab, trip, long, ef, hideout, outcomes)


@pytest.fixture(scope="package")
def query_settings(topics: Settings) -> Settings:
    return topics.replace(read_your_writes_timeout_s=1.0)


@pytest.fixture(scope="package")
async def client(query_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the queries app, in process (its lifespan run)."""
    app = create_app(query_settings, open_read_side)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://queries") as client,
    ):
        yield client


@pytest.fixture(scope="package")
def queries_service(
    query_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, str]]:
    """A real `parley serve queries` subprocess on a free port; (service, base url)."""
    log = tmp_path_factory.mktemp("queries-service") / "queries.log"
    env = {"PARLEY_QUERIES_PORT": "0", "PARLEY_READ_YOUR_WRITES_TIMEOUT_S": "0.3"}
    with running("queries", Path(log), env) as service:
        found = service.wait_for_log(r"event=queries_listening host=\S+ port=\d+")
        port = found.rsplit("=", 1)[1]
        yield service, f"http://127.0.0.1:{port}"
