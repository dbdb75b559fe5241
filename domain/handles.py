"""Handles: the usernames and phone numbers by which an account is found, and their claims.

Each handle is unique. A `HandleClaim` is an aggregate whose id is derived from the
normalised handle (uuid5), created in the same save as the account that takes it: two
accounts racing for one handle both try to create version 1 of the same aggregate, and
the event store's optimistic concurrency lets exactly one of them win.
"""

import re
from enum import StrEnum
from typing import Self
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.account_errors import InvalidPhone, InvalidUsername

HANDLE_NAMESPACE = UUID("0b6f8a52-6a43-4c47-9d8e-3c1f5e0a7d21")
"""Namespace of the uuid5 ids of handle claims; part of the stored format, never change it."""

USERNAME_MIN_CHARS = 3
USERNAME_MAX_CHARS = 32
_USERNAME = re.compile(r"[a-z0-9_.]{3,32}")
_PHONE = re.compile(r"\+[1-9][0-9]{7,14}")
_PHONE_SEPARATORS = re.compile(r"[ \-.()]")


class HandleKind(StrEnum):
    """What a handle is."""

    USERNAME = "username"
    PHONE = "phone"


def normalise_username(raw: str) -> str:
    """The username in its one stored form (trimmed, lower case), if it is valid."""
    username = raw.strip().lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidUsername()
    return username


def normalise_phone(raw: str) -> str:
    """The phone number in E.164 form (separators ` -.()` removed), if it is valid."""
    phone = _PHONE_SEPARATORS.sub("", raw.strip())
    if not _PHONE.fullmatch(phone):
        raise InvalidPhone()
    return phone


def handle_kind(login: str) -> HandleKind:
    """Whether a login name is a phone number (it starts with `+`) or a username."""
    return HandleKind.PHONE if login.strip().startswith("+") else HandleKind.USERNAME


def normalise_handle(kind: HandleKind, raw: str) -> str:
    """The normalised handle of the given kind."""
    return normalise_phone(raw) if kind is HandleKind.PHONE else normalise_username(raw)


def claim_id(kind: HandleKind, handle: str) -> UUID:
    """The id of the claim on a normalised handle."""
    return uuid5(HANDLE_NAMESPACE, f"{kind.value}:{handle}")


class HandleClaim(Aggregate):
    """One account's claim on a unique handle; it exists once per handle, forever."""

    class_version = 1

    class Event(Aggregate.Event):
        class_version = 1

    class Claimed(Event, Aggregate.Created):
        class_version = 1
        kind: str
        handle: str
        user_id: UUID

        def apply(self, aggregate: "HandleClaim") -> None:
            aggregate.kind = HandleKind(self.kind)
            aggregate.handle = self.handle
            aggregate.user_id = self.user_id

    def __init__(self) -> None:
        self.kind = HandleKind.USERNAME
        self.handle = ""
        self.user_id = UUID(int=0)

    @classmethod
    def claim(cls, kind: HandleKind, handle: str, user_id: UUID) -> Self:
        """Claim a normalised handle for a user; its id is `claim_id(kind, handle)`."""
        return cls._create(
            cls.Claimed,
            id=claim_id(kind, handle),
            kind=kind.value,
            handle=handle,
            user_id=user_id,
        )
