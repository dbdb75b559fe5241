"""Test fixtures: the real local stack, an isolated database, topics and Redis db per run.

Tests never touch a developer's data: they use the database ``<pg_db>_test``, Redis
database 15 (``PARLEY_TEST_REDIS_DB``), and Kafka topics, consumer groups and an object
store bucket named with a per-run id (topics and bucket deleted at the end).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from infra.metrics_http import BACKGROUND
from infra.objectstore import ObjectStore
from infra.scratch import delete_topics, fresh_database, redis_db
from infra.settings import Settings, load_settings
from infra.stack import stack_up
from projections.schema import migrate


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def settings(base_settings: Settings) -> Iterator[Settings]:
    """Settings for this test run; the stack is started (or reused) first."""
    stack_up(base_settings)
    run_id = uuid.uuid4().hex[:8]
    test_redis_db = int(os.environ.get("PARLEY_TEST_REDIS_DB", "15"))
    test = base_settings.replace(
        pg_db=f"{base_settings.pg_db}_test",
        redis_url=redis_db(base_settings.redis_url, test_redis_db),
        topic_prefix=f"test-{run_id}.",
        events_partitions=4,
        commands_partitions=4,
        processor_group=f"test-{run_id}-processor",
        workers_app_id=f"test-{run_id}-workers",
        s3_bucket=f"parley-test-{run_id}",
    )
    fresh_database(base_settings, test.pg_db)
    migrate(test)  # the tables, as the composition root creates them before any service
    redis.Redis.from_url(test.redis_url).flushdb()
    os.environ.update(
        {
            "PARLEY_PG_DB": test.pg_db,
            "PARLEY_REDIS_URL": test.redis_url,
            "PARLEY_TOPIC_PREFIX": test.topic_prefix,
            "PARLEY_EVENTS_PARTITIONS": str(test.events_partitions),
            "PARLEY_COMMANDS_PARTITIONS": str(test.commands_partitions),
            "PARLEY_S3_BUCKET": test.s3_bucket,
            # No `/metrics` port for the services tests start, unless a test gives one:
            # several runs (and `parley up`) share this machine's default ports.
            **{f"PARLEY_{kind.upper()}_METRICS_PORT": "0" for kind in BACKGROUND},
        }
    )
    objects = ObjectStore(test)
    objects.ensure_bucket()
    yield test
    delete_topics(test)
    objects.delete_bucket()


@pytest.fixture(scope="session")
def topics(settings: Settings) -> Settings:
    """Parley's topics exist (with this run's prefix)."""
    from infra.topics import ensure_topics

    ensure_topics(settings)
    return settings
