"""Message content sealed in the event log, each part under a random key of its own, so
erasing the key (`infra.message_keys`) erases the content for good: crypto-shredding.

The domain stays in plaintext in memory; content is sealed where chat events are
stored and opened where they are read back:

- stored: `ChatStore.save` has `BodySeal.prepare` make the keys of the chats' pending
  events, which the save's one statement stores in the events' own transaction (an
  in-memory store puts them first), and `SealingMapper` seals with them. An event
  that needs a key nobody prepared is refused (`SealError`), so no save path can store
  plaintext by mistake;
- loaded: `UnsealingEventStore` opens a chat's events and snapshots, one key lookup
  per load; the relay publishes what is stored, so a `parley.events` envelope carries
  the sealed content and the key ids (`sealed`), and its consumers open a batch with
  one lookup (`open_payload`).

What is sealed, under which message's key: a text, media or ciphertext message's
`body` and its media's `thumbnail` (its own seq; a media message always has a key, so
the key table knows which messages carry an object); an edit's or a reaction's `body`
(the seq it acts on); a reply's `quote.excerpt` (the seq it quotes); in a chat
snapshot, the excerpt kept of each recent message (that message's seq, reusing one of
its keys). Metadata stays plain: kinds, senders, seqs, the media's id, type and size.

Opened without its key (erased), a part reads as a tombstone, never an error: an
empty body, no thumbnail, a quote `{seq, deleted: true}`, a recent message deleted.

AES-256-GCM (`cryptography`), a random 96-bit nonce per part; the associated data
binds each part to its chat, seq and field, so a sealed part moved elsewhere does
not open.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import EventStore, Mapper, StoredEvent, Transcoder

from domain.chat import Chat
from infra.log_envelope import Envelope
from infra.message_keys import MemoryMessageKeys, MessageKey, MessageKeys

log = logging.getLogger("parley.seal")

KEY_BYTES = 32
NONCE_BYTES = 12

SEALED = "sealed"
"""The field naming the sealed parts and their key ids: {"body": id, "quote": id} on a
message, {"recent": {seq: id}} on a snapshot."""
BODY, QUOTE, RECENT = "body", "quote", "recent"

CONTENT_KINDS = frozenset({"text", "media", "ciphertext"})
KEYED_BY_REF = frozenset({"edit", "reaction"})
"""Actions whose body is content of the message they act on (a delete's is empty)."""


class SealError(RuntimeError):
    """A chat event with content reached the mapper without its keys prepared."""


# The cipher


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """`plaintext` sealed under `key`: nonce, then ciphertext and tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes | None, sealed: bytes, aad: bytes) -> bytes | None:
    """The plaintext, or None if the key is erased (or the part does not open)."""
    if key is None:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        log.error("event=seal_not_opened length=%d", len(sealed))
        return None


def _aad(chat_id: UUID, seq: int, field: str) -> bytes:
    return f"parley:{chat_id}:{seq}:{field}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def new_key(
    chat_id: UUID, seq: int, expires_at: datetime | None = None, media_id: str | None = None
) -> MessageKey:
    return MessageKey(uuid4(), chat_id, seq, os.urandom(KEY_BYTES), expires_at, media_id)


# A message: the event's state (body as bytes) or an envelope's payload (body as base64)


def key_seqs(state: Mapping[str, Any]) -> dict[str, int]:
    """The parts of a `MessageSent` state that are sealed, and the seq each one's key
    belongs to."""
    kind, seq = state["kind"], state["seq"]
    parts: dict[str, int] = {}
    if kind in CONTENT_KINDS:
        parts[BODY] = seq
    elif kind in KEYED_BY_REF and state["body"] and state.get("ref") is not None:
        parts[BODY] = state["ref"]
    quote = state.get("quote")
    if quote and quote.get("excerpt") is not None:
        parts[QUOTE] = quote["seq"]
    return parts


def seal_message(
    state: Mapping[str, Any], chat_id: UUID, keys: Mapping[str, MessageKey]
) -> dict[str, Any]:
    """A copy of the state with its parts sealed under `keys` (part -> key)."""
    sealed = dict(state)
    seq = state["seq"]
    names: dict[str, str] = {}
    body_key = keys.get(BODY)
    if body_key is not None:
        sealed["body"] = seal(body_key.key, state["body"], _aad(chat_id, seq, "body"))
        media = state.get("media")
        if media and media.get("thumbnail") is not None:
            thumbnail = seal(
                body_key.key, media["thumbnail"].encode(), _aad(chat_id, seq, "thumbnail")
            )
            sealed["media"] = {**media, "thumbnail": _b64(thumbnail)}
        names[BODY] = str(body_key.key_id)
    quote_key = keys.get(QUOTE)
    if quote_key is not None:
        quote = state["quote"]
        excerpt = seal(quote_key.key, quote["excerpt"].encode(), _aad(chat_id, seq, "quote"))
        sealed["quote"] = {**quote, "excerpt": _b64(excerpt)}
        names[QUOTE] = str(quote_key.key_id)
    if names:
        sealed[SEALED] = names
    return sealed


def sealed_key_ids(state: Mapping[str, Any]) -> list[UUID]:
    """The key ids a message or snapshot state names (none if it is plaintext)."""
    names = state.get(SEALED) or {}
    ids = [UUID(names[part]) for part in (BODY, QUOTE) if part in names]
    ids.extend(UUID(key_id) for key_id in (names.get(RECENT) or {}).values())
    return ids


def open_message(
    state: Mapping[str, Any], chat_id: UUID, keys: Mapping[UUID, bytes]
) -> dict[str, Any]:
    """The state in plaintext (a tombstone of each part whose key is erased)."""
    names = state.get(SEALED)
    opened = {k: v for k, v in state.items() if k != SEALED}
    if not names:
        return opened
    seq = state["seq"]
    if BODY in names:
        key = keys.get(UUID(names[BODY]))
        body = open_sealed(key, state["body"], _aad(chat_id, seq, "body"))
        opened["body"] = b"" if body is None else body
        media = state.get("media")
        if media and media.get("thumbnail") is not None:
            thumbnail = open_sealed(
                key, base64.b64decode(media["thumbnail"]), _aad(chat_id, seq, "thumbnail")
            )
            rest = {k: v for k, v in media.items() if k != "thumbnail"}
            if thumbnail is not None:
                rest["thumbnail"] = thumbnail.decode()
            opened["media"] = rest
    if QUOTE in names:
        quote = state["quote"]
        excerpt = open_sealed(
            keys.get(UUID(names[QUOTE])),
            base64.b64decode(quote["excerpt"]),
            _aad(chat_id, seq, "quote"),
        )
        opened["quote"] = (
            {"seq": quote["seq"], "deleted": True}
            if excerpt is None
            else {**quote, "excerpt": excerpt.decode()}
        )
    return opened


def open_payload(
    payload: Mapping[str, Any], chat_id: UUID, keys: Mapping[UUID, bytes]
) -> Mapping[str, Any]:
    """An envelope's `MessageSent` payload (body in base64) in plaintext."""
    if not payload.get(SEALED):
        return payload
    state = {**payload, "body": base64.b64decode(payload["body"])}
    opened = open_message(state, chat_id, keys)
    opened["body"] = _b64(opened["body"])
    return opened


def open_envelope(envelope: Envelope, keys: Mapping[UUID, bytes]) -> Envelope:
    """A `parley.events` envelope with its sealed content opened (itself if none)."""
    if envelope.type != "MessageSent" or not envelope.payload.get(SEALED):
        return envelope
    return replace(envelope, payload=open_payload(envelope.payload, envelope.chat_id, keys))


def envelope_key_ids(envelopes: Iterable[Envelope]) -> list[UUID]:
    """The keys the sealed messages among `envelopes` name."""
    return [
        key_id for e in envelopes if e.type == "MessageSent" for key_id in sealed_key_ids(e.payload)
    ]


def open_envelopes(envelopes: Sequence[Envelope], keys: MessageKeys) -> list[Envelope]:
    """Envelopes read from the log, opened with one key lookup."""
    wanted = envelope_key_ids(envelopes)
    if not wanted:
        return list(envelopes)
    found = keys.get(wanted)
    return [open_envelope(e, found) for e in envelopes]


# A chat snapshot: the excerpts of the recent messages


def sealed_recent(
    state: Mapping[str, Any], sealed: Mapping[int, tuple[str, str]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A copy of a snapshot's state with each recent excerpt replaced by its sealed form
    (`sealed`: seq -> (key id, sealed excerpt); an excerpt with none is dropped), and the
    seq -> key id of those sealed."""
    names: dict[str, str] = {}
    recent = []
    for seq, sender, sent_at_ms, kind, excerpt, *rest in state.get("_recent", []):
        if excerpt:
            key_id, excerpt = sealed.get(seq, ("", ""))
            if key_id:
                names[str(seq)] = key_id
        recent.append([seq, sender, sent_at_ms, kind, excerpt, *rest])
    return {**state, "_recent": recent}, names


def seal_excerpt(key: MessageKey, chat_id: UUID, seq: int, excerpt: str) -> str:
    """A recent message's excerpt, sealed for a snapshot."""
    return _b64(seal(key.key, excerpt.encode(), _aad(chat_id, seq, "excerpt")))


def open_recent(
    state: Mapping[str, Any], chat_id: UUID, names: Mapping[str, str], keys: Mapping[UUID, bytes]
) -> dict[str, Any]:
    """The snapshot's state with its excerpts opened; one whose key is erased is a
    deleted message."""
    recent = []
    for seq, sender, sent_at_ms, kind, excerpt, deleted, *rest in state.get("_recent", []):
        key_id = names.get(str(seq))
        if key_id is not None:
            opened = open_sealed(
                keys.get(UUID(key_id)), base64.b64decode(excerpt), _aad(chat_id, seq, "excerpt")
            )
            excerpt = "" if opened is None else opened.decode()
            deleted = deleted or opened is None
        recent.append([seq, sender, sent_at_ms, kind, excerpt, deleted, *rest])
    return {**state, "_recent": recent}


# The store's side: keys made before a save, sealing in the mapper, opening on load


class _Prepared(threading.local):
    """What one thread's save prepared (a store may be saved to from several threads)."""

    def __init__(self) -> None:
        self.events: dict[tuple[UUID, int], dict[str, MessageKey]] = {}
        self.snapshots: dict[tuple[UUID, int], dict[int, tuple[str, str]]] = {}
        self.sealed: dict[tuple[UUID, int], dict[str, Any]] = {}
        """The sealed states the last save stored (`stored_fields`), by event."""


EXCERPT_CACHE = 50_000
"""Sealed excerpts kept for the next snapshot of their chat. Sealing the 1,000 excerpts
of a full chat and finding their keys took 40-70 ms of a 120-170 ms snapshot (load
12-15), and between two snapshots of a chat (200 events) most excerpts are unchanged.
About 0.5 KB each: 25 MB, the recent messages of 50 full chats (the busy ones, which
are the ones snapshotted often)."""


class _SealedExcerpts:
    """The last `EXCERPT_CACHE` sealed excerpts, by (chat, seq), least recent dropped.

    A hit needs the same excerpt (an edit changes it). An excerpt sealed under a key
    erased since is harmless to reuse: it does not open, as the message is gone."""

    def __init__(self, size: int = EXCERPT_CACHE) -> None:
        self.size = size
        self._sealed: OrderedDict[tuple[UUID, int], tuple[str, tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, chat_id: UUID, seq: int, excerpt: str) -> tuple[str, str] | None:
        with self._lock:
            hit = self._sealed.get((chat_id, seq))
            if hit is None or hit[0] != excerpt:
                return None
            self._sealed.move_to_end((chat_id, seq))
            return hit[1]

    def put(self, chat_id: UUID, seq: int, excerpt: str, sealed: tuple[str, str]) -> None:
        with self._lock:
            self._sealed[(chat_id, seq)] = (excerpt, sealed)
            self._sealed.move_to_end((chat_id, seq))
            while len(self._sealed) > self.size:
                self._sealed.popitem(last=False)


class BodySeal:
    """The keys of the events (and snapshots) about to be stored, and the key store."""

    def __init__(self, keys: MessageKeys | None = None) -> None:
        self.keys: MessageKeys = keys if keys is not None else MemoryMessageKeys()
        self._prepared = _Prepared()
        self._excerpts = _SealedExcerpts()

    @property
    def _events(self) -> dict[tuple[UUID, int], dict[str, MessageKey]]:
        return self._prepared.events

    @property
    def _snapshots(self) -> dict[tuple[UUID, int], dict[int, tuple[str, str]]]:
        return self._prepared.snapshots

    def prepare(self, aggregates: Iterable[Any], put: bool = True) -> list[MessageKey]:
        """Make the keys of the chats' pending events; store them (one round trip) unless
        `put` is false, when the caller stores them with the events and gets them back."""
        self._events.clear()
        self._prepared.sealed.clear()
        made: list[MessageKey] = []
        for chat in aggregates:
            if not isinstance(chat, Chat):
                continue
            for event in chat.pending_events:
                if not isinstance(event, Chat.MessageSent):
                    continue
                parts = {
                    part: self._key(chat, event, seq) for part, seq in key_seqs(vars(event)).items()
                }
                if parts:
                    self._events[(event.originator_id, event.originator_version)] = parts
                    made.extend(parts.values())
        if put:
            self.keys.put(made)
        return made

    @staticmethod
    def _key(chat: Chat, event: Any, seq: int) -> MessageKey:
        if seq == event.seq:  # the message's own content
            timer_s = event.timer_s if event.kind in CONTENT_KINDS else None
            expires = event.timestamp + timedelta(seconds=timer_s) if timer_s else None
            media_id = event.media.get("media_id") if event.media else None
            return new_key(chat.id, seq, expires, media_id)
        target = chat.recent.get(seq)  # an action on it, or a quote of it: it lasts as long
        expires_ms = target.expires_at_ms if target is not None else None
        return new_key(chat.id, seq, _from_ms(expires_ms))

    def prepare_snapshots(self, snapshots: Iterable[Any]) -> None:
        """Seal the excerpts each snapshot keeps of the chat's recent messages, under a
        key of each message: reused from the last snapshot of the chat where unchanged,
        found (one lookup per snapshot) or, for a message stored before sealing, made.
        A disappeared message's excerpt is left out."""
        self._snapshots.clear()
        now_ms = int(time.time() * 1000)
        for snapshot in snapshots:
            chat_id = snapshot.originator_id
            ready: dict[int, tuple[str, str]] = {}
            wanted: dict[int, tuple[str, int | None]] = {}
            for seq, _, _, _, excerpt, deleted, *rest in snapshot.state.get("_recent", []):
                expires = rest[0] if rest else None
                if not excerpt or deleted or (expires is not None and expires <= now_ms):
                    continue
                hit = self._excerpts.get(chat_id, seq, excerpt)
                if hit is not None:
                    ready[seq] = hit
                else:
                    wanted[seq] = (excerpt, expires)
            found = self.keys.of_messages(chat_id, list(wanted)) if wanted else {}
            made = [
                new_key(chat_id, seq, _from_ms(expires))
                for seq, (_, expires) in wanted.items()
                if seq not in found
            ]
            self.keys.put(made)
            found.update((key.seq, key) for key in made)
            for seq, (excerpt, _) in wanted.items():
                key = found[seq]
                ready[seq] = (str(key.key_id), seal_excerpt(key, chat_id, seq, excerpt))
                self._excerpts.put(chat_id, seq, excerpt, ready[seq])
            self._snapshots[(chat_id, snapshot.originator_version)] = ready

    def sealed_state(self, event: Any) -> dict[str, Any] | None:
        """The state to store for `event`, sealed; None to store it as it is."""
        if isinstance(event, Chat.MessageSent):
            parts = self._events.pop((event.originator_id, event.originator_version), None)
            if parts is None:
                if key_seqs(vars(event)):
                    raise SealError(f"no keys prepared for {event.originator_id}:{event.seq}")
                return None
            state = seal_message(vars(event), event.originator_id, parts)
            self._prepared.sealed[(event.originator_id, event.originator_version)] = state
            return state
        if isinstance(event, Chat.Snapshot):
            ready = self._snapshots.pop((event.originator_id, event.originator_version), None)
            if ready is None:
                raise SealError(f"no keys prepared for a snapshot of {event.originator_id}")
            state, names = sealed_recent(event.state, ready)
            return {**vars(event), "state": state, SEALED: {RECENT: names}}
        return None

    def stored_fields(self, event: Any) -> Mapping[str, Any]:
        """The fields the last save (in this thread) stored for `event`, one of its
        domain events: the sealed state the mapper stored, else the event's own (an
        event with nothing to seal). Never a sealable event's plaintext."""
        sealed = self._prepared.sealed.get((event.originator_id, event.originator_version))
        if sealed is not None:
            return sealed
        if isinstance(event, Chat.MessageSent) and key_seqs(vars(event)):
            raise SealError(f"no sealed state saved for {event.originator_id}:{event.seq}")
        fields: dict[str, Any] = vars(event)
        return fields

    def erase_deleted(self, events: Iterable[Any]) -> None:
        """After a save: erase the keys of the messages its events deleted for everyone.
        A failure is only logged: the workers erase them too when they project the
        delete (`streams.workers`)."""
        deleted = [
            (e.originator_id, e.ref)
            for e in events
            if isinstance(e, Chat.MessageSent) and e.kind == "delete" and e.ref is not None
        ]
        if not deleted:
            return
        try:
            self.keys.erase(deleted)
        except Exception as exc:
            log.warning("event=erase_failed messages=%d error=%s", len(deleted), type(exc).__name__)

    def open_events(self, events: Collection[Any]) -> None:
        """Open, in place, the sealed events and snapshots just read: one key lookup."""
        sealed = [e for e in events if vars(e).get(SEALED) is not None]
        if not sealed:
            return
        keys = self.keys.get([k for e in sealed for k in sealed_key_ids(vars(e))])
        for e in sealed:
            fields = vars(e)
            if isinstance(e, Chat.Snapshot):
                names = fields[SEALED].get(RECENT) or {}
                state = open_recent(fields["state"], e.originator_id, names, keys)
                opened = {k: v for k, v in fields.items() if k != SEALED}
                object.__setattr__(e, "__dict__", {**opened, "state": state})
            else:
                object.__setattr__(e, "__dict__", open_message(fields, e.originator_id, keys))


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class SealingMapper(Mapper[UUID]):
    """The library's mapper, storing chat events with their content sealed. Reading
    gives them back as stored (sealed, with `sealed`): the relay publishes that."""

    def __init__(self, transcoder: Transcoder, seal: BodySeal) -> None:
        super().__init__(transcoder)
        self.seal = seal

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = self.seal.sealed_state(domain_event)
        if state is None:
            return super().to_stored_event(domain_event)
        stand_in = object.__new__(type(domain_event))
        object.__setattr__(stand_in, "__dict__", state)
        return super().to_stored_event(stand_in)


class UnsealingEventStore(EventStore[UUID]):
    """The library's event store, giving a chat's events back opened (the domain holds
    plaintext): one key lookup per read."""

    def __init__(self, mapper: Mapper[UUID], recorder: Any, seal: BodySeal) -> None:
        super().__init__(mapper, recorder)
        self.seal = seal

    def get(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Any:
        events = list(super().get(originator_id, gt=gt, lte=lte, desc=desc, limit=limit))
        self.seal.open_events(events)
        return iter(events)
