"""Encrypted sends: per-device envelopes, checked against the recipients' device lists.

A `send` of `kind: ciphertext` either carries one `body` (a group message encrypted
once with a sender key) or `envelopes`, `{user id: {device id: base64 ciphertext}}`,
with `device_lists`, `{user id: version}`: the device-list versions the sender
encrypted for (`GET /v1/users/{id}/devices`). The gateway never reads a ciphertext; it
checks that the envelopes name exactly the devices each named user has now (the
sending device excepted), and for a send `to` a user, that the peer is named and so is
the sender whenever they have other devices. Otherwise the send is refused with
`stale_devices` and every named user's current list, so the client fetches the keys it
lacks and sends again with the same `local_id`. The body stored is
`projections.message_view.envelopes_body`; each device is shown only its own envelope.

A device added between this check and the commit misses that one message (its sender
learns of it at the next send): the check is a read, not a lock, on the hot path.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from commands.gateway.protocol import ClientFrame, ProtocolError
from projections.key_store import device_lists
from projections.message_view import ENVELOPES_PREFIX, envelopes_body

MAX_ENVELOPE_USERS = 2
"""Per-device envelopes are for 1:1 chats (the peer and the sender's own devices);
groups send one body encrypted with a sender key."""
MAX_DEVICES_PER_USER = 16


def _parse(frame: ClientFrame) -> tuple[dict[str, dict[str, str]], dict[UUID, int]]:
    def bad(message: str) -> ProtocolError:
        return ProtocolError("bad_frame", message, frame.request_id)

    envelopes, versions = frame.fields.get("envelopes"), frame.fields.get("device_lists")
    if frame.fields.get("kind") != "ciphertext" or frame.fields.get("body") is not None:
        raise bad("`envelopes` go with `kind: ciphertext` and no `body` or `text`")
    if frame.fields.get("text") is not None:
        raise bad("`envelopes` go with `kind: ciphertext` and no `body` or `text`")
    if not isinstance(envelopes, dict) or not 0 < len(envelopes) <= MAX_ENVELOPE_USERS:
        raise bad("`envelopes` maps 1-2 user ids to {device id: base64 ciphertext}")
    if not isinstance(versions, dict) or set(versions) != set(envelopes):
        raise bad("`device_lists` maps each user id of `envelopes` to a list version")
    parsed: dict[UUID, int] = {}
    for user, by_device in envelopes.items():
        try:
            user_id = UUID(user)
        except ValueError:
            raise bad("`envelopes` keys are user ids") from None
        version = versions[user]
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise bad("`device_lists` values are versions (integers >= 0)")
        if not isinstance(by_device, dict) or len(by_device) > MAX_DEVICES_PER_USER:
            raise bad(f"each user's envelopes map at most {MAX_DEVICES_PER_USER} device ids")
        for _device, ciphertext in by_device.items():
            if not isinstance(ciphertext, str) or not ciphertext:
                raise bad("an envelope is base64 text")
            try:
                base64.b64decode(ciphertext.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error):
                raise ProtocolError(
                    "invalid_body", "an envelope is not base64", frame.request_id
                ) from None
        parsed[user_id] = version
    if not any(envelopes.values()):
        raise ProtocolError("invalid_body", "the envelopes are for no device", frame.request_id)
    return envelopes, parsed


async def checked_envelopes(
    pool: AsyncConnectionPool[Any],
    frame: ClientFrame,
    actor: UUID,
    device_id: str,
    peer: UUID | None,
) -> str:
    """The base64 body to store for an encrypted send with envelopes, or `stale_devices`
    (with each named user's current device list) when they name the wrong devices."""
    envelopes, versions = _parse(frame)
    named = set(versions)
    wanted = named | ({peer, actor} if peer is not None else set())
    async with pool.connection() as conn:
        current = await device_lists(conn, list(wanted))
    stale = False
    for user in wanted:
        expected = set(current[user].devices) - ({device_id} if user == actor else set())
        given = envelopes.get(str(user))
        if given is None:
            stale = stale or bool(expected)  # a peer, or our own other devices, left out
        elif set(given) != expected or versions[user] != current[user].version:
            stale = True
    if stale:
        raise ProtocolError(
            "stale_devices",
            "the device lists changed: fetch them and send again with the same local_id",
            frame.request_id,
            {
                str(user): {"version": lists.version, "device_ids": sorted(lists.devices)}
                for user, lists in current.items()
            },
        )
    return base64.b64encode(envelopes_body(envelopes)).decode("ascii")


def refuse_forged_envelopes(frame: ClientFrame, body: str) -> None:
    """A plain `body` may not pass for a set of envelopes (`invalid_body`)."""
    if frame.fields.get("kind") != "ciphertext" or not body:
        return
    if base64.b64decode(body).startswith(ENVELOPES_PREFIX):
        raise ProtocolError("invalid_body", "a body may not start like envelopes", frame.request_id)
