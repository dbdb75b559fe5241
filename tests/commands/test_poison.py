"""A command whose handler fails with a bug is answered `internal`; the batch around it
is decided again from the store and stored whole."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from commands.command import Command, CommandType
from commands.processor import handlers
from commands.processor.people import open_people
from commands.processor.processor import CommandProcessor
from domain.ids import Snowflake
from infra.event_store import open_store
from infra.settings import Settings
from tests.commands.client import create_group, fresh_store, send, sent_events


@pytest.fixture
def processor(settings: Settings) -> Iterator[CommandProcessor]:
    store = open_store(settings)
    client = redis.Redis.from_url(settings.redis_url)
    yield CommandProcessor(
        settings, store, Snowflake(1000 % 1024), client, open_people(settings.pg_conninfo)
    )
    store.close()
    client.close()


def test_a_failing_handler_poisons_only_its_command(
    processor: CommandProcessor, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    admin, member = uuid.uuid4(), uuid.uuid4()
    chat = uuid.uuid4()
    processor.process([(0, create_group(chat, admin, [member], "").encode())])

    real_send = handlers.HANDLERS[CommandType.SEND]

    def buggy(ctx: handlers.Context, command: Command) -> handlers.Result:
        result = real_send(ctx, command)  # leaves a pending event behind, then fails
        if command.args["local_id"] == "boom":
            raise RuntimeError("a bug")
        return result

    monkeypatch.setitem(handlers.HANDLERS, CommandType.SEND, buggy)
    batch = [send(chat, admin, local, "x", "") for local in ("a", "boom", "b")]
    outcomes = processor.process([(0, c.encode()) for c in batch])
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error_code == "internal"
    assert [o.result["seq"] for o in (outcomes[0], outcomes[2])] == [1, 2]
    store = fresh_store(settings)
    assert [e.local_id for e in sent_events(store, chat)] == ["a", "b"]
    store.close()
