"""Each relay test gets its own database, relay name and events topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from infra.event_store import ChatStore, open_store
from infra.settings import Settings
from infra.topics import ensure_topics
from projections.schema import migrate

BATCH_MAX = 500


@pytest.fixture
def relay_settings(topics: Settings) -> Iterator[Settings]:
    """Settings of one test: a fresh database and topic, so every stored event is its own."""
    tag = uuid.uuid4().hex[:8]
    own = topics.replace(
        pg_db=f"{topics.pg_db}_relay_{tag}",
        topic_prefix=f"{topics.topic_prefix}{tag}.",
        relay_name=f"test-{tag}",
        relay_batch_max=BATCH_MAX,
    )
    admin = topics.replace(pg_db="postgres").pg_conninfo
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{own.pg_db}"')
    migrate(own)
    ensure_topics(own)
    try:
        yield own
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{own.pg_db}" WITH (FORCE)')


@pytest.fixture
def store(relay_settings: Settings) -> Iterator[ChatStore]:
    chat_store = open_store(relay_settings)
    yield chat_store
    chat_store.close()
