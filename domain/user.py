"""The user aggregate: an account, its profile, privacy setting, contacts, blocks and devices.

Messages and receipts belong to a user; sync state belongs to each of their devices.
The password arrives here already hashed (argon2, by `infra.auth`): neither the
clear password nor anything derived from it other than that hash is ever stored.
Handles (username, phone) are unique through `domain.handles.HandleClaim`.
"""

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Self, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as AggregateSnapshot

from domain.account_errors import (
    InvalidDevice,
    InvalidProfile,
    PasswordTooLong,
    SelfTarget,
    TooManyBlocked,
    TooManyContacts,
    TooManyDevices,
    WeakPassword,
)
from domain.chat import MAX_CLIENT_ID_CHARS
from domain.handles import normalise_phone, normalise_username
from domain.visibility import LastSeenPrivacy, Privacy

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256
MAX_DISPLAY_NAME_CHARS = 64
MAX_ABOUT_CHARS = 140
MAX_DEVICE_NAME_CHARS = 64
MAX_CONTACTS = 5_000
MAX_BLOCKED = 5_000
MAX_DEVICES = 16

_DEVICE_ID = re.compile(rf"[A-Za-z0-9_.:\-]{{1,{MAX_CLIENT_ID_CHARS}}}")


def validate_password(password: str) -> None:
    """Check a new password's length (before it is hashed)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword()
    if len(password) > MAX_PASSWORD_CHARS:
        raise PasswordTooLong()


def _clean_text(raw: str, what: str, max_chars: int, allow_empty: bool) -> str:
    text = raw.strip()
    if not text and not allow_empty:
        raise InvalidProfile(f"{what} must not be empty")
    if len(text) > max_chars:
        raise InvalidProfile(f"{what} has at most {max_chars} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        raise InvalidProfile(f"{what} must not contain control characters")
    return text


def clean_display_name(raw: str) -> str:
    """The display name trimmed, if it is 1-64 printable characters."""
    return _clean_text(raw, "a display name", MAX_DISPLAY_NAME_CHARS, allow_empty=False)


def clean_about(raw: str) -> str:
    """The about text trimmed, if it is at most 140 printable characters."""
    return _clean_text(raw, "the about text", MAX_ABOUT_CHARS, allow_empty=True)


def check_device_id(device_id: str) -> str:
    """A device id: 1-128 of `A-Za-z0-9_.:-`, else `invalid_device`."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise InvalidDevice(f"a device id has 1-{MAX_CLIENT_ID_CHARS} of A-Z a-z 0-9 _ . : -")
    return device_id


def clean_device(device_id: str, name: str) -> tuple[str, str]:
    """A device id (`check_device_id`) and its trimmed name (1-64 characters)."""
    check_device_id(device_id)
    try:
        clean_name = _clean_text(name, "a device name", MAX_DEVICE_NAME_CHARS, allow_empty=False)
    except InvalidProfile as exc:
        raise InvalidDevice(exc.message) from exc
    return device_id, clean_name


class User(Aggregate):
    """One account. Every change method returns False when it would change nothing."""

    class_version = 1

    class Event(Aggregate.Event):
        class_version = 1

    class Registered(Event, Aggregate.Created):
        """`username` and `phone` are normalised; `password_hash` is an argon2 hash."""

        class_version = 1
        username: str
        phone: str
        display_name: str
        password_hash: str

        def apply(self, aggregate: "User") -> None:
            aggregate.username = self.username
            aggregate.phone = self.phone
            aggregate.display_name = self.display_name
            aggregate.password_hash = self.password_hash

    class ProfileChanged(Event):
        class_version = 1
        display_name: str
        about: str

        def apply(self, aggregate: "User") -> None:
            aggregate.display_name = self.display_name
            aggregate.about = self.about

    class LastSeenPrivacyChanged(Event):
        """`last_seen` is a `LastSeenPrivacy` value."""

        class_version = 1
        last_seen: str

        def apply(self, aggregate: "User") -> None:
            aggregate.last_seen = LastSeenPrivacy(self.last_seen)

    class ContactAdded(Event):
        class_version = 1
        contact_id: UUID

        def apply(self, aggregate: "User") -> None:
            aggregate._contacts[self.contact_id] = None

    class ContactRemoved(Event):
        class_version = 1
        contact_id: UUID

        def apply(self, aggregate: "User") -> None:
            aggregate._contacts.pop(self.contact_id, None)

    class UserBlocked(Event):
        class_version = 1
        blocked_id: UUID

        def apply(self, aggregate: "User") -> None:
            aggregate._blocked[self.blocked_id] = None

    class UserUnblocked(Event):
        class_version = 1
        blocked_id: UUID

        def apply(self, aggregate: "User") -> None:
            aggregate._blocked.pop(self.blocked_id, None)

    class DeviceRegistered(Event):
        """A new device, or a known one under a new name."""

        class_version = 1
        device_id: str
        name: str

        def apply(self, aggregate: "User") -> None:
            aggregate._devices[self.device_id] = self.name

    class DeviceRemoved(Event):
        class_version = 1
        device_id: str

        def apply(self, aggregate: "User") -> None:
            aggregate._devices.pop(self.device_id, None)

    class Snapshot(AggregateSnapshot):
        """A snapshot whose state is JSON-friendly: UUID-keyed dicts become lists."""

        @classmethod
        def take(cls, aggregate: Any) -> Self:
            snapshot = super().take(aggregate)
            return replace(snapshot, state=_plain_state(snapshot.state))

        def mutate(self, _: None) -> "User":
            user = cast("User", super().mutate(None))
            vars(user).update(_rich_state(vars(user)))
            return user

    def __init__(self) -> None:
        self.username = ""
        self.phone = ""
        self.display_name = ""
        self.about = ""
        self.password_hash = ""
        self.last_seen = LastSeenPrivacy.EVERYONE
        self._contacts: dict[UUID, None] = {}  # in the order they were added
        self._blocked: dict[UUID, None] = {}
        self._devices: dict[str, str] = {}  # device id -> name

    @classmethod
    def register(
        cls, user_id: UUID, username: str, phone: str, display_name: str, password_hash: str
    ) -> Self:
        """A new account; the handles are normalised and checked, the password is hashed."""
        if not password_hash:
            msg = "register needs the password's hash"
            raise ValueError(msg)
        return cls._create(
            cls.Registered,
            id=user_id,
            username=normalise_username(username),
            phone=normalise_phone(phone),
            display_name=clean_display_name(display_name),
            password_hash=password_hash,
        )

    # Reading

    @property
    def contacts(self) -> frozenset[UUID]:
        return frozenset(self._contacts)

    @property
    def blocked(self) -> frozenset[UUID]:
        return frozenset(self._blocked)

    @property
    def devices(self) -> Mapping[str, str]:
        """Device id -> device name."""
        return dict(self._devices)

    @property
    def privacy(self) -> Privacy:
        """What `domain.visibility` needs to know about this user."""
        return Privacy(self.id, self.last_seen, self.contacts, self.blocked)

    # Changes

    def change_profile(self, display_name: str | None = None, about: str | None = None) -> bool:
        """Change the display name and/or the about text (None keeps the current one)."""
        name = self.display_name if display_name is None else clean_display_name(display_name)
        text = self.about if about is None else clean_about(about)
        if (name, text) == (self.display_name, self.about):
            return False
        self.trigger_event(self.ProfileChanged, display_name=name, about=text)
        return True

    def set_last_seen_privacy(self, last_seen: LastSeenPrivacy) -> bool:
        if last_seen == self.last_seen:
            return False
        self.trigger_event(self.LastSeenPrivacyChanged, last_seen=last_seen.value)
        return True

    def add_contact(self, contact_id: UUID) -> bool:
        self._require_other(contact_id, "add yourself as a contact")
        if contact_id in self._contacts:
            return False
        if len(self._contacts) >= MAX_CONTACTS:
            raise TooManyContacts(f"a contact list has at most {MAX_CONTACTS} users")
        self.trigger_event(self.ContactAdded, contact_id=contact_id)
        return True

    def remove_contact(self, contact_id: UUID) -> bool:
        if contact_id not in self._contacts:
            return False
        self.trigger_event(self.ContactRemoved, contact_id=contact_id)
        return True

    def block(self, blocked_id: UUID) -> bool:
        self._require_other(blocked_id, "block yourself")
        if blocked_id in self._blocked:
            return False
        if len(self._blocked) >= MAX_BLOCKED:
            raise TooManyBlocked(f"a block list has at most {MAX_BLOCKED} users")
        self.trigger_event(self.UserBlocked, blocked_id=blocked_id)
        return True

    def unblock(self, blocked_id: UUID) -> bool:
        if blocked_id not in self._blocked:
            return False
        self.trigger_event(self.UserUnblocked, blocked_id=blocked_id)
        return True

    def register_device(self, device_id: str, name: str) -> bool:
        """Add a device, or rename a known one."""
        device_id, name = clean_device(device_id, name)
        if self._devices.get(device_id) == name:
            return False
        if device_id not in self._devices and len(self._devices) >= MAX_DEVICES:
            raise TooManyDevices(f"an account has at most {MAX_DEVICES} devices")
        self.trigger_event(self.DeviceRegistered, device_id=device_id, name=name)
        return True

    def remove_device(self, device_id: str) -> bool:
        """Remove a device; False if it is not this account's (an id no device could
        have is `invalid_device`)."""
        if check_device_id(device_id) not in self._devices:
            return False
        self.trigger_event(self.DeviceRemoved, device_id=device_id)
        return True

    def _require_other(self, user_id: UUID, action: str) -> None:
        if user_id == self.id:
            raise SelfTarget(f"you cannot {action}")


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """User state as lists and str-keyed dicts, for a snapshot."""
    return {
        **state,
        "last_seen": str(state["last_seen"]),
        "_contacts": list(state["_contacts"]),
        "_blocked": list(state["_blocked"]),
    }


def _rich_state(plain: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `_plain_state`."""
    return {
        **plain,
        "last_seen": LastSeenPrivacy(plain["last_seen"]),
        "_contacts": dict.fromkeys(plain["_contacts"]),
        "_blocked": dict.fromkeys(plain["_blocked"]),
    }
