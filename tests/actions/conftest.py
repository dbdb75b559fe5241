"""The stack the message-action tests share: a database, topics and groups of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.scratch import fresh_database
from infra.settings import Settings
from infra.topics import ensure_topics
from projections.schema import migrate
from tests.fullstack import FullStack, full_stack

EDIT_WINDOW_S = 5.0
"""Short enough that a test can outlast it; edits inside it follow their send at once."""
SHORT_TIMER_S = 3
ERASE_GRACE_S = 1.0
"""How old a deleted message's media note must be before its object may go."""


@pytest.fixture(scope="package")
def live(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    """A stack on a database, topics and consumer groups of this package's own: its
    disappearing messages are erased by a clock no fold models, and its rebuild swaps
    the read schema, so the modules that compare the whole read model with a fold of
    the whole store (tests/projections) must not see them."""
    logs = tmp_path_factory.mktemp("actions")
    own = topics.replace(
        pg_db=f"{topics.pg_db}_actions",
        topic_prefix=f"{topics.topic_prefix}actions.",
        processor_group=f"{topics.processor_group}-actions",
        workers_app_id=f"{topics.workers_app_id}-actions",
    )
    fresh_database(topics, own.pg_db)
    migrate(own)
    ensure_topics(own)
    with full_stack(
        own,
        logs,
        PARLEY_PG_DB=own.pg_db,
        PARLEY_TOPIC_PREFIX=own.topic_prefix,
        PARLEY_PROCESSOR_GROUP=own.processor_group,
        PARLEY_WORKERS_APP_ID=own.workers_app_id,
        PARLEY_EDIT_WINDOW_S=str(EDIT_WINDOW_S),
        PARLEY_DISAPPEARING_TIMERS_S=f"0,{SHORT_TIMER_S},86400",
        PARLEY_MESSAGE_EXPIRY_INTERVAL_S="1",
        PARLEY_MEDIA_ERASE_GRACE_S=str(ERASE_GRACE_S),
        PARLEY_MEDIA_ERASE_INTERVAL_S="1",
        PARLEY_COMMANDS_TRUNCATE_INTERVAL_S="1",
    ) as stack:
        yield stack
