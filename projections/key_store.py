"""End-to-end encryption keys: each device's public keys and each user's device list.

Public keys only: the server never holds a private key (docs/e2e.md). Written by the
accounts API (`commands.accounts.key_routes`) and read by it and by the gateway, which
refuses a ciphertext send naming a stale device list. Like the push tables they live in
their own schema, `e2e`, outside the projections, so a replay never touches them.

- `devices`: one row per (user, device): its identity key (Ed25519, 32 bytes) and its
  current signed prekey (X25519, with the identity key's signature over it).
- `prekeys`: the device's pool of one-time prekeys (X25519), each with the device's id.
  Ids only grow: an upload adds only keys above the highest id the device ever sent
  (`devices.max_prekey_id`), so a client that sends its whole set again cannot put back
  a key that was already handed out.
  A fetch takes one with a single `DELETE ... RETURNING` over a row locked with `SKIP
  LOCKED`: two fetches never get the same key, and neither waits for the other.
- `device_lists`: a version per user, raised in the same transaction as every change
  to the set of their devices or to a device's identity key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

E2E_SCHEMA = "e2e"

E2E_DDL = (
    "SELECT pg_advisory_xact_lock(hashtext('parley:e2e-ddl'))",
    f"CREATE SCHEMA IF NOT EXISTS {E2E_SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {E2E_SCHEMA}.devices ("
    " user_id uuid NOT NULL, device_id text NOT NULL, identity_key bytea NOT NULL,"
    " signed_prekey_id bigint NOT NULL, signed_prekey bytea NOT NULL,"
    " signed_prekey_signature bytea NOT NULL, max_prekey_id bigint NOT NULL DEFAULT -1,"
    " updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (user_id, device_id))",
    f"CREATE TABLE IF NOT EXISTS {E2E_SCHEMA}.prekeys ("
    " user_id uuid NOT NULL, device_id text NOT NULL, key_id bigint NOT NULL,"
    " public_key bytea NOT NULL, PRIMARY KEY (user_id, device_id, key_id))",
    f"CREATE TABLE IF NOT EXISTS {E2E_SCHEMA}.device_lists ("
    " user_id uuid PRIMARY KEY, version bigint NOT NULL)",
)

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """What a device publishes: its identity key and its current signed prekey."""

    identity_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes


@dataclass(frozen=True, slots=True)
class Bundle:
    """A device's prekey bundle; `one_time_prekey` is (key id, key), None when none is left."""

    device_id: str
    keys: DeviceKeys
    one_time_prekey: tuple[int, bytes] | None


@dataclass(frozen=True, slots=True)
class DeviceList:
    """A user's devices with keys, and the version a sender names to say it knows them."""

    version: int
    devices: dict[str, bytes]  # device id -> identity key


async def publish_keys(
    conn: Conn,
    user_id: UUID,
    device_id: str,
    keys: DeviceKeys,
    prekeys: Sequence[tuple[int, bytes]],
    max_prekeys: int,
) -> tuple[int, bool]:
    """Store the device's keys and add the new one-time prekeys (ids at or below the
    highest one it ever sent are ignored: held or handed out); returns (keys in the
    pool, whether the device list changed).

    A new device or a new identity key raises the user's device-list version, and a new
    identity key drops the prekeys of the old one. Raises `TooManyPrekeys` (nothing
    stored) when the pool would hold more than `max_prekeys`.
    """
    async with conn.transaction():
        await conn.execute(
            f"INSERT INTO {E2E_SCHEMA}.device_lists (user_id, version) VALUES (%s, 0) "
            "ON CONFLICT DO NOTHING",
            (user_id,),
        )
        # The user's device list row is the lock that orders every change to it.
        await conn.execute(
            f"SELECT version FROM {E2E_SCHEMA}.device_lists WHERE user_id = %s FOR UPDATE",
            (user_id,),
        )
        cur = await conn.execute(
            f"SELECT identity_key FROM {E2E_SCHEMA}.devices WHERE user_id = %s AND device_id = %s",
            (user_id, device_id),
        )
        row = await cur.fetchone()
        changed = row is None or bytes(row[0]) != keys.identity_key
        if row is not None and changed:
            await conn.execute(
                f"DELETE FROM {E2E_SCHEMA}.prekeys WHERE user_id = %s AND device_id = %s",
                (user_id, device_id),
            )
        await conn.execute(
            f"INSERT INTO {E2E_SCHEMA}.devices (user_id, device_id, identity_key,"
            " signed_prekey_id, signed_prekey, signed_prekey_signature)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, device_id) DO UPDATE SET"
            " identity_key = excluded.identity_key,"
            " signed_prekey_id = excluded.signed_prekey_id,"
            " signed_prekey = excluded.signed_prekey,"
            " signed_prekey_signature = excluded.signed_prekey_signature, updated_at = now(),"
            " max_prekey_id = CASE WHEN devices.identity_key = excluded.identity_key"
            " THEN devices.max_prekey_id ELSE -1 END",
            (
                user_id,
                device_id,
                keys.identity_key,
                keys.signed_prekey_id,
                keys.signed_prekey,
                keys.signed_prekey_signature,
            ),
        )
        cur = await conn.execute(
            f"SELECT max_prekey_id FROM {E2E_SCHEMA}.devices WHERE user_id = %s AND device_id = %s",
            (user_id, device_id),
        )
        highest = int((await cur.fetchone() or (-1,))[0])
        new = [(key_id, key) for key_id, key in prekeys if key_id > highest]
        if new:
            async with conn.cursor() as c:
                await c.executemany(
                    f"INSERT INTO {E2E_SCHEMA}.prekeys (user_id, device_id, key_id, public_key)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(user_id, device_id, key_id, key) for key_id, key in new],
                )
            await conn.execute(
                f"UPDATE {E2E_SCHEMA}.devices SET max_prekey_id = %s"
                " WHERE user_id = %s AND device_id = %s",
                (max(key_id for key_id, _ in new), user_id, device_id),
            )
        held = await count_prekeys(conn, user_id, device_id)
        if held > max_prekeys:
            raise TooManyPrekeys(held, max_prekeys)
        if changed:
            await conn.execute(
                f"UPDATE {E2E_SCHEMA}.device_lists SET version = version + 1 WHERE user_id = %s",
                (user_id,),
            )
    return held, changed


async def count_prekeys(conn: Conn, user_id: UUID, device_id: str) -> int:
    cur = await conn.execute(
        f"SELECT count(*) FROM {E2E_SCHEMA}.prekeys WHERE user_id = %s AND device_id = %s",
        (user_id, device_id),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def remove_device(conn: Conn, user_id: UUID, device_id: str | None) -> bool:
    """Forget a device's keys (every device's with None); whether any were there. Raises
    the device-list version when it removed one."""
    only = "" if device_id is None else " AND device_id = %s"
    args: tuple[Any, ...] = (user_id,) if device_id is None else (user_id, device_id)
    async with conn.transaction():
        await conn.execute(
            f"DELETE FROM {E2E_SCHEMA}.prekeys WHERE user_id = %s{only}",
            args,
        )
        cur = await conn.execute(f"DELETE FROM {E2E_SCHEMA}.devices WHERE user_id = %s{only}", args)
        removed = cur.rowcount > 0
        if removed:
            await conn.execute(
                f"UPDATE {E2E_SCHEMA}.device_lists SET version = version + 1 WHERE user_id = %s",
                (user_id,),
            )
    return removed


async def device_lists(conn: Conn, user_ids: Sequence[UUID]) -> dict[UUID, DeviceList]:
    """Each named user's device list (version 0 and no devices for a user with none)."""
    lists = {user: DeviceList(0, {}) for user in user_ids}
    cur = await conn.execute(
        f"SELECT user_id, version FROM {E2E_SCHEMA}.device_lists WHERE user_id = ANY(%s)",
        (list(user_ids),),
    )
    for user, version in await cur.fetchall():
        lists[user] = DeviceList(int(version), {})
    cur = await conn.execute(
        f"SELECT user_id, device_id, identity_key FROM {E2E_SCHEMA}.devices"
        " WHERE user_id = ANY(%s) ORDER BY device_id",
        (list(user_ids),),
    )
    for user, device, identity_key in await cur.fetchall():
        lists[user].devices[device] = bytes(identity_key)
    return lists


_TAKE_PREKEY = (
    f"DELETE FROM {E2E_SCHEMA}.prekeys WHERE (user_id, device_id, key_id) = ("
    f" SELECT user_id, device_id, key_id FROM {E2E_SCHEMA}.prekeys"
    " WHERE user_id = %s AND device_id = %s ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING key_id, public_key"
)


async def take_bundles(
    conn: Conn, user_id: UUID, skip_device: str | None = None, only: Sequence[str] | None = None
) -> tuple[int, list[Bundle]]:
    """The user's device-list version and a bundle for each device but `skip_device`
    (of those in `only`, if given), each taking one one-time prekey from its pool (none
    once the pool is empty)."""
    lists = await device_lists(conn, [user_id])
    cur = await conn.execute(
        f"SELECT device_id, identity_key, signed_prekey_id, signed_prekey,"
        f" signed_prekey_signature FROM {E2E_SCHEMA}.devices WHERE user_id = %s"
        " ORDER BY device_id",
        (user_id,),
    )
    bundles = []
    for device_id, identity, spk_id, spk, signature in await cur.fetchall():
        if device_id == skip_device or (only is not None and device_id not in only):
            continue
        taken = await conn.execute(_TAKE_PREKEY, (user_id, device_id))
        row = await taken.fetchone()
        keys = DeviceKeys(bytes(identity), int(spk_id), bytes(spk), bytes(signature))
        prekey = None if row is None else (int(row[0]), bytes(row[1]))
        bundles.append(Bundle(device_id, keys, prekey))
    return lists[user_id].version, bundles


class TooManyPrekeys(Exception):
    def __init__(self, held: int, limit: int) -> None:
        super().__init__(f"the pool would hold {held} one-time prekeys; the limit is {limit}")
        self.held = held
        self.limit = limit
