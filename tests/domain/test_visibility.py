"""Privacy and blocking rules over every combination of two users' settings."""

import itertools
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.visibility import (
    LastSeenPrivacy,
    Privacy,
    blocked_either_way,
    can_see_last_seen,
    can_see_receipts,
    can_see_typing,
    can_send_direct,
    is_delivered,
)

pytestmark = pytest.mark.unit

A, B = UUID(int=1), UUID(int=2)
OTHERS = [UUID(int=n) for n in range(3, 8)]
EVERYONE, CONTACTS, NOBODY = LastSeenPrivacy


def privacy(user: UUID, other: UUID, last_seen: LastSeenPrivacy, contact: bool, blocks: bool,
            extra_contacts: frozenset[UUID] = frozenset(),
            extra_blocked: frozenset[UUID] = frozenset()) -> Privacy:  # fmt: skip
    """`user`'s privacy as it concerns `other`, plus unrelated third parties."""
    return Privacy(
        user,
        last_seen,
        extra_contacts | ({other} if contact else set()),
        extra_blocked | ({other} if blocks else set()),
    )


STATES = list(itertools.product(LastSeenPrivacy, (False, True), (False, True)))
"""Every (last seen setting, has the other as a contact, has blocked the other)."""


def shows(owner: Privacy, viewer: Privacy) -> bool:
    """The owner's setting alone, as the product describes it."""
    if owner.last_seen is EVERYONE:
        return True
    return owner.last_seen is CONTACTS and viewer.user_id in owner.contacts


def check_rules(a: Privacy, b: Privacy) -> None:
    """The rules of `domain.visibility` for two different users, stated one by one."""
    blocked = b.user_id in a.blocked or a.user_id in b.blocked
    assert blocked_either_way(a, b) is blocked

    # Last seen: reciprocal, so symmetric.
    seen = can_see_last_seen(a, b)
    assert seen == can_see_last_seen(b, a)
    if blocked:
        assert not seen, "a block in either direction hides last seen both ways"
    if NOBODY in (a.last_seen, b.last_seen):
        assert not seen, "hiding your last seen hides it and hides others' from you"
    if b.last_seen is CONTACTS and a.user_id not in b.contacts:
        assert not seen, "CONTACTS shows last seen only to the owner's contacts"
    if a.last_seen is CONTACTS and b.user_id not in a.contacts:
        assert not seen, "you see only those you would show yours to"
    if not blocked and shows(b, a) and shows(a, b):
        assert seen, "nothing hides it, so it is shown"

    # Typing and receipts: hidden by a block either way, shown otherwise.
    for rule in (can_see_typing, can_see_receipts):
        assert rule(a, b) is (not blocked)
        assert rule(b, a) is (not blocked)

    # Messages: a blocked sender's messages do not reach the blocker; nothing else matters.
    assert is_delivered(a, b) is (a.user_id not in b.blocked)
    assert is_delivered(b, a) is (b.user_id not in a.blocked)
    assert can_send_direct(a, b) is (b.user_id not in a.blocked)


def test_every_combination_of_two_users() -> None:
    for a_state, b_state in itertools.product(STATES, STATES):
        check_rules(privacy(A, B, *a_state), privacy(B, A, *b_state))


def test_the_rules_in_words() -> None:
    open_a, open_b = Privacy(A), Privacy(B)
    assert can_see_last_seen(open_a, open_b) and can_see_typing(open_a, open_b)
    b_blocks_a = Privacy(B, blocked=frozenset({A}))
    assert not is_delivered(open_a, b_blocks_a)  # A's messages do not reach B
    assert is_delivered(b_blocks_a, open_a)  # B chose to block; B's own messages still go
    assert not can_send_direct(b_blocks_a, open_a)  # ...but B must unblock to message A
    assert not can_see_last_seen(open_a, b_blocks_a)
    assert not can_see_typing(open_a, b_blocks_a)
    assert not can_see_receipts(open_a, b_blocks_a)
    b_contacts_only = Privacy(B, CONTACTS)
    assert not can_see_last_seen(open_a, b_contacts_only)
    assert can_see_last_seen(open_a, Privacy(B, CONTACTS, contacts=frozenset({A})))
    a_hidden = Privacy(A, NOBODY)
    assert not can_see_last_seen(a_hidden, open_b)  # hiding yours hides others' from you
    assert can_see_last_seen(a_hidden, a_hidden)  # but never your own


@given(st.sampled_from(LastSeenPrivacy), st.booleans(), st.booleans())
def test_a_user_and_themselves(last_seen: LastSeenPrivacy, contact: bool, blocks: bool) -> None:
    me = privacy(A, A, last_seen, contact, blocks)
    assert can_see_last_seen(me, me)
    assert can_see_receipts(me, me)
    assert not can_see_typing(me, me)


third_parties = st.frozensets(st.sampled_from(OTHERS))


@given(
    st.sampled_from(STATES),
    st.sampled_from(STATES),
    third_parties,
    third_parties,
    third_parties,
    third_parties,
)
def test_third_parties_change_nothing_between_two_users(
    a_state: tuple[LastSeenPrivacy, bool, bool],
    b_state: tuple[LastSeenPrivacy, bool, bool],
    a_contacts: frozenset[UUID],
    a_blocked: frozenset[UUID],
    b_contacts: frozenset[UUID],
    b_blocked: frozenset[UUID],
) -> None:
    a, b = privacy(A, B, *a_state), privacy(B, A, *b_state)
    a_crowded = privacy(A, B, *a_state, extra_contacts=a_contacts, extra_blocked=a_blocked)
    b_crowded = privacy(B, A, *b_state, extra_contacts=b_contacts, extra_blocked=b_blocked)
    check_rules(a_crowded, b_crowded)
    for rule in (can_see_last_seen, can_see_typing, can_see_receipts, is_delivered,
                 can_send_direct):  # fmt: skip
        assert rule(a_crowded, b_crowded) == rule(a, b)
        assert rule(b_crowded, a_crowded) == rule(b, a)


@given(st.sampled_from(STATES), st.sampled_from(STATES), st.sampled_from(LastSeenPrivacy))
def test_opening_up_never_hides_anything(
    a_state: tuple[LastSeenPrivacy, bool, bool],
    b_state: tuple[LastSeenPrivacy, bool, bool],
    wider: LastSeenPrivacy,
) -> None:
    order = [NOBODY, CONTACTS, EVERYONE]
    a, b = privacy(A, B, *a_state), privacy(B, A, *b_state)
    if order.index(wider) < order.index(a.last_seen):
        return
    opened = Privacy(A, wider, a.contacts, a.blocked)
    assert can_see_last_seen(opened, b) >= can_see_last_seen(a, b)
