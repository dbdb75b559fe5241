"""The accounts application on the real PostgreSQL: uniqueness under races, updates."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from eventsourcing.persistence import IntegrityError

from commands.accounts.application import SNAPSHOT_INTERVAL, Accounts, open_accounts
from domain.account_errors import PhoneTaken, UnknownUser, UsernameTaken
from domain.errors import DomainError
from domain.handles import HandleClaim, HandleKind
from domain.user import User
from domain.visibility import LastSeenPrivacy
from infra.settings import Settings
from tests.accounts.client import new_handles

RACERS = 16


@pytest.fixture(scope="module")
def apps(settings: Settings) -> Iterator[list[Accounts]]:
    """Four accounts applications, as if in four processes, over one database."""
    opened = [open_accounts(settings) for _ in range(4)]
    yield opened
    for app in opened:
        app.close()


def race(apps: list[Accounts], attempt: Callable[[Accounts, int], object]) -> list[object]:
    """Run `attempt` in RACERS threads released together; each result or error."""
    barrier = threading.Barrier(RACERS)

    def one(n: int) -> object:
        barrier.wait()
        try:
            return attempt(apps[n % len(apps)], n)
        except DomainError as exc:
            return exc

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


def test_one_of_many_simultaneous_registrations_of_a_username_wins(apps: list[Accounts]) -> None:
    username, _ = new_handles()
    outcomes = race(
        apps, lambda app, n: app.register(username, f"+3161{n:07d}{len(username)}", "R", "h")
    )
    winners = [o for o in outcomes if isinstance(o, User)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, UsernameTaken) for o in outcomes if o is not winners[0])
    assert apps[0].user_id_for(username) == winners[0].id
    assert apps[1].user(winners[0].id).username == username


def test_one_of_many_simultaneous_registrations_of_a_phone_wins(apps: list[Accounts]) -> None:
    base, phone = new_handles()
    outcomes = race(apps, lambda app, n: app.register(f"{base}_{n}", phone, "R", "h"))
    winners = [o for o in outcomes if isinstance(o, User)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, PhoneTaken) for o in outcomes if o is not winners[0])
    assert apps[2].user_id_for(phone) == winners[0].id
    # The losers' usernames were not taken by their failed registrations.
    loser = next(n for n in range(RACERS) if f"{base}_{n}" != winners[0].username)
    assert apps[0].user_id_for(f"{base}_{loser}") is None


def test_a_taken_handle_is_refused_before_saving(apps: list[Accounts]) -> None:
    username, phone = new_handles()
    apps[0].register(username, phone, "R", "h")
    other_name, other_phone = new_handles()
    with pytest.raises(UsernameTaken):
        apps[1].register(username.upper(), other_phone, "R", "h")
    with pytest.raises(PhoneTaken):
        apps[1].register(other_name, phone, "R", "h")
    assert apps[1].user_id_for(other_name) is None


def test_unknown_users(apps: list[Accounts]) -> None:
    username, phone = new_handles()
    assert apps[0].user_id_for(username) is None
    assert apps[0].user_id_for(phone) is None
    with pytest.raises(UnknownUser):
        apps[0].user(uuid.uuid4())


def test_concurrent_changes_to_one_user_all_land(apps: list[Accounts]) -> None:
    """Each conflicting save is decided again on the new state, never lost."""
    owner = apps[0].register(*new_handles(), "Owner", "h")
    friends = [apps[0].register(*new_handles(), "F", "h").id for _ in range(RACERS)]
    outcomes = race(apps, lambda app, n: app.update(owner.id, lambda u: u.add_contact(friends[n])))
    assert outcomes == [True] * RACERS
    assert apps[3].user(owner.id).contacts == frozenset(friends)


def test_long_histories_are_snapshotted(apps: list[Accounts]) -> None:
    user = apps[0].register(*new_handles(), "Busy", "h")
    settings_cycle = [LastSeenPrivacy.NOBODY, LastSeenPrivacy.EVERYONE]
    for n in range(SNAPSHOT_INTERVAL + 5):
        setting = settings_cycle[n % 2]
        apps[0].update(user.id, lambda u: u.set_last_seen_privacy(setting))  # noqa: B023
    assert apps[0].snapshots is not None
    snapshots = list(apps[0].snapshots.get(user.id, desc=True, limit=1))
    assert snapshots and snapshots[0].originator_version == SNAPSHOT_INTERVAL
    loaded = apps[1].user(user.id)
    assert loaded.version == SNAPSHOT_INTERVAL + 6
    assert loaded.last_seen == settings_cycle[(SNAPSHOT_INTERVAL + 4) % 2]


def test_a_conflicting_claim_stores_nothing_of_the_losing_registration(
    apps: list[Accounts],
) -> None:
    """What makes the races safe: user and claims are saved in one transaction, and a
    second version 1 of a claim is refused by the event store, without the pre-check."""
    username, phone = new_handles()
    _, other_phone = new_handles()
    first = User.register(uuid.uuid4(), username, phone, "A", "h")
    second = User.register(uuid.uuid4(), username, other_phone, "B", "h")
    apps[0].save(
        first,
        HandleClaim.claim(HandleKind.USERNAME, username, first.id),
        HandleClaim.claim(HandleKind.PHONE, phone, first.id),
    )
    with pytest.raises(IntegrityError):
        apps[1].save(
            second,
            HandleClaim.claim(HandleKind.PHONE, other_phone, second.id),
            HandleClaim.claim(HandleKind.USERNAME, username, second.id),
        )
    assert apps[0].user_id_for(other_phone) is None
    with pytest.raises(UnknownUser):
        apps[0].user(second.id)
