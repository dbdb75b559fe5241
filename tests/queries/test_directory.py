"""The user directory read table, kept by the accounts application after each save."""

from __future__ import annotations

import secrets

import psycopg

from commands.accounts.application import datastore_of, open_accounts
from domain.visibility import LastSeenPrivacy
from infra.settings import Settings
from projections.directory import DIRECTORY_SCHEMA, rebuild_directory, record_user
from tests.queries.world import PASSWORD_HASH


def row(settings: Settings, user_id: object) -> tuple[object, ...] | None:
    with psycopg.connect(settings.pg_conninfo) as conn:
        return conn.execute(
            f"SELECT username, display_name, about, last_seen_privacy, contacts, blocks, version "
            f"FROM {DIRECTORY_SCHEMA}.users WHERE user_id = %s",
            (user_id,),
        ).fetchone()


def test_registration_and_changes_reach_the_directory(settings: Settings) -> None:
    accounts = open_accounts(settings)
    try:
        name = f"dir_{secrets.token_hex(4)}"
        user = accounts.register(name, f"+4479{secrets.randbelow(10**9):09d}", "Dee", PASSWORD_HASH)
        friend = accounts.register(
            f"{name}f", f"+4479{secrets.randbelow(10**9):09d}", "Eff", PASSWORD_HASH
        )
        assert row(settings, user.id) == (name, "Dee", "", "EVERYONE", [], [], 1)
        accounts.update(user.id, lambda u: u.change_profile("Dee Dee", "hi"))
        accounts.update(user.id, lambda u: u.add_contact(friend.id))
        accounts.update(user.id, lambda u: u.block(friend.id))
        accounts.update(user.id, lambda u: u.set_last_seen_privacy(LastSeenPrivacy.NOBODY))
        assert row(settings, user.id) == (
            name,
            "Dee Dee",
            "hi",
            "NOBODY",
            [friend.id],
            [friend.id],
            5,
        )

        # An older state written late (a slow writer) does not move the row backwards.
        stale = accounts.user(user.id)
        accounts.update(user.id, lambda u: u.unblock(friend.id))
        with datastore_of(accounts).transaction(commit=True) as cur:
            record_user(cur, stale)
        assert row(settings, user.id) == (
            name,
            "Dee Dee",
            "hi",
            "NOBODY",
            [friend.id],
            [],
            6,
        )

        # A lost row comes back with a rebuild.
        with psycopg.connect(settings.pg_conninfo) as conn:
            conn.execute(f"DELETE FROM {DIRECTORY_SCHEMA}.users WHERE user_id = %s", (user.id,))
        assert row(settings, user.id) is None
        assert (
            rebuild_directory(accounts, lambda: datastore_of(accounts).transaction(commit=True))
            >= 2
        )
        assert row(settings, user.id) == (
            name,
            "Dee Dee",
            "hi",
            "NOBODY",
            [friend.id],
            [],
            6,
        )
    finally:
        accounts.close()
