// End-to-end encryption for the web client, one device, as client/e2e/secure_chat.py
// does it for the Python client (docs/e2e.md): publish this device's keys, keep device
// lists, open a session with every device of a peer and with this user's other devices,
// seal 1:1 contents as per-device envelopes and group contents with sender keys, and
// open what arrives. What it opened is kept (keystore.js): a ratchet opens a message once.
//
// Every method that changes the state runs under the device's lock and reads the state
// afresh from IndexedDB, so tabs of the same device take turns.

import { b64, fromUtf8, pyJson, unb64, utf8 } from "./bytes.js";
import { KeyStore } from "./keystore.js";
import { decryptFile, encryptFile } from "./media.js";
import { generateX25519, missingPrimitive } from "./primitives.js";
import { safetyNumber } from "./safety.js";
import { decryptGroup, distribution, encryptGroup, newOwnSenderKey, peerSenderKey } from "./sender_keys.js";
import { contentBytes, Device, envelopeBytes, Envelope, Session, SessionError } from "./sessions.js";

export { SessionError } from "./sessions.js";
export { decryptFile, encryptFile };

const MAX_SESSIONS = 5; // per device: the current one and those it replaced, for late messages
const LIST_FRESH_MS = 60_000; // a device list younger than this is used without asking again

export class KeysUnavailable extends Error {}

/** A JSON request to the commands service; errors carry the API's `code` (and, like a
 *  refused frame, `frame.retry_after_s`), `unavailable` when it does not answer. */
async function api(session, method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${await session.accessToken()}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw Object.assign(new Error("the server does not answer"), { code: "unavailable", frame: {} });
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || `HTTP ${response.status}`);
    error.code = (data.error && data.error.code) || "http_error";
    error.status = response.status;
    error.frame = { retry_after_s: Number(response.headers.get("Retry-After")) || 1 };
    throw error;
  }
  return data;
}

/** The wire fields of a ciphertext message's body (`{}` when it has none for us). */
export function wireOf(message) {
  if (!message.body) return {};
  try {
    const wire = JSON.parse(fromUtf8(unb64(message.body)));
    return wire && typeof wire === "object" && !Array.isArray(wire) ? wire : {};
  } catch {
    return {};
  }
}

export class SecureWeb {
  constructor(session, store, generate = generateX25519) {
    this.session = session;
    this.me = session.user_id;
    this.deviceId = session.device_id;
    this.store = store;
    this.generate = generate;
    this.opened = new Map(); // "chat/seq" -> content, what this page has opened or sent
  }

  /** This device's encryption (its keys are published by `publishKeys`), or
   *  {unavailable: what the browser lacks}. */
  static async start(session) {
    const missing = await missingPrimitive();
    if (missing) return { unavailable: `this browser lacks ${missing}` };
    const store = await KeyStore.open(`${session.user_id}/${session.device_id}`);
    return new SecureWeb(session, store);
  }

  /** Run `fn(state)` under the device's lock on the state read afresh, then save it.
   *  With `prekeys`, `state.device.opks` holds the one-time prekeys meanwhile (kept in
   *  their own record, keystore.js). */
  async _change(fn, prekeys = false) {
    return this.store.locked(async () => {
      let state = await this.store.load();
      if (!state) {
        state = await this._newState();
        prekeys = true;
      } else if (prekeys) state.device.opks = (await this.store.prekeys()) || [];
      const result = await fn(state);
      if (prekeys) {
        await this.store.savePrekeys(state.device.opks);
        delete state.device.opks;
      }
      await this.store.save(state);
      return result;
    });
  }

  async _newState() {
    const device = await Device.create(this.generate);
    return { device: device.record, sessions: {}, lists: {}, ownKeys: {}, peerKeys: {}, identityChanges: [], encryptedWith: [] };
  }

  // Keys

  /** Upload the identity, the signed prekey (rotated weekly) and the one-time prekeys the
   *  server never had; refill when it holds few. Returns how many it holds. */
  async publishKeys() {
    return this._change(async (state) => {
      const device = new Device(state.device, this.generate);
      const held = Number((await api(this.session, "GET", "/v1/me/keys")).one_time_prekeys) || 0;
      if (device.signedPrekeyDue()) await device.rotateSignedPrekey();
      await device.refill(held);
      const body = device.uploadBody();
      const answer = await api(this.session, "PUT", "/v1/me/keys", body);
      device.markUploaded(body);
      return answer.one_time_prekeys;
    }, true);
  }

  async _refreshList(state, userId) {
    const answer = await api(this.session, "GET", `/v1/users/${encodeURIComponent(userId)}/devices`);
    const devices = Object.fromEntries(answer.devices.map((d) => [d.device_id, d.identity_key]));
    const old = (state.lists[userId] && state.lists[userId].devices) || {};
    for (const [device, key] of Object.entries(old)) {
      if (devices[device] !== key) {
        delete state.sessions[`${userId}/${device}`];
        if (device in devices) state.identityChanges.push({ user_id: userId, device_id: device, at: Date.now() });
      }
    }
    state.lists[userId] = { version: answer.version, devices, at: Date.now() };
    return state.lists[userId];
  }

  /** Ask again for these users' device lists (after `stale_devices`). */
  async refreshLists(userIds) {
    await this._change(async (state) => {
      for (const user of userIds) await this._refreshList(state, user);
    });
  }

  /**
   * Whether a chat with these users is encrypted: every one of them lists a device with
   * keys. A user we once encrypted for and who now lists none is refused (`KeysUnavailable`),
   * never silently sent plaintext: that is what a server stripping keys would want.
   */
  async canEncryptFor(userIds) {
    return this._change(async (state) => {
      for (const user of userIds) {
        let listed = state.lists[user];
        if (!listed || Date.now() - listed.at > LIST_FRESH_MS) listed = await this._refreshList(state, user);
        if (!Object.keys(listed.devices).length) {
          if (state.encryptedWith.includes(user)) throw new KeysUnavailable("they published encryption keys before and list none now");
          return false;
        }
      }
      return true;
    });
  }

  async _session(state, userId, device) {
    const name = `${userId}/${device}`;
    if (!(state.sessions[name] || []).length) {
      const answer = await api(this.session, "POST", `/v1/users/${encodeURIComponent(userId)}/keys`, { device_ids: [device] });
      const bundle = answer.devices.find((d) => d.device_id === device);
      if (!bundle) throw new SessionError(`no keys for device ${device}`);
      const known = state.lists[userId] && state.lists[userId].devices[device];
      if (known && known !== bundle.identity_key) throw new SessionError("the bundle's identity key is not the listed one");
      const session = await new Device(state.device, this.generate).startSession(bundle);
      state.sessions[name] = [session.toRecord()];
    }
    return Session.fromRecord(state.sessions[name][0], this.generate);
  }

  async _targets(state, userId) {
    const listed = state.lists[userId] || (await this._refreshList(state, userId));
    const devices = Object.keys(listed.devices).sort();
    return userId === this.me ? devices.filter((d) => d !== this.deviceId) : devices;
  }

  // Sealing

  /** The `send` fields of a 1:1 content for `peer`: one envelope per device of theirs and
   *  per other device of ours, and the list versions they were made for. */
  async sealDirect(peer, content) {
    return this._change(async (state) => {
      const plaintext = contentBytes(content);
      const envelopes = {};
      for (const user of [peer, this.me]) {
        envelopes[user] = {};
        for (const device of await this._targets(state, user)) {
          const session = await this._session(state, user, device);
          const envelope = await session.encrypt(plaintext);
          state.sessions[`${user}/${device}`][0] = session.toRecord();
          envelopes[user][device] = b64(envelopeBytes(envelope, this.deviceId));
        }
      }
      if (!Object.keys(envelopes[peer]).length) throw new KeysUnavailable("they list no device with keys");
      if (!Object.keys(envelopes[this.me]).length) delete envelopes[this.me];
      if (!state.encryptedWith.includes(peer)) state.encryptedWith.push(peer);
      const device_lists = Object.fromEntries(Object.keys(envelopes).map((u) => [u, state.lists[u].version]));
      return { kind: "ciphertext", envelopes, device_lists };
    });
  }

  /**
   * The `send` fields of a group content, encrypted once with this device's sender key.
   * First the key goes to each member it was not handed to, through `sendDirect(member,
   * content)` (a 1:1 encrypted send); when someone left since, a new key, to all of them.
   */
  async sealGroup(chatId, members, content, sendDirect) {
    const current = [...new Set([...members, this.me])].sort();
    const [dist, due] = await this._change(async (state) => {
      let own = state.ownKeys[chatId];
      if (!own || !own.members.every((m) => current.includes(m))) {
        own = { ...(await newOwnSenderKey()), members: [this.me] };
        state.ownKeys[chatId] = own;
      }
      return [distribution(own, chatId), current.filter((m) => !own.members.includes(m))];
    });
    for (const member of due) {
      await sendDirect(member, dist);
      await this._change(async (state) => {
        const own = state.ownKeys[chatId];
        if (own && own.keyId === dist.key_id && !own.members.includes(member)) own.members.push(member);
      });
    }
    return this._change(async (state) => {
      const own = state.ownKeys[chatId];
      if (!own || own.keyId !== dist.key_id) throw new SessionError("the group's sender key changed meanwhile: send again");
      const wire = await encryptGroup(own, chatId, this.me, this.deviceId, contentBytes(content));
      wire.sd = this.deviceId;
      return { kind: "ciphertext", body: b64(utf8(pyJson(wire))) };
    });
  }

  /** Keep what we sent: the server gives this device no envelope of its own sends. */
  async remember(chatId, seq, content) {
    this.opened.set(`${chatId}/${seq}`, content);
    await this.store.keepPlain(chatId, seq, content);
  }

  /** What this page already knows of a message (sent or opened here), without waiting. */
  known(chatId, seq) {
    return this.opened.get(`${chatId}/${seq}`) || null;
  }

  // Opening

  /**
   * Open ciphertext messages: [{chat_id, seq, content}] or [{chat_id, seq, error}]. 1:1
   * envelopes first (they carry sender keys), then group messages; each at most once.
   */
  async open(messages) {
    const results = [];
    const todo = [];
    for (const message of messages) {
      const content = this.known(message.chat_id, message.seq) || (await this.store.plain(message.chat_id, message.seq));
      if (content) {
        this.opened.set(`${message.chat_id}/${message.seq}`, content);
        results.push({ chat_id: message.chat_id, seq: message.seq, content });
      } else todo.push(message);
    }
    if (!todo.length) return results;
    let newSession = false;
    todo.sort((a, b) => Number("kid" in wireOf(a)) - Number("kid" in wireOf(b)));
    const firstMessages = todo.some((m) => wireOf(m).x3dh); // may start a session: prekeys needed
    await this._change(async (state) => {
      for (const message of todo) {
        const key = `${message.chat_id}/${message.seq}`;
        try {
          const [content, fresh] = await this._open(state, message);
          newSession ||= fresh;
          if (content.type === "sender_key") {
            const sd = wireOf(message).sd;
            state.peerKeys[`${content.chat_id}/${message.sender}/${sd}/${content.key_id}`] = peerSenderKey(content);
          }
          if (message.sender !== this.me && !state.encryptedWith.includes(message.sender)) state.encryptedWith.push(message.sender);
          this.opened.set(key, content);
          await this.store.keepPlain(message.chat_id, message.seq, content);
          results.push({ chat_id: message.chat_id, seq: message.seq, content });
        } catch (error) {
          results.push({ chat_id: message.chat_id, seq: message.seq, error: error.message });
        }
      }
    }, firstMessages);
    if (newSession) await this.publishKeys().catch(() => {}); // replace the prekey it used
    return results;
  }

  async _open(state, message) {
    const wire = wireOf(message);
    const sender = message.sender;
    const device = String(wire.sd);
    if (!message.body) throw new SessionError("no envelope for this device");
    let plaintext;
    let fresh = false;
    if ("kid" in wire) {
      const peer = state.peerKeys[`${message.chat_id}/${sender}/${device}/${wire.kid}`];
      if (!peer) throw new SessionError("no sender key for this group message (yet)");
      plaintext = await decryptGroup(peer, message.chat_id, sender, device, wire);
    } else {
      [plaintext, fresh] = await this._openEnvelope(state, `${sender}/${device}`, Envelope.fromWire(wire));
    }
    const content = JSON.parse(fromUtf8(plaintext));
    if (!content || typeof content !== "object") throw new SessionError("not a content object");
    return [content, fresh];
  }

  /** Decrypt with a session we hold with that device, or a new one its first message
   *  opens; the one that decrypts becomes the one we send with (both sides converge). */
  async _openEnvelope(state, name, envelope) {
    const kept = state.sessions[name] || [];
    for (let i = 0; i < kept.length; i += 1) {
      const session = Session.fromRecord(kept[i], this.generate);
      let plaintext;
      try {
        plaintext = await session.decrypt(envelope);
      } catch {
        continue;
      }
      kept.splice(i, 1);
      kept.unshift(session.toRecord());
      state.sessions[name] = kept;
      return [plaintext, false];
    }
    if (!envelope.prekey) throw new SessionError("no session with the sending device opens this message");
    const device = new Device(state.device, this.generate);
    const [session, plaintext] = await device.openPrekeyMessage(envelope);
    kept.unshift(session.toRecord());
    state.sessions[name] = kept.slice(0, MAX_SESSIONS);
    return [plaintext, true];
  }

  // What users compare

  async safetyNumber(peer) {
    const lists = await this._change(async (state) => [await this._refreshList(state, this.me), await this._refreshList(state, peer)]);
    const keys = (listed) => Object.values(listed.devices).map(unb64);
    return safetyNumber(this.me, keys(lists[0]), peer, keys(lists[1]));
  }

  /** Devices of `peer` whose identity key changed while we knew them. */
  async identityChanges(peer) {
    const state = await this.store.load();
    return state ? state.identityChanges.filter((c) => c.user_id === peer) : [];
  }
}
