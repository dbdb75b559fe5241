"""`parley push status` and `parley push test DEVICE --user USER` (docs/push.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any
from uuid import UUID

import psycopg

from infra.push.provider import Notification, Outcome
from infra.settings import Settings
from projections.directory import DIRECTORY_SCHEMA
from projections.push_store import read_target, remove_targets
from projections.schema import migrate
from streams.push_status import push_status


def add_parser(sub: Any) -> None:
    push = sub.add_parser("push", help="push notifications: status, or a test to one device")
    actions = push.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="per provider: sent, failed, retrying")
    status.set_defaults(run=_status)
    test = actions.add_parser("test", help="send a test notification to one device")
    test.add_argument("device", help="the device id the user logged in with")
    test.add_argument("--user", required=True, help="the device's user: a user id or username")
    test.set_defaults(run=_test)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings)
    status = push_status(settings)
    states = ("sent", "retrying", "due", "failed", "dead", "gone", "skipped")
    print(f"{'provider':<8} {'devices':>7} " + " ".join(f"{s:>8}" for s in states))
    for provider in ("webpush", "fcm", "apns"):
        counts = status.by_provider.get(provider, {})
        devices = status.targets.get(provider, 0)
        print(f"{provider:<8} {devices:>7} " + " ".join(f"{counts.get(s, 0):>8}" for s in states))
    print(f"pending (in their grace period): {status.pending}")
    print(f"notifier lag: {status.lag} events")
    return 0


def _test(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings)
    return asyncio.run(_send_test(settings, args.user, args.device))


async def _send_test(settings: Settings, user: str, device: str) -> int:
    from parley.wiring import push_providers

    async with await psycopg.AsyncConnection.connect(settings.pg_conninfo, autocommit=True) as conn:
        user_id = await _user_id(conn, user)
        if user_id is None:
            print(f"parley push: no user {user!r}", file=sys.stderr)
            return 1
        found = await read_target(conn, user_id, device)
        if found is None:
            print(f"parley push: device {device!r} of {user} has no push target", file=sys.stderr)
            return 1
        provider_name, target = found
        async with push_providers(settings) as providers:
            provider = providers.get(provider_name)
            if provider is None:
                print(f"parley push: {provider_name} is not configured", file=sys.stderr)
                return 1
            note = Notification(str(UUID(int=0)), "Parley", 0, "A test notification", "test")
            try:
                result = await provider.send(target, note)
            finally:
                for each in providers.values():
                    await each.close()
        if result.outcome is Outcome.GONE:
            await remove_targets(conn, user_id, device)
    print(
        f"{provider_name}: {result.outcome.value} (HTTP {result.status}) {result.detail}".rstrip()
    )
    return 0 if result.outcome is Outcome.SENT else 2


async def _user_id(conn: psycopg.AsyncConnection[Any], user: str) -> UUID | None:
    try:
        return UUID(user)
    except ValueError:
        pass
    cur = await conn.execute(
        f"SELECT user_id FROM {DIRECTORY_SCHEMA}.users WHERE username = %s", (user.lower(),)
    )
    row = await cur.fetchone()
    return None if row is None else UUID(str(row[0]))
