"""Old envelopes read by current code: the domain's upcasters applied to a payload.

The relay publishes events read through the store's mapper, which upcasts them, so an
envelope carries the event class's `class_version` of the code that published it. After
an event class moves to version n+1 (with `upcast_vn_vn+1` on the class, the
eventsourcing convention), a replay still meets envelopes published at version n.
`upcast_envelope` runs the class's upcasters on their payload, so projections only ever
see the current version.

The upcasters get the envelope's JSON payload (UUIDs as strings, bytes as base64), not
the stored state the library hands them: they must only add, rename or default fields,
which is what upcasters do (docs/replay.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from domain.chat import Chat
from infra.log_envelope import Envelope, EnvelopeError


def current_version(event_type: str) -> int:
    """The `class_version` of the domain's event class named `event_type` (1 if unknown)."""
    cls: Any = getattr(Chat, event_type, None)
    return int(getattr(cls, "class_version", 1)) if isinstance(cls, type) else 1


def upcast_envelope(envelope: Envelope) -> Envelope:
    """The envelope at its event class's current version (itself if it is already)."""
    target = current_version(envelope.type)
    if envelope.type_version >= target:
        return envelope
    cls: Any = getattr(Chat, envelope.type)
    state = dict(envelope.payload)
    for version in range(envelope.type_version, target):
        upcast = getattr(cls, f"upcast_v{version}_v{version + 1}", None)
        if upcast is None:
            raise EnvelopeError(
                f"{envelope.type} v{version} has no upcast_v{version}_v{version + 1}"
            )
        upcast(state)
    return replace(envelope, type_version=target, payload=state)
