"""End-to-end encrypted chats for one device, on top of `ChatClient` (docs/e2e.md).

`SecureChat` keeps this device's key store (encrypted at rest, `keystore`), publishes
its keys, opens a session with every device of a peer and with its own user's other
devices, sends 1:1 messages as per-device envelopes and group messages with sender
keys, and decrypts what arrives. What it decrypted is kept in the key store too: a
ratchet cannot decrypt a message twice.

Every plaintext is a JSON "content" object inside the encryption:

- `{"type": "text", "text": ...}`
- `{"type": "media", "media_id", "key", "sha256_plain", "sha256_cipher", "mime_type",
  "size", "caption"}` (the file encrypted before upload, `client.e2e.media`)
- `{"type": "sender_key", "chat_id", ...}` (a group sender key, `sender_keys`)
- `{"type": "group_reset", "chat_id"}`: make a new sender key for this group (a member left)

A 1:1 `send` that names a stale device list is refused with `stale_devices`; this
client then refreshes its lists (dropping sessions of devices that are gone, noting
changed identity keys) and sends again with the same `local_id`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

from client.chat import Account, Ack, ChatClient, CommandFailed, http_json
from client.e2e.keystore import KeyStore
from client.e2e.media import decrypt_file, encrypt_file
from client.e2e.safety import safety_number
from client.e2e.sender_keys import OwnSenderKey, PeerSenderKey, group_wire
from client.e2e.sessions import Device, Envelope, Session, SessionError, b64, unb64
from client.media import fetch_media, upload_media

SEND_ATTEMPTS = 3
MAX_SESSIONS = 5
"""Sessions kept per device: the current one and those it replaced, for late messages."""


class SecureChat:
    """One device's end-to-end encryption over its `ChatClient`."""

    def __init__(self, chat: ChatClient, store_path: Path, passphrase: str) -> None:
        self.chat = chat
        self.account: Account = chat.account
        self.base = chat.base
        self.path = store_path
        self.store = KeyStore(store_path, passphrase)
        state = self.store.load() or {"device": Device.create().to_json()}
        self.device = Device.from_json(state["device"])
        # "user/device" -> sessions with that device, the one we send with first
        self.sessions: dict[str, list[Session]] = {
            k: [Session.from_json(v) for v in kept] for k, kept in state.get("sessions", {}).items()
        }
        # user id -> {"version", "devices": {device id: identity key b64}}
        self.lists: dict[str, dict[str, Any]] = state.get("lists", {})
        self.own_keys: dict[str, OwnSenderKey] = {
            k: OwnSenderKey.from_json(v) for k, v in state.get("own_keys", {}).items()
        }
        # "chat/user/device/key id" -> sender key
        self.peer_keys: dict[str, PeerSenderKey] = {
            k: PeerSenderKey.from_json(v) for k, v in state.get("peer_keys", {}).items()
        }
        # chat id -> seq -> content (decrypted, or our own)
        self.plain: dict[str, dict[str, dict[str, Any]]] = state.get("plain", {})
        self.failed: dict[str, dict[str, str]] = state.get("failed", {})
        self.identity_changes: list[dict[str, str]] = state.get("identity_changes", [])
        # group chat id -> member user ids this device last gave its sender key to
        self.groups: dict[str, list[str]] = state.get("groups", {})

    # Keys and persistence

    def save(self) -> None:
        self.store.save(
            {
                "device": self.device.to_json(),
                "sessions": {k: [s.to_json() for s in v] for k, v in self.sessions.items()},
                "lists": self.lists,
                "own_keys": {k: v.to_json() for k, v in self.own_keys.items()},
                "peer_keys": {k: v.to_json() for k, v in self.peer_keys.items()},
                "plain": self.plain,
                "failed": self.failed,
                "identity_changes": self.identity_changes,
                "groups": self.groups,
            },
        )

    def _http(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return http_json(method, self.base, path, body, self.account.access_token)

    def publish_keys(self) -> int:
        """Upload identity, signed prekey and the one-time prekeys the server never had;
        refill the pool when it runs low. Returns the keys the server holds."""
        held = int(self._http("GET", "/v1/me/keys")["one_time_prekeys"])
        self.device.refill(held)
        body = self.device.upload_body()
        answer = self._http("PUT", "/v1/me/keys", body)
        self.device.mark_uploaded(body)
        self.save()
        return int(answer["one_time_prekeys"])

    def rotate_signed_prekey(self) -> None:
        self.device.rotate_signed_prekey()
        self.publish_keys()

    def refresh_list(self, user_id: str) -> dict[str, Any]:
        """The user's current device list; sessions of devices gone or re-keyed dropped."""
        answer = self._http("GET", f"/v1/users/{user_id}/devices")
        devices = {d["device_id"]: d["identity_key"] for d in answer["devices"]}
        old = self.lists.get(user_id, {}).get("devices", {})
        for device, key in old.items():
            if devices.get(device) != key:
                self.sessions.pop(f"{user_id}/{device}", None)
                if device in devices:  # same device, new identity: show it to the user
                    self.identity_changes.append({"user_id": user_id, "device_id": device})
        self.lists[user_id] = {"version": answer["version"], "devices": devices}
        return self.lists[user_id]

    def _targets(self, user_id: str) -> list[str]:
        listed = self.lists.get(user_id) or self.refresh_list(user_id)
        devices = sorted(listed["devices"])
        if user_id == self.account.user_id:
            devices = [d for d in devices if d != self.account.device_id]
        return devices

    async def _session(self, user_id: str, device: str) -> Session:
        name = f"{user_id}/{device}"
        if not self.sessions.get(name):
            answer = self._http("POST", f"/v1/users/{user_id}/keys", {"device_ids": [device]})
            bundle = next((b for b in answer["devices"] if b["device_id"] == device), None)
            if bundle is None:
                raise SessionError(f"no keys for device {device}")
            known = self.lists.get(user_id, {}).get("devices", {}).get(device)
            if known is not None and known != bundle["identity_key"]:
                raise SessionError("the bundle's identity key is not the listed one")
            self.sessions[name] = [await self.device.start_session(bundle)]
        return self.sessions[name][0]

    # 1:1

    async def _envelopes(self, peer: str, content: dict[str, Any]) -> dict[str, Any]:
        plaintext = json.dumps(content).encode()
        envelopes: dict[str, dict[str, str]] = {}
        for user in (peer, self.account.user_id):
            envelopes[user] = {}
            for device in self._targets(user):
                session = await self._session(user, device)
                wire = json.loads(await session.encrypt(plaintext))
                wire["sd"] = self.account.device_id  # which of our sessions opens it
                envelopes[user][device] = b64(json.dumps(wire).encode())
        if not envelopes[self.account.user_id]:
            del envelopes[self.account.user_id]
        versions = {user: self.lists[user]["version"] for user in envelopes}
        return {"kind": "ciphertext", "envelopes": envelopes, "device_lists": versions}

    async def send_content(
        self,
        peer: str,
        content: dict[str, Any],
        local_id: str | None = None,
        media_id: str | None = None,
    ) -> Ack:
        """Encrypt `content` for every device of `peer` and our other devices, and send
        it in our 1:1 chat; on `stale_devices`, refresh and send again, same local id.
        `media_id`: the encrypted file the message carries (`send_file`)."""
        local_id = local_id or f"e2e-{uuid.uuid4().hex}"
        for attempt in range(SEND_ATTEMPTS):
            fields = await self._envelopes(peer, content)
            if media_id is not None:
                fields["media"] = {"media_id": media_id}
            self.save()  # the ratchets moved: a crash now must not reuse a message key
            try:
                ack = await self.chat.send_fields(fields, b"", to=peer, local_id=local_id)
            except CommandFailed as exc:
                if exc.code != "stale_devices" or attempt == SEND_ATTEMPTS - 1:
                    raise
                for user in exc.frame.get("devices", {}):
                    self.refresh_list(user)
                continue
            self.plain.setdefault(ack.chat_id, {})[str(ack.seq)] = content
            self.save()
            return ack
        raise AssertionError("unreachable")

    async def send_text(self, peer: str, text: str, local_id: str | None = None) -> Ack:
        return await self.send_content(peer, {"type": "text", "text": text}, local_id)

    async def send_file(self, peer: str, data: bytes, mime_type: str, caption: str = "") -> Ack:
        """Encrypt a file with a fresh key, upload the ciphertext, and send the key and
        hashes inside the encrypted message (`client.e2e.media`)."""
        sealed, info = encrypt_file(data)
        ref = await asyncio.to_thread(
            upload_media, self.base, self.account, sealed, "application/octet-stream", "document"
        )
        content = {
            "type": "media",
            "media_id": ref["media_id"],
            "mime_type": mime_type,
            "caption": caption,
            **info,
        }
        return await self.send_content(peer, content, media_id=ref["media_id"])

    async def open_file(
        self, queries: str, chat_id: str, content: dict[str, Any], position: int | None = None
    ) -> bytes:
        """Download an encrypted file a message carries and decrypt it (`position`: the
        pushed message's, so the download waits for the query side to hold it)."""
        sealed = await asyncio.to_thread(
            fetch_media, queries, self.account, chat_id, content["media_id"], position
        )
        return decrypt_file(sealed, content)

    # Groups

    async def send_group(
        self, chat_id: str, members: list[str], text: str, local_id: str | None = None
    ) -> Ack:
        """Encrypt once with our sender key for the group and send; hand the key first
        to every member device that does not have it (a new key after a member left)."""
        await self._share_sender_key(chat_id, members)
        key = self.own_keys[chat_id]
        content = json.dumps({"type": "text", "text": text}).encode()
        wire = json.loads(
            key.encrypt(chat_id, self.account.user_id, self.account.device_id, content)
        )
        wire["sd"] = self.account.device_id
        body = json.dumps(wire).encode()
        self.save()  # the chain moved: never reuse a step
        fields = {"kind": "ciphertext", "body": b64(body)}
        ack = await self.chat.send_fields(fields, body, chat_id=chat_id, local_id=local_id)
        self.plain.setdefault(chat_id, {})[str(ack.seq)] = {"type": "text", "text": text}
        self.save()
        return ack

    async def share_sender_key(self, chat_id: str, members: list[str]) -> None:
        """Hand our sender key for the group to every member that does not have it yet
        (`send_group` does this first; a client may do it ahead of its first message)."""
        await self._share_sender_key(chat_id, members)
        self.save()

    async def _share_sender_key(self, chat_id: str, members: list[str]) -> None:
        current = sorted(set(members) | {self.account.user_id})
        had = self.groups.get(chat_id)
        if chat_id in self.own_keys and had is not None and set(had) <= set(current):
            new = [m for m in current if m not in had]
        else:  # first message, or someone left: a new key, for the members only
            self.own_keys[chat_id] = OwnSenderKey.new()
            new = current
        distribution = self.own_keys[chat_id].distribution(chat_id)
        for member in new:
            if member != self.account.user_id:  # our other devices get every 1:1 send too
                await self.send_content(member, distribution)
        self.groups[chat_id] = current

    def member_left(self, chat_id: str) -> None:
        """A member left or was removed: our next group message uses a new sender key."""
        self.groups.pop(chat_id, None)
        self.own_keys.pop(chat_id, None)
        self.save()

    # Incoming

    async def read(self) -> None:
        """Decrypt every message held and not yet decrypted: 1:1 first (they carry the
        sender keys), then groups; a message that fails stays in `failed`."""
        pending: list[tuple[str, int, dict[str, Any]]] = []
        for chat_id, state in self.chat.chats.items():
            done = self.plain.get(chat_id, {})
            for seq, message in sorted(state.messages.items()):
                if message.get("kind") != "ciphertext" or str(seq) in done:
                    continue
                if message.get("sender") == self.account.user_id and message.get("body") is None:
                    continue  # our own 1:1 send from another device with no envelope for us
                pending.append((chat_id, seq, message))
        pending.sort(key=lambda item: "kid" in _wire(item[2]))  # envelopes first
        for chat_id, seq, message in pending:
            await self.open_message(chat_id, seq, message)
        self.save()

    async def open_message(
        self, chat_id: str, seq: int, message: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Decrypt one ciphertext message and keep its content (a sender key it carries
        too); None when it does not open (kept in `failed`). The caller saves."""
        try:
            content = await self._open(chat_id, message)
        except SessionError as exc:
            self.failed.setdefault(chat_id, {})[str(seq)] = str(exc)
            return None
        self.failed.get(chat_id, {}).pop(str(seq), None)
        self.plain.setdefault(chat_id, {})[str(seq)] = content
        if content.get("type") == "sender_key":
            sender = message["sender"]
            name = f"{content['chat_id']}/{sender}/{_wire(message).get('sd')}"
            self.peer_keys[f"{name}/{content['key_id']}"] = PeerSenderKey.from_distribution(content)
        return content

    async def _open(self, chat_id: str, message: dict[str, Any]) -> dict[str, Any]:
        wire = _wire(message)
        sender, device = message["sender"], str(wire.get("sd"))
        if "kid" in wire:
            key = self.peer_keys.get(f"{chat_id}/{sender}/{device}/{wire['kid']}")
            if key is None:
                raise SessionError("no sender key for this group message (yet)")
            group_wire(json.dumps(wire).encode())
            raw = key.decrypt(chat_id, sender, device, int(wire["kid"]), wire)
        else:
            envelope = Envelope.decode(json.dumps(wire).encode())
            raw = await self._open_envelope(f"{sender}/{device}", envelope)
        content: dict[str, Any] = json.loads(raw)
        return content

    async def _open_envelope(self, name: str, envelope: Envelope) -> bytes:
        """Decrypt with a session we hold with that device, or a new one its first
        message opens. The session that decrypts becomes the one we send with: when both
        sides started a session at once, both end up sending on the same one."""
        kept = self.sessions.setdefault(name, [])
        for i, session in enumerate(kept):
            try:
                raw = await session.decrypt(envelope)
            except SessionError:
                continue
            kept.insert(0, kept.pop(i))
            return raw
        if envelope.prekey is None:
            raise SessionError("no session with the sending device opens this message")
        session, raw = await self.device.open_prekey_message(envelope)
        kept.insert(0, session)
        del kept[MAX_SESSIONS:]
        self.publish_keys()  # replace the one-time prekey it used
        return raw

    def contents(self, chat_id: str) -> list[dict[str, Any]]:
        """Everything decrypted (or sent from here) in the chat, in seq order."""
        held = self.plain.get(chat_id, {})
        return [held[seq] for seq in sorted(held, key=int)]

    def texts(self, chat_id: str) -> list[str]:
        """The chat's decrypted texts in seq order."""
        held = self.plain.get(chat_id, {})
        return [
            held[seq]["text"] for seq in sorted(held, key=int) if held[seq].get("type") == "text"
        ]

    def safety_number(self, peer: str) -> str:
        """The number both users compare (`client.e2e.safety`)."""
        mine = self.refresh_list(self.account.user_id)["devices"].values()
        theirs = self.refresh_list(peer)["devices"].values()
        return safety_number(
            self.account.user_id, [unb64(k) for k in mine], peer, [unb64(k) for k in theirs]
        )


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    body = message.get("body")
    if not body:
        return {}
    try:
        wire = json.loads(base64.b64decode(body))
    except ValueError:
        return {}
    return wire if isinstance(wire, dict) else {}
