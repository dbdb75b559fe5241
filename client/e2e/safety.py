"""Safety numbers: what two users compare, out of band, to know no one is in the middle.

Each side's half is SHA-512 iterated 5,200 times over (version, identity key, user id),
cut to 30 digits; the number is the two halves, the lower user id's first, so both
users see the same 60 digits (12 groups of 5). A user with several devices has one
half per identity key: the half is computed over the sorted identity keys of all of
their devices, so a new or changed device changes the number (docs/e2e.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

VERSION = b"\x00\x00"
ITERATIONS = 5200


def _half(user_id: str, identity_keys: Iterable[bytes]) -> str:
    keys = b"".join(sorted(identity_keys))
    digest = VERSION + keys + user_id.encode()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + keys).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def safety_number(
    user_a: str, keys_a: Iterable[bytes], user_b: str, keys_b: Iterable[bytes]
) -> str:
    """The 60-digit safety number of two users, in groups of five."""
    halves = sorted([(user_a, _half(user_a, keys_a)), (user_b, _half(user_b, keys_b))])
    digits = halves[0][1] + halves[1][1]
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))
