"""Errors a user can cause in the chat domain, each with a stable machine code."""

from typing import ClassVar


class DomainError(Exception):
    """A chat rule was broken: `code` is stable for machines, `message` is for people."""

    code: ClassVar[str] = "domain_error"
    default_message: ClassVar[str] = "the request breaks a rule of the chat"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class NotMember(DomainError):
    """The user is not a current member of the chat."""

    code = "not_member"
    default_message = "not a member of this chat"


class Blocked(DomainError):
    """The sender blocked the other user of this 1:1 chat: unblock them to write."""

    code = "blocked"
    default_message = "you blocked this user; unblock them to send them messages"


class NotAdmin(DomainError):
    """Only a group admin may do this."""

    code = "not_admin"
    default_message = "only a group admin may do this"


class GroupFull(DomainError):
    """The group already has its maximum number of members."""

    code = "group_full"
    default_message = "the group is full"


class TooLarge(DomainError):
    """The message body is larger than the allowed size."""

    code = "too_large"
    default_message = "the message is too large"


class UnknownChat(DomainError):
    """No chat exists with the given id (raised by command handlers)."""

    code = "unknown_chat"
    default_message = "no such chat"


class InvalidSeq(DomainError):
    """A seq beyond the chat's last seq, or below zero."""

    code = "invalid_seq"
    default_message = "no such message seq in this chat"


class InvalidBody(DomainError):
    """An empty body, an unknown kind, bad UTF-8, a bad media ref or bad client ids."""

    code = "invalid_body"
    default_message = "the message is malformed"


class InvalidGroup(DomainError):
    """A bad group name or member list, or a direct chat with oneself."""

    code = "invalid_group"
    default_message = "the group definition is invalid"


class LastAdmin(DomainError):
    """The only admin of a group cannot demote themselves."""

    code = "last_admin"
    default_message = "the only admin cannot step down; promote someone first"


class NotDirect(DomainError):
    """A command for 1:1 chats was sent to a group."""

    code = "not_direct"
    default_message = "this is not a direct chat"


class NotGroup(DomainError):
    """A group-only command was sent to a 1:1 chat."""

    code = "not_group"
    default_message = "this is not a group chat"


class UnknownMessage(DomainError):
    """An action names a seq that is no message of the chat it can still act on."""

    code = "unknown_message"
    default_message = "no such message in this chat (or too old to act on)"


class NotSender(DomainError):
    """Only the message's sender (or, to delete in a group, an admin) may do this."""

    code = "not_sender"
    default_message = "only the sender of this message may do this"


class NotEditable(DomainError):
    """Only text messages can be edited."""

    code = "not_editable"
    default_message = "only a text message can be edited"


class TooLate(DomainError):
    """The window for editing or deleting this message has passed."""

    code = "too_late"
    default_message = "the time to change this message has passed"


class MessageDeleted(DomainError):
    """The message was deleted for everyone: it cannot be edited, reacted to or deleted."""

    code = "message_deleted"
    default_message = "this message was deleted"


class InvalidTimer(DomainError):
    """A disappearing-messages timer the chat does not offer."""

    code = "invalid_timer"
    default_message = "the timer must be one of the chat's choices"


class InvalidReaction(DomainError):
    """A reaction is one emoji (or empty, to remove one's reaction)."""

    code = "invalid_reaction"
    default_message = "a reaction is a single emoji"
