"""The accounts application: users and their handle claims in the PostgreSQL event store.

Kept in its own tables (`parley_accounts_events`, `..._snapshots`), apart from the chats:
a `Registered` event holds a password hash, so account events must never reach the
`parley.events` log that every worker reads. Accounts are written straight from HTTP
requests (registration, login, settings), not through the command processor: they are
few and slow to change, and a user's own requests rarely race; when they do, optimistic
concurrency rejects the stale write and the change is decided again on the new state.

Username and phone uniqueness: see `domain.handles`.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, PersistenceError
from eventsourcing.postgres import PostgresDatastore

from domain.account_errors import PhoneTaken, UnknownUser, UsernameTaken
from domain.handles import (
    HandleClaim,
    HandleKind,
    claim_id,
    handle_kind,
    normalise_handle,
    normalise_phone,
    normalise_username,
)
from domain.user import User, clean_display_name
from domain.visibility import Privacy
from infra.event_store import store_env, tables_created_alone
from infra.settings import Settings
from projections.directory import record_user

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL = 100
UPDATE_ATTEMPTS = 32
"""Enough for every one of a few dozen simultaneous changes to one user to land."""

T = TypeVar("T")


class Accounts(Application[UUID]):
    """Registers users and changes them; every method is safe to call from many threads."""

    name = "parley_accounts"
    is_snapshotting_enabled = True

    # Registration and lookup

    def register(self, username: str, phone: str, display_name: str, password_hash: str) -> User:
        """A new user holding both handles; `username_taken` / `phone_taken` if not free."""
        username = normalise_username(username)
        phone = normalise_phone(phone)
        clean_display_name(display_name)
        self._require_free(username, phone)
        user = User.register(uuid.uuid4(), username, phone, display_name, password_hash)
        claims = (
            HandleClaim.claim(HandleKind.USERNAME, username, user.id),
            HandleClaim.claim(HandleKind.PHONE, phone, user.id),
        )
        try:
            self.save(user, *claims)
        except IntegrityError:
            # Someone else took a handle between the check and the save.
            self._require_free(username, phone)
            raise
        self._update_directory(user)
        log.info("event=user_registered user_id=%s", user.id)
        return user

    def user_id_for(self, login: str) -> UUID | None:
        """The id of the user with this username or phone number (`+...`), if any.

        Raises `invalid_username` / `invalid_phone` for a login that cannot be a handle.
        """
        kind = handle_kind(login)
        claim = self._claim(kind, normalise_handle(kind, login))
        return None if claim is None else claim.user_id

    def user(self, user_id: UUID) -> User:
        """The user with this id, or `unknown_user`."""
        try:
            user: object = self.repository.get(user_id)
        except AggregateNotFoundError:
            raise UnknownUser() from None
        if not isinstance(user, User):
            raise UnknownUser()
        return user

    def privacy_of(self, user_id: UUID) -> Privacy:
        """What `domain.visibility` needs to know about a user."""
        return self.user(user_id).privacy

    # Changes: each loads the user, decides, saves, and decides again after a conflict.

    def update(self, user_id: UUID, decide: Callable[[User], T]) -> T:
        """Apply `decide` to the current user and save what it changed."""
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            user = self.user(user_id)
            result = decide(user)
            if not user.pending_events:
                return result
            before = user.version - len(user.pending_events)
            try:
                self.save(user)
            except IntegrityError:
                log.info("event=user_update_conflict user_id=%s attempt=%d", user_id, attempt)
                if attempt == UPDATE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.002 * attempt))  # spread the retriers out
                continue
            self._snapshot_if_due(user, before)
            self._update_directory(user)
            return result
        raise AssertionError("unreachable")

    def _update_directory(self, user: User) -> None:
        """Upsert the user's row of the directory read table (`projections.directory`)."""
        try:
            with datastore_of(self).transaction(commit=True) as cur:
                record_user(cur, user)
        except PersistenceError as exc:  # the save stands; the next change repairs the row
            log.warning(
                "event=directory_write_failed user_id=%s error=%s", user.id, type(exc).__name__
            )

    def _require_free(self, username: str, phone: str) -> None:
        if self._claim(HandleKind.USERNAME, username) is not None:
            raise UsernameTaken()
        if self._claim(HandleKind.PHONE, phone) is not None:
            raise PhoneTaken()

    def _claim(self, kind: HandleKind, handle: str) -> HandleClaim | None:
        try:
            claim: object = self.repository.get(claim_id(kind, handle))
        except AggregateNotFoundError:
            return None
        return claim if isinstance(claim, HandleClaim) else None

    def _snapshot_if_due(self, user: User, before: int) -> None:
        if user.version // SNAPSHOT_INTERVAL <= before // SNAPSHOT_INTERVAL:
            return
        assert self.snapshots is not None
        try:
            self.snapshots.put([User.Snapshot.take(user)])
        except PersistenceError as exc:  # an optimisation only: the events are stored
            log.warning("event=snapshot_failed user_id=%s error=%s", user.id, type(exc).__name__)


def open_accounts(settings: Settings) -> Accounts:
    """The accounts application on the settings' PostgreSQL.

    Without an aggregate cache: several commands service processes change the same users,
    so each change starts from the stored state.
    """
    with tables_created_alone(settings):
        return Accounts(env=store_env(settings, AGGREGATE_CACHE_MAXSIZE=""))


def datastore_of(accounts: Accounts) -> PostgresDatastore:
    """The accounts store's PostgreSQL connection pool."""
    datastore = getattr(accounts.recorder, "datastore", None)
    assert isinstance(datastore, PostgresDatastore)
    return datastore
