"""The user aggregate and its handle claims: validation, changes, events, snapshots."""

from collections.abc import Sequence
from dataclasses import replace
from functools import reduce
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex

import domain.account_errors as errors
from domain.errors import DomainError
from domain.handles import HandleClaim, HandleKind, claim_id, normalise_phone, normalise_username
from domain.user import MAX_DEVICES, User, validate_password
from domain.visibility import LastSeenPrivacy, Privacy

pytestmark = pytest.mark.unit

ALICE, BOB = UUID(int=1), UUID(int=2)


def alice() -> User:
    user = User.register(ALICE, "Alice", "+44 7700 900123", " Alice L. ", "argon2-hash")
    user.collect_events()
    return user


def replay(events: Sequence[Any]) -> User:
    def apply(user: Any, event: CanMutateAggregate[UUID]) -> Any:
        return event.mutate(user)

    user: User = reduce(apply, events, None)
    return user


def test_registration_normalises_handles_and_display_name() -> None:
    user = alice()
    assert (user.username, user.phone, user.display_name) == ("alice", "+447700900123", "Alice L.")
    assert user.last_seen == LastSeenPrivacy.EVERYONE
    assert user.privacy == Privacy(ALICE)


@pytest.mark.parametrize(
    "raw", ["ab", "a" * 33, "al ice", "alice!", "élodie", "", "ali-ce", "al\nice"]
)
def test_invalid_usernames(raw: str) -> None:
    with pytest.raises(errors.InvalidUsername):
        normalise_username(raw)


@pytest.mark.parametrize("raw", ["abc", "a" * 32, "a.b_c", "ABC", " x_1 "])
def test_valid_usernames(raw: str) -> None:
    assert normalise_username(raw) == raw.strip().lower()


@pytest.mark.parametrize(
    "raw", ["447700900123", "+0447700900123", "+1234567", "+1234567890123456", "+44abc12345", ""]
)
def test_invalid_phone_numbers(raw: str) -> None:
    with pytest.raises(errors.InvalidPhone):
        normalise_phone(raw)


@pytest.mark.parametrize(
    ("raw", "phone"),
    [("+1 (555) 010-9999", "+15550109999"), ("+44.7700.900123", "+447700900123")],
)
def test_phone_numbers_lose_their_separators(raw: str, phone: str) -> None:
    assert normalise_phone(raw) == phone


def test_password_length_rules() -> None:
    with pytest.raises(errors.WeakPassword):
        validate_password("1234567")
    validate_password("12345678")
    validate_password("x" * 256)
    with pytest.raises(errors.PasswordTooLong):
        validate_password("x" * 257)


def test_register_needs_a_hash() -> None:
    with pytest.raises(ValueError, match="hash"):
        User.register(ALICE, "alice", "+447700900123", "Alice", "")


def test_changes_return_whether_anything_changed() -> None:
    user = alice()
    assert user.change_profile(about="climbing") is True
    assert user.change_profile(about="climbing") is False
    assert user.change_profile(display_name="Al") is True
    assert (user.display_name, user.about) == ("Al", "climbing")
    assert user.set_last_seen_privacy(LastSeenPrivacy.NOBODY) is True
    assert user.set_last_seen_privacy(LastSeenPrivacy.NOBODY) is False
    assert user.add_contact(BOB) is True
    assert user.add_contact(BOB) is False
    assert user.block(BOB) is True
    assert user.block(BOB) is False
    assert user.privacy == Privacy(
        ALICE, LastSeenPrivacy.NOBODY, frozenset({BOB}), frozenset({BOB})
    )
    assert user.unblock(BOB) is True
    assert user.unblock(BOB) is False
    assert user.remove_contact(BOB) is True
    assert user.remove_contact(BOB) is False
    assert user.register_device("phone-1", "Pixel") is True
    assert user.register_device("phone-1", "Pixel") is False
    assert user.register_device("phone-1", "Pixel 9") is True
    assert user.devices == {"phone-1": "Pixel 9"}
    assert user.remove_device("phone-1") is True
    assert user.remove_device("phone-1") is False
    kinds = [type(e).__name__ for e in user.collect_events()]
    assert kinds == [
        "ProfileChanged", "ProfileChanged", "LastSeenPrivacyChanged", "ContactAdded",
        "UserBlocked", "UserUnblocked", "ContactRemoved", "DeviceRegistered",
        "DeviceRegistered", "DeviceRemoved",
    ]  # fmt: skip


def test_no_one_adds_or_blocks_themselves() -> None:
    user = alice()
    with pytest.raises(errors.SelfTarget):
        user.add_contact(ALICE)
    with pytest.raises(errors.SelfTarget):
        user.block(ALICE)
    assert not user.pending_events


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"display_name": ""}, errors.InvalidProfile),
        ({"display_name": "x" * 65}, errors.InvalidProfile),
        ({"display_name": "a\x00b"}, errors.InvalidProfile),
        ({"about": "x" * 141}, errors.InvalidProfile),
    ],
)
def test_invalid_profiles(kwargs: dict[str, str], error: type[DomainError]) -> None:
    with pytest.raises(error):
        alice().change_profile(**kwargs)


@pytest.mark.parametrize(
    ("device_id", "name"), [("", "x"), ("a b", "x"), ("x" * 129, "x"), ("ok", ""), ("ok", "n" * 65)]
)
def test_invalid_devices(device_id: str, name: str) -> None:
    with pytest.raises(errors.InvalidDevice):
        alice().register_device(device_id, name)


def test_device_limit_and_renaming_at_the_limit() -> None:
    user = alice()
    for n in range(MAX_DEVICES):
        user.register_device(f"d{n}", "phone")
    with pytest.raises(errors.TooManyDevices):
        user.register_device("one-more", "phone")
    assert user.register_device("d0", "renamed") is True


def test_events_rebuild_the_user() -> None:
    user = User.register(ALICE, "alice", "+447700900123", "Alice", "h")
    user.add_contact(BOB)
    user.block(BOB)
    user.set_last_seen_privacy(LastSeenPrivacy.CONTACTS)
    user.register_device("d1", "Phone")
    rebuilt = replay(user.collect_events())
    assert rebuilt.privacy == user.privacy
    assert (rebuilt.username, rebuilt.devices, rebuilt.version) == ("alice", {"d1": "Phone"}, 5)


def test_snapshot_survives_json() -> None:
    user = alice()
    user.add_contact(BOB)
    user.block(BOB)
    user.set_last_seen_privacy(LastSeenPrivacy.NOBODY)
    user.register_device("d1", "Phone")
    user.collect_events()
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    snapshot = User.Snapshot.take(user)
    state = transcoder.decode(transcoder.encode(snapshot.state))
    restored = replace(snapshot, state=state).mutate(None)
    assert restored.privacy == user.privacy
    assert restored.devices == user.devices
    assert restored.last_seen is LastSeenPrivacy.NOBODY
    assert restored.version == user.version


def test_every_event_class_is_versioned() -> None:
    classes = [User, User.Event, HandleClaim, HandleClaim.Event]
    classes += [c for c in vars(User).values() if isinstance(c, type) and issubclass(c, User.Event)]
    assert all(getattr(c, "class_version", None) == 1 for c in classes)


def test_handle_claims_have_one_id_per_handle() -> None:
    claim = HandleClaim.claim(HandleKind.USERNAME, "alice", ALICE)
    assert claim.id == claim_id(HandleKind.USERNAME, "alice")
    assert claim.id != claim_id(HandleKind.PHONE, "alice")
    assert claim.id != claim_id(HandleKind.USERNAME, "alicf")
    assert replay(claim.collect_events()).user_id == ALICE  # type: ignore[attr-defined]


ACCOUNT_CODES = {
    errors.InvalidUsername: "invalid_username",
    errors.InvalidPhone: "invalid_phone",
    errors.WeakPassword: "weak_password",
    errors.PasswordTooLong: "password_too_long",
    errors.InvalidProfile: "invalid_profile",
    errors.InvalidDevice: "invalid_device",
    errors.UsernameTaken: "username_taken",
    errors.PhoneTaken: "phone_taken",
    errors.InvalidCredentials: "invalid_credentials",
    errors.UnknownUser: "unknown_user",
    errors.SelfTarget: "self_target",
    errors.TooManyContacts: "too_many_contacts",
    errors.TooManyBlocked: "too_many_blocked",
    errors.TooManyDevices: "too_many_devices",
    errors.InvalidToken: "invalid_token",
    errors.TokenExpired: "token_expired",
}


@pytest.mark.parametrize(("error", "code"), ACCOUNT_CODES.items())
def test_account_errors_have_stable_codes(error: type[DomainError], code: str) -> None:
    assert issubclass(error, DomainError)
    assert error.code == code
    assert error().message == error.default_message


def test_rate_limited_carries_retry_after() -> None:
    error = errors.RateLimited(2.5)
    assert (error.code, error.retry_after_s) == ("rate_limited", 2.5)
    assert "2.5" in error.message
