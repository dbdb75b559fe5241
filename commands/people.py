"""What the command processor knows of users: who exists, and who blocked whom.

Read from the user directory (`commands.directory`), which the accounts service writes
before it answers a registration or a change of blocks: a command decided after that
answer sees it. Users are never deleted, so a user once found is remembered (up to
`MAX_KNOWN`); blocks are read again for every batch, since they change at any time.
"""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from psycopg import sql

from commands.directory import DIRECTORY_SCHEMA, ensure_directory

MAX_KNOWN = 100_000
"""Users remembered as existing; beyond it the memory starts again (a query each, no more)."""

_EXISTS = sql.SQL("SELECT 1 FROM {d}.users WHERE user_id = %s").format(
    d=sql.Identifier(DIRECTORY_SCHEMA)
)
_HAS_BLOCKED = sql.SQL("SELECT 1 FROM {d}.users WHERE user_id = %s AND %s = ANY(blocks)").format(
    d=sql.Identifier(DIRECTORY_SCHEMA)
)


class People(Protocol):
    """The users a command names, as the handlers need to know them."""

    def exists(self, user_id: UUID) -> bool: ...

    def has_blocked(self, user_id: UUID, other: UUID) -> bool: ...


class Datastore(Protocol):
    """What this module needs of eventsourcing's `PostgresDatastore`."""

    def transaction(self, commit: bool) -> Any: ...


class DirectoryPeople:
    """`People` read from the user directory table, blocks remembered for one batch."""

    def __init__(self, datastore: Datastore) -> None:
        self.datastore = datastore
        self._known: set[UUID] = set()
        self._blocks: dict[tuple[UUID, UUID], bool] = {}

    def new_batch(self) -> None:
        """Forget the blocks read for the previous batch."""
        self._blocks.clear()

    def exists(self, user_id: UUID) -> bool:
        if user_id in self._known:
            return True
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(_EXISTS, (user_id,))
            found = cur.fetchone() is not None
        if found:
            if len(self._known) >= MAX_KNOWN:
                self._known.clear()
            self._known.add(user_id)
        return found

    def has_blocked(self, user_id: UUID, other: UUID) -> bool:
        pair = (user_id, other)
        blocked = self._blocks.get(pair)
        if blocked is None:
            with self.datastore.transaction(commit=False) as cur:
                cur.execute(_HAS_BLOCKED, pair)
                blocked = self._blocks[pair] = cur.fetchone() is not None
        return blocked


def open_people(store: Any) -> DirectoryPeople:
    """`People` on the chat store's PostgreSQL (the directory's database), creating the
    directory table if the accounts service has not yet."""
    datastore = store.recorder.datastore
    with datastore.transaction(commit=True) as cur:
        ensure_directory(cur)
    return DirectoryPeople(datastore)
