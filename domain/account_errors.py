"""Errors a user can cause with accounts and access, each with a stable machine code.

They subclass `domain.errors.DomainError`, so every service answers them the same way
as chat errors: the `code` for machines, the `message` for people.
"""

from domain.errors import DomainError


class InvalidUsername(DomainError):
    """A username must be 3-32 characters of a-z, 0-9, `_` and `.` (case is folded)."""

    code = "invalid_username"
    default_message = "a username has 3-32 characters: a-z, 0-9, '_' and '.'"


class InvalidPhone(DomainError):
    """A phone number must be in E.164 form: `+`, country code, at most 15 digits."""

    code = "invalid_phone"
    default_message = "a phone number is '+' and 8-15 digits (E.164), e.g. +447700900123"


class WeakPassword(DomainError):
    """The password is shorter than the minimum."""

    code = "weak_password"
    default_message = "a password has at least 8 characters"


class PasswordTooLong(DomainError):
    """The password is longer than the maximum (it bounds the cost of hashing)."""

    code = "password_too_long"
    default_message = "a password has at most 256 characters"


class InvalidProfile(DomainError):
    """A bad display name or about text."""

    code = "invalid_profile"
    default_message = "the profile is invalid"


class InvalidDevice(DomainError):
    """A bad device id or device name."""

    code = "invalid_device"
    default_message = "the device id or name is invalid"


class UsernameTaken(DomainError):
    """Another account has this username."""

    code = "username_taken"
    default_message = "this username is taken"


class PhoneTaken(DomainError):
    """Another account has this phone number."""

    code = "phone_taken"
    default_message = "this phone number belongs to another account"


class InvalidCredentials(DomainError):
    """Unknown account or wrong password: deliberately the same answer for both."""

    code = "invalid_credentials"
    default_message = "wrong username, phone number or password"


class UnknownUser(DomainError):
    """No account has this id, username or phone number."""

    code = "unknown_user"
    default_message = "no such user"


class SelfTarget(DomainError):
    """A user tried to add or block themselves."""

    code = "self_target"
    default_message = "you cannot do this to yourself"


class TooManyContacts(DomainError):
    """The contact list is full."""

    code = "too_many_contacts"
    default_message = "the contact list is full"


class TooManyBlocked(DomainError):
    """The block list is full."""

    code = "too_many_blocked"
    default_message = "the block list is full"


class TooManyDevices(DomainError):
    """The account has its maximum number of devices; remove one first."""

    code = "too_many_devices"
    default_message = "too many devices; remove one first"


class InvalidToken(DomainError):
    """A token that is malformed, forged, of the wrong kind or audience, or revoked."""

    code = "invalid_token"
    default_message = "the token is invalid or revoked"


class TokenExpired(DomainError):
    """A well-formed token past its `exp`: refresh it (access) or log in again (refresh)."""

    code = "token_expired"
    default_message = "the token has expired"


class RateLimited(DomainError):
    """Too many requests of one kind; `retry_after_s` says when one more will be allowed."""

    code = "rate_limited"
    default_message = "too many requests; try again later"

    def __init__(self, retry_after_s: float, message: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message or f"too many requests; retry after {retry_after_s:.1f}s")
