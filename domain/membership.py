"""Membership history: the seq intervals during which a user belonged to a chat.

An interval `(after, until)` means the user receives messages with
`after < seq <= until`; `until` is None while the user is still a member.
"""

Interval = tuple[int, int | None]


def joined(history: tuple[Interval, ...], last_seq: int) -> tuple[Interval, ...]:
    """History after the user joins when the chat's last seq is `last_seq`."""
    if history and history[-1][1] == last_seq:
        # Left and came back with no message in between: one unbroken interval.
        return (*history[:-1], (history[-1][0], None))
    return (*history, (last_seq, None))


def left(history: tuple[Interval, ...], last_seq: int) -> tuple[Interval, ...]:
    """History after the user leaves when the chat's last seq is `last_seq`."""
    after, until = history[-1]
    if until is not None:
        return history
    if after == last_seq:
        # Joined and left with no message in between: nothing to remember.
        return history[:-1]
    return (*history[:-1], (after, last_seq))


def was_member(history: tuple[Interval, ...], seq: int) -> bool:
    """Whether the user belonged to the chat when message `seq` was sent."""
    return any(after < seq and (until is None or seq <= until) for after, until in history)
