"""Rebuilds on the real stack, with the live workers running: a broken read model and
cache come back equal to an undisturbed copy and to the fold; twice gives the same; one
projection alone; dry runs and partial rebuilds swap nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
import redis

from infra.settings import Settings
from projections.cache import recent_key, unread_key
from projections.replay.errors import PartialRebuild
from projections.replay.listing import PROJECTIONS, replay_status
from projections.replay.rebuild import RebuildOptions, RebuildSummary, rebuild
from projections.schema import LIVE_SCHEMA
from tests.projections.model import comparable
from tests.projections.test_pipeline import oracle
from tests.replay.conftest import (
    cache_dump,
    chatter,
    conversation,
    leftover_schemas,
    read_model,
    settle,
    table_oids,
)
from tests.services import Service


def run(settings: Settings, *projections: str, **options: Any) -> RebuildSummary:
    return asyncio.run(rebuild(settings, RebuildOptions(projections, **options)))


def execute(settings: Settings, *statements: str) -> None:
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def chats(topics: Settings, pipeline: dict[str, Service]) -> dict[str, Any]:
    ids = conversation(topics)
    chatter(topics)
    settle(topics)
    return ids


def test_a_broken_read_model_and_cache_are_rebuilt_equal_to_an_undisturbed_copy(
    topics: Settings, chats: dict[str, Any]
) -> None:
    undisturbed, cached = read_model(topics), cache_dump(topics)
    assert undisturbed == comparable(oracle(topics))
    group, direct, bob = chats["group"], chats["direct"], chats["bob"]
    execute(
        topics,
        f"DELETE FROM read.messages WHERE chat_id = '{group}'",
        f"DELETE FROM read.receipts WHERE chat_id = '{direct}'",
        "UPDATE read.unread SET count = count + 7",
        "DELETE FROM read.inbox",
        f"UPDATE read.members SET role = 'admin' WHERE chat_id = '{group}'",
        "DELETE FROM read.checkpoints WHERE projection = 'receipts'",
    )
    cache = redis.Redis.from_url(topics.redis_url)
    cache.zadd(recent_key(group), {b"not a message": 2})
    cache.delete(unread_key(bob))
    cache.close()
    assert read_model(topics) != undisturbed
    assert cache_dump(topics) != cached

    summary = run(topics, *PROJECTIONS, verify=True)

    assert summary.swapped and summary.projections == list(PROJECTIONS)
    assert summary.records >= len(oracle(topics).seen)
    report = summary.verify
    assert report is not None and report.cache is not None
    differing = {t.table: t.chats_differing for t in report.tables if t.chats_differing}
    assert set(differing) == {"messages", "receipts", "unread", "inbox", "members"}
    assert differing["messages"] == 1 and str(group) in next(
        t.examples for t in report.tables if t.table == "messages"
    )
    assert report.cache.keys_differing == 2
    assert read_model(topics) == undisturbed
    assert cache_dump(topics) == cached
    assert leftover_schemas(topics) == []
    # The live workers carry on from the swapped-in checkpoints.
    chatter(topics)
    settle(topics)
    assert read_model(topics) == comparable(oracle(topics))


def test_rebuilding_twice_gives_identical_results(topics: Settings, chats: dict[str, Any]) -> None:
    run(topics, *PROJECTIONS)
    first = read_model(topics), cache_dump(topics), bookkeeping(topics)
    run(topics, *PROJECTIONS)
    assert (read_model(topics), cache_dump(topics), bookkeeping(topics)) == first


def bookkeeping(settings: Settings) -> tuple[list[Any], list[Any]]:
    with psycopg.connect(settings.pg_conninfo) as conn:
        marks = conn.execute(f"SELECT * FROM {LIVE_SCHEMA}.checkpoints ORDER BY 1, 2").fetchall()
        versions = conn.execute(
            f"SELECT * FROM {LIVE_SCHEMA}.chat_versions ORDER BY 1, 2"
        ).fetchall()
    return marks, versions


def test_one_projection_is_rebuilt_alone(topics: Settings, chats: dict[str, Any]) -> None:
    settle(topics)
    undisturbed = read_model(topics)
    execute(topics, "DELETE FROM read.inbox")
    before = table_oids(topics)

    summary = run(topics, "inbox")

    assert summary.built == ["chats", "inbox"]  # the inbox reads the members
    after = table_oids(topics)
    assert after["inbox"] != before["inbox"]
    assert {t: o for t, o in after.items() if t != "inbox"} == {
        t: o for t, o in before.items() if t != "inbox"
    }
    assert read_model(topics) == undisturbed


def test_a_dry_run_compares_and_changes_nothing(topics: Settings, chats: dict[str, Any]) -> None:
    settle(topics)
    undisturbed = read_model(topics)
    execute(topics, f"DELETE FROM read.messages WHERE chat_id = '{chats['direct']}' AND seq = 1")
    before = table_oids(topics)

    summary = run(topics, "messages", dry_run=True, verify=True)

    assert not summary.swapped
    assert summary.verify is not None and summary.verify.differences == 1
    assert table_oids(topics) == before
    assert read_model(topics) != undisturbed
    run(topics, "messages")
    assert read_model(topics) == undisturbed
    assert leftover_schemas(topics) == []


def test_a_rebuild_that_skips_the_start_of_the_log_is_refused(
    topics: Settings, chats: dict[str, Any]
) -> None:
    with pytest.raises(PartialRebuild) as refused:
        run(topics, "messages", from_offset=1)
    assert refused.value.code == "partial_rebuild"
    summary = run(topics, "messages", from_offset=4, dry_run=True)
    assert not summary.swapped and summary.verify is not None
    assert summary.verify.differences > 0  # the window lacks the first messages


def test_list_shows_every_projection_live_with_its_lag(
    topics: Settings, chats: dict[str, Any]
) -> None:
    settle(topics)
    rows = replay_status(topics)
    assert [r.projection for r in rows] == list(PROJECTIONS)
    assert all(r.state == "live" and r.lag == 0 for r in rows)
    assert all(len(r.partitions) == topics.events_partitions for r in rows)
    assert rows[1].run is not None and rows[1].run.state in ("done", "dry_run")
