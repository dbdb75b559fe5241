"""What members do with a message once it is sent: reply, react, edit, delete for everyone.

Each action is itself a message of the chat, on the chat's seq, whose `kind` says what it
does and whose `ref` names the seq it acts on (a reply is a content message with a
`ref`). A client that does not know a kind skips it; sync by seq carries actions like any
message. Here: the facts the chat keeps of its recent messages to decide actions, the
quote a reply carries, and the rule of a reaction's emoji.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from domain.errors import InvalidReaction

ACTION_MEMORY = 1_000
"""How many of a chat's latest messages (actions not counted) can be acted on.

Replies, reactions, edits and deletes name a message the chat remembers: its sender,
time, kind, a short excerpt and whether it was deleted, about 150 bytes each. The
bound keeps the chat's state and snapshots the same size however long the chat runs;
an older message answers `unknown_message`. A busy group sends 1,000 messages in
well over the 15 minutes of the edit window, so only deleting (2 days) and reacting to
or quoting an older message are refused by it.
"""

EXCERPT_CHARS = 100
"""A reply's quote carries at most this many characters of the quoted text."""

MAX_REACTION_CODEPOINTS = 16


@dataclass(slots=True)
class Remembered:
    """What the chat keeps of one recent message to decide the actions on it.

    `expires_at_ms`: when a message sent under a disappearing-messages timer is gone
    (None: never); from then on it is treated as deleted, though no event says so."""

    sender: UUID
    sent_at_ms: int
    kind: str
    excerpt: str
    deleted: bool = False
    expires_at_ms: int | None = None

    def plain(self) -> list[Any]:
        return [
            self.sender,
            self.sent_at_ms,
            self.kind,
            self.excerpt,
            self.deleted,
            self.expires_at_ms,
        ]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> Remembered:
        """The inverse of `plain`; a snapshot from before timers has no expiry."""
        sender, sent_at_ms, kind, excerpt, deleted, *rest = plain
        return cls(sender, sent_at_ms, kind, excerpt, deleted, rest[0] if rest else None)

    def gone(self, now_ms: int) -> bool:
        """Deleted for everyone, or disappeared (its time was up at `now_ms`)."""
        return self.deleted or (self.expires_at_ms is not None and now_ms >= self.expires_at_ms)

    def quote(self, seq: int, now_ms: int) -> dict[str, Any]:
        """The quote a reply to this message carries: enough to show it without fetching."""
        if self.gone(now_ms):
            return {"seq": seq, "deleted": True}
        return {"seq": seq, "sender": str(self.sender), "kind": self.kind, "excerpt": self.excerpt}


def excerpt_of(kind: str, body: bytes) -> str:
    """The start of a text message or a media caption; nothing of a ciphertext."""
    if kind == "ciphertext":
        return ""
    return body.decode("utf-8", "replace")[:EXCERPT_CHARS]


# Emoji: a pictograph (with its variation selector and skin tone), a ZWJ sequence of
# them, a flag (two regional indicators or a tag sequence), or a keycap. Python's
# `unicodedata` has no Emoji property, so the pictographic blocks are named here.
_PICTOGRAPHIC = (
    (0x00A9, 0x00A9),
    (0x00AE, 0x00AE),
    (0x203C, 0x203C),
    (0x2049, 0x2049),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2194, 0x21AA),
    (0x231A, 0x23FF),
    (0x24C2, 0x24C2),
    (0x25AA, 0x25FE),
    (0x2600, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B55),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3299),
    (0x1F000, 0x1F1E5),
    (0x1F200, 0x1FAFF),
)
_ZWJ, _VS16, _KEYCAP, _TAG_END = 0x200D, 0xFE0F, 0x20E3, 0xE007F
_KEYCAP_BASES = frozenset("0123456789#*")
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_REGIONAL = range(0x1F1E6, 0x1F200)
_TAGS = range(0xE0020, 0xE007F)


def _pictographic(code: int) -> bool:
    return any(low <= code <= high for low, high in _PICTOGRAPHIC) and code not in _SKIN_TONES


def _is_emoji(codes: list[int]) -> bool:
    if len(codes) == 2 and all(c in _REGIONAL for c in codes):
        return True  # a flag
    if chr(codes[0]) in _KEYCAP_BASES and codes[-1] == _KEYCAP:
        return codes[1:] in ([_KEYCAP], [_VS16, _KEYCAP])
    if codes[0] == 0x1F3F4 and len(codes) > 2 and codes[-1] == _TAG_END:
        return all(c in _TAGS for c in codes[1:-1])  # a subdivision flag
    position = 0
    while True:  # pictograph (VS16)? (skin tone)? joined by ZWJ
        if position >= len(codes) or not _pictographic(codes[position]):
            return False
        position += 1
        if position < len(codes) and codes[position] == _VS16:
            position += 1
        if position < len(codes) and codes[position] in _SKIN_TONES:
            position += 1
        if position == len(codes):
            return True
        if codes[position] != _ZWJ:
            return False
        position += 1


def validate_reaction(emoji: str) -> str:
    """The reaction, if it is one emoji grapheme, or "" (remove one's reaction)."""
    if emoji == "":
        return emoji
    emoji = unicodedata.normalize("NFC", emoji)
    codes = [ord(c) for c in emoji]
    if len(codes) > MAX_REACTION_CODEPOINTS or not _is_emoji(codes):
        raise InvalidReaction()
    return emoji
