"""The versioned JSON envelope of every event published to Kafka `parley.events`.

One record per stored event: key = the chat id as UTF-8 text, value = this envelope.
The layout is documented field by field in docs/log.md; `ENVELOPE_VERSION` changes only
when a field changes meaning or disappears (adding a field is not a new version).
Consumers decode with `decode_envelope` and deduplicate by `event_id`, which is the
same every time the relay publishes the same stored event.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha1
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol

from infra.timestamps import utc_iso

ENVELOPE_VERSION = 1

EVENT_ID_NAMESPACE = UUID("5b0e7c2a-3f0d-4f6e-9a51-7d2b1f0c9e34")
"""Namespace of the uuid5 event ids; never change it (ids would change)."""

_NOT_PAYLOAD = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})
"""Header fields, and the library's Python path of the aggregate class (on creations)."""


class EnvelopeError(ValueError):
    """A record on `parley.events` that is not an envelope this code can read."""

    code = "bad_envelope"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One published event, as a consumer sees it (see docs/log.md for each field)."""

    v: int
    event_id: UUID
    type: str
    type_version: int
    chat_id: UUID
    seq: int | None
    aggregate_id: UUID
    aggregate_version: int
    position: int
    timestamp: datetime
    payload: Mapping[str, Any]


def event_id_for(aggregate_id: UUID, aggregate_version: int) -> UUID:
    """The stable id of the event at `aggregate_version` of an aggregate: the uuid5 of
    "<aggregate id>:<version>" in `EVENT_ID_NAMESPACE`."""
    return UUID(_event_id_text(aggregate_id, aggregate_version))


def _event_id_text(aggregate_id: UUID, aggregate_version: int) -> str:
    """`event_id_for` as text, computed as RFC 4122 defines uuid5 (SHA-1 of the
    namespace and the name, version and variant bits set): `uuid.uuid5` builds the
    UUID with Python arithmetic, a quarter of an envelope's cost."""
    digest = sha1(_NAMESPACE_BYTES + f"{aggregate_id}:{aggregate_version}".encode()).digest()
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def _timestamp(moment: datetime) -> datetime | str:
    """What the envelope's `timestamp` is given: orjson writes a UTC datetime as
    `utc_iso` does, except that it leaves out a zero fraction of a second."""
    if moment.tzinfo is UTC and moment.microsecond:
        return moment  # written by orjson (`OPT_UTC_Z`), without strftime
    return utc_iso(moment)


def encode_event(event: DomainEventProtocol[UUID], position: int) -> tuple[bytes, bytes]:
    """The Kafka (key, value) of a stored event read back at log `position`.

    `event` must come from the store's mapper (`store.mapper.to_domain_event`), so
    that upcasting has made it the current version of its class.
    """
    return encode_fields(type(event), vars(event), position)


def encode_fields(cls: type, fields: Mapping[str, Any], position: int) -> tuple[bytes, bytes]:
    """The Kafka (key, value) of an event of class `cls` with the stored `fields` (its
    `vars`, content sealed as the store keeps it), at log `position`.

    The processor writes an event it has just saved this way, from the domain event and
    the sealed state the mapper made for it, without reading the stored event back
    (`BodySeal.stored_fields`): the same envelope as `encode_event` of the stored one.
    """
    chat_id = fields["originator_id"]
    version = fields["originator_version"]
    envelope = {
        "v": ENVELOPE_VERSION,
        "event_id": _event_id_text(chat_id, version),
        "type": cls.__name__,
        "type_version": getattr(cls, "class_version", 1),
        "chat_id": chat_id,
        "seq": fields.get("seq") if cls.__name__ == "MessageSent" else None,
        "aggregate_id": chat_id,
        "aggregate_version": version,
        "position": position,
        "timestamp": _timestamp(fields["timestamp"]),
        "payload": _payload(fields),
    }
    return str(chat_id).encode(), orjson.dumps(
        envelope, default=_json_default, option=orjson.OPT_UTC_Z
    )


def event_payload(event: DomainEventProtocol[UUID]) -> dict[str, Any]:
    """An event's own fields: the envelope's `payload` (values as the event holds them)."""
    return _payload(vars(event))


def _payload(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in _NOT_PAYLOAD}


def decode_envelope(raw: bytes) -> Envelope:
    """Read one `parley.events` record value; `EnvelopeError` if it is not one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EnvelopeError("not a JSON object")
    version = data.get("v")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {version!r}")
    try:
        seq = data["seq"]
        return Envelope(
            v=version,
            event_id=UUID(data["event_id"]),
            type=str(data["type"]),
            type_version=int(data["type_version"]),
            chat_id=UUID(data["chat_id"]),
            seq=None if seq is None else int(seq),
            aggregate_id=UUID(data["aggregate_id"]),
            aggregate_version=int(data["aggregate_version"]),
            position=int(data["position"]),
            timestamp=datetime.fromisoformat(data["timestamp"]),
            payload=dict(data["payload"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EnvelopeError(f"malformed envelope: {exc!r}") from exc


def _json_default(value: object) -> object:
    """What orjson cannot write by itself: bytes (base64 text) and sets (sorted lists)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"cannot put {type(value).__name__} in an envelope")
