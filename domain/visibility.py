"""Who may see what of whom: last seen, typing, receipts, and whether a message arrives.

The rules the gateway, the delivery workers and the queries call, on `Privacy` values
(what one user's account says about privacy). Pure functions, no I/O.

- A block works both ways for presence: if either user blocked the other, neither
  sees the other's last seen (or online status), typing or read receipts.
- A blocked user's messages are not delivered to the blocker (they are still stored;
  the sender is not told). The blocker cannot message the blocked user in a direct chat
  until they unblock them.
- Last seen is shown by EVERYONE to anyone, by CONTACTS only to users in the owner's
  contacts, by NOBODY to no one; and it is reciprocal, as in the seed's app: you see
  someone's last seen only if your own setting would show yours to them. So hiding
  your last seen (NOBODY) hides everyone's from you.
- Everyone always sees their own.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID


class LastSeenPrivacy(StrEnum):
    """Who may see when a user was last online."""

    EVERYONE = "EVERYONE"
    CONTACTS = "CONTACTS"
    NOBODY = "NOBODY"


@dataclass(frozen=True, slots=True)
class Privacy:
    """What one user's account says about who may see them."""

    user_id: UUID
    last_seen: LastSeenPrivacy = LastSeenPrivacy.EVERYONE
    contacts: frozenset[UUID] = field(default_factory=frozenset)
    blocked: frozenset[UUID] = field(default_factory=frozenset)

    def has_blocked(self, other: UUID) -> bool:
        return other in self.blocked


def blocked_either_way(a: Privacy, b: Privacy) -> bool:
    """Whether either of the two users blocked the other."""
    return a.has_blocked(b.user_id) or b.has_blocked(a.user_id)


def _shares_last_seen(owner: Privacy, viewer: Privacy) -> bool:
    """Whether the owner's own setting lets the viewer see their last seen."""
    if owner.last_seen == LastSeenPrivacy.EVERYONE:
        return True
    if owner.last_seen == LastSeenPrivacy.CONTACTS:
        return viewer.user_id in owner.contacts
    return False


def can_see_last_seen(viewer: Privacy, owner: Privacy) -> bool:
    """Whether `viewer` may see `owner`'s last seen and online status."""
    if viewer.user_id == owner.user_id:
        return True
    if blocked_either_way(viewer, owner):
        return False
    return _shares_last_seen(owner, viewer) and _shares_last_seen(viewer, owner)


def can_see_typing(viewer: Privacy, typist: Privacy) -> bool:
    """Whether `viewer` is shown that `typist` is typing."""
    if viewer.user_id == typist.user_id:
        return False
    return not blocked_either_way(viewer, typist)


def can_see_receipts(viewer: Privacy, reader: Privacy) -> bool:
    """Whether `viewer` (a sender) is shown `reader`'s delivered and read receipts."""
    if viewer.user_id == reader.user_id:
        return True
    return not blocked_either_way(viewer, reader)


def is_delivered(sender: Privacy, recipient: Privacy) -> bool:
    """Whether a message from `sender` is delivered to `recipient` (1:1 chats and groups)."""
    return not recipient.has_blocked(sender.user_id)


def can_send_direct(sender: Privacy, recipient: Privacy) -> bool:
    """Whether `sender` may send in their direct chat with `recipient`.

    False only when the sender blocked the recipient (unblock first). A blocked sender
    may send, so that they cannot tell they were blocked; `is_delivered` drops it.
    """
    return not sender.has_blocked(recipient.user_id)
