"""Each member's place for a chat in their chat list: the score of `parley:user:<id>:chats`.

A member's score for a chat is the time (ms) of the chat's latest event that counts as
activity (any but a receipt) after which they were a member: the chat's last activity
while they are in it, and where it stood when they left once they are not. That is a
function of the log alone, so a replay, whatever its batches, writes what the live
workers wrote (`parley replay rebuild cache --verify` compares them key by key).

A batch records, per chat, the times of its activity and the membership changes among
them (`ChatActivity.add`); once PostgreSQL says who the members are after the batch,
`ChatActivity.scores` walks back from there through those changes. Members the batch
did not change were members throughout it and take its latest time; a member removed in
the same batch as a message before the removal still takes that message's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.log_envelope import Envelope

JOINS = frozenset({"DirectChatOpened", "GroupCreated", "MemberAdded"})
LEAVES = frozenset({"MemberRemoved", "MemberLeft"})


def membership_change(e: Envelope) -> tuple[bool, list[str]] | None:
    """(whether they are members after it, whom) for an event that changes membership."""
    if e.type in ("DirectChatOpened", "GroupCreated"):
        return True, [str(user) for user in e.payload["members"]]
    if e.type in JOINS:
        return True, [str(e.payload["user_id"])]
    if e.type in LEAVES:
        return False, [str(e.payload["user_id"])]
    return None


@dataclass
class ChatActivity:
    """One chat's activity in a batch, in log order."""

    times: list[float] = field(default_factory=list)  # ms, of each event that counts
    changes: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    """user -> (index in `times` of an event changing their membership, member after it)"""

    def add(self, e: Envelope) -> None:
        """An event that counts as activity (not a receipt)."""
        self.times.append(e.timestamp.timestamp() * 1000)
        change = membership_change(e)
        if change is not None:
            member, users = change
            for user in users:
                self.changes.setdefault(user, []).append((len(self.times) - 1, member))

    def scores(self, members_after: list[str]) -> dict[float, list[str]]:
        """score -> the users to give it (ZADD GT), from the members after the batch."""
        top = max(self.times)
        if not self.changes:  # the usual batch: the same members throughout
            return {top: members_after}
        out: dict[float, list[str]] = {}
        unchanged = [user for user in members_after if user not in self.changes]
        if unchanged:
            out[top] = unchanged
        after = set(members_after)
        for user, marks in self.changes.items():
            best = self._while_member(user in after, marks)
            if best is not None:
                out.setdefault(best, []).append(user)
        return out

    def _while_member(self, member: bool, marks: list[tuple[int, bool]]) -> float | None:
        """The latest time among the events after which the user was a member, walking
        back from `member` (their state after the batch) through their changes."""
        best: float | None = None
        end = len(self.times)
        for index, joined in reversed(marks):
            if member:  # a member after each event from this change to `end`
                latest = max(self.times[index:end])
                best = latest if best is None else max(best, latest)
            member, end = not joined, index
        if member and end > 0:
            latest = max(self.times[:end])
            best = latest if best is None else max(best, latest)
        return best
