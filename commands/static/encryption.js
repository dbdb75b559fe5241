// End-to-end encryption in the web client (docs/e2e.md): which chats are encrypted, the
// send fields of an encrypted message, opening what arrives, encrypted files. The
// protocol itself is in e2e/ (the Python client's, byte for byte); this is the glue
// between it and the Messenger.
//
// A chat is encrypted when this browser can (Web Crypto with X25519 and Ed25519) and
// every other member lists a device with keys; otherwise its messages go in plaintext
// and the conversation says so. The choice is made once per message (kept in the
// outbox), so a resend never goes out less protected than the first try.

import { uuid4 } from "./dom.js";
import { downloadUrl, uploadBytes } from "./media.js";
import { decryptFile, encryptFile, KeysUnavailable, SecureWeb } from "./e2e/secure.js";

const SEND_ATTEMPTS = 3;
const MODE_FRESH_MS = 60_000;
const LOAD_TRIES = 10; // a photo's download, a second apart
const PUBLISH_RETRY_MS = 10_000;

export class Encryption {
  constructor(messenger) {
    this.m = messenger;
    this.secure = null; // SecureWeb once started
    this.unavailable = null; // why this browser sends plaintext, when it must
    this.published = false; // the server has this device's keys: others can encrypt for it
    this.ready = new Promise((resolve) => (this._ready = resolve));
    this.modes = new Map(); // "chat id" or "to:user" -> {encrypted, reason, at}
    this.files = new Map(); // media_id -> object URL of the decrypted file
    this._opening = Promise.resolve();
    this._deciding = new Map(); // chat key -> the decision under way
    this.waiting = []; // group messages whose sender key has not come yet
  }

  async start() {
    try {
      const started = await SecureWeb.start(this.m.session);
      if (started.unavailable) this.unavailable = started.unavailable;
      else {
        this.secure = started;
        await this._publish();
      }
    } catch (error) {
      this.unavailable = `this browser's key store does not open (${error.message})`;
    }
    this._ready();
    this.m.onChange();
  }

  /** Publish this device's keys; while the server does not take them, try again every
   *  PUBLISH_RETRY_MS (others cannot encrypt for this device until it has). */
  async _publish() {
    try {
      await this.secure.publishKeys();
      this.published = true;
    } catch (error) {
      this.published = false;
      this.m.onNotice(`encryption keys not published yet (${error.message}): trying again`);
      setTimeout(() => this._publish(), PUBLISH_RETRY_MS);
    }
  }

  /** Members a chat's messages are encrypted for: the peer, or the group's others. */
  _people(key) {
    if (key.startsWith("to:")) return [key.slice(3)];
    const chat = this.m.store.chats.get(key);
    if (!chat) return [];
    if (chat.kind === "direct") return [chat.peer(this.m.me)].filter(Boolean);
    return chat.others(this.m.me).map(([id]) => id);
  }

  /** Whether the chat `key` is encrypted, as known now (asks in the background). */
  mode(key) {
    const known = this.modes.get(key);
    if ((!known || Date.now() - known.at > MODE_FRESH_MS) && !this._deciding.has(key)) {
      this._deciding.set(key, this._decide(key));
      this._deciding
        .get(key)
        .then(() => this.m.onChange(), () => {})
        .finally(() => this._deciding.delete(key));
    }
    return known || { encrypted: null, reason: "checking" };
  }

  async _decide(key) {
    await this.ready;
    let mode;
    if (!this.secure) mode = { encrypted: false, reason: this.unavailable };
    else {
      const people = this._people(key);
      try {
        const all = people.length > 0 && (await this.secure.canEncryptFor(people));
        mode = all ? { encrypted: true } : { encrypted: false, reason: people.length ? "not everyone here has an app that encrypts" : "no one else here" };
      } catch (error) {
        mode = { encrypted: false, refused: error instanceof KeysUnavailable, reason: error.message };
      }
    }
    mode.at = Date.now();
    this.modes.set(key, mode);
    return mode;
  }

  /** Whether what is sent to chat `key` now is encrypted; refused (an Error with code
   *  `keys_unavailable`) when someone we encrypted for before lists no keys now. */
  async encrypts(key) {
    const mode = await this._decide(key);
    if (mode.refused) throw Object.assign(new Error(`not sent encrypted: ${mode.reason}`), { code: "keys_unavailable" });
    return mode.encrypted;
  }

  /** The send fields of an outbox entry: encrypted, or null for plaintext, decided at its
   *  first try. Actions on messages (a delete, the timer) carry no content: plaintext. */
  async fields(entry) {
    await this.ready;
    if (entry.e2e === undefined) {
      entry.e2e = !entry.kind && (await this.encrypts(entry.chat_id || `to:${entry.to}`));
      if (entry.e2e) entry.content = { type: "text", text: entry.text };
      this.m.store.queue(entry); // the choice is kept with the entry
    }
    if (!entry.e2e) return null;
    if (!this.secure) throw Object.assign(new Error(`not sent: it was to go encrypted, and ${this.unavailable}`), { code: "keys_unavailable" });
    const chat = entry.chat_id ? this.m.store.chats.get(entry.chat_id) : null;
    if (chat && chat.kind === "group") {
      const members = chat.others(this.m.me).map(([id]) => id);
      return this.secure.sealGroup(chat.id, members, entry.content, (member, content) => this.sendDirect(member, content));
    }
    const peer = entry.to || chat.peer(this.m.me);
    return { to: peer, ...(await this.secure.sealDirect(peer, entry.content)) };
  }

  /** A 1:1 encrypted send outside the outbox (a group's sender key), `stale_devices` handled. */
  async sendDirect(peer, content) {
    const localId = `k-${uuid4()}`;
    for (let attempt = 1; ; attempt += 1) {
      const fields = await this.secure.sealDirect(peer, content);
      try {
        const ack = await this.m.connection.request({ type: "send", id: `s-${localId}`, local_id: localId, to: peer, ...fields });
        await this.secure.remember(ack.chat_id, ack.seq, content);
        return ack;
      } catch (error) {
        if (!(await this.staleHandled(error, attempt))) throw error;
      }
    }
  }

  /** After `stale_devices`: refresh the lists it names; true when a retry makes sense. */
  async staleHandled(error, attempt) {
    if (error.code !== "stale_devices" || attempt >= SEND_ATTEMPTS || !this.secure) return false;
    await this.secure.refreshLists(Object.keys(error.frame.devices || {}));
    return true;
  }

  /** Our own encrypted send is stored: keep its content (no envelope comes back for us). */
  async sent(entry, ack) {
    if (entry.e2e) await this.secure.remember(ack.chat_id, ack.seq, entry.content);
  }

  // Incoming

  /** Show what we know of a ciphertext message now, and open it in the background. */
  reveal(message) {
    const known = this.secure && this.secure.known(message.chat_id, message.seq);
    if (known) return show(message, known);
    message.e2e = "opening";
    this._queue([message]);
  }

  _queue(messages) {
    this._opening = this._opening.then(() => this._open(messages)).catch((error) => this.m.onNotice(`decryption failed: ${error.message}`));
  }

  async _open(messages) {
    await this.ready;
    if (!this.secure) {
      for (const message of messages) {
        message.e2e = "unavailable";
        message.text = `This encrypted message cannot be opened here: ${this.unavailable}`;
      }
      this.m.onChange();
      return;
    }
    const results = await this.secure.open(messages);
    let newKeys = false;
    for (const result of results) {
      const message = this.m.store.chat(result.chat_id).messages.get(result.seq);
      if (!message) continue;
      if (result.content) {
        show(message, result.content);
        newKeys ||= result.content.type === "sender_key";
        this.waiting = this.waiting.filter((w) => w !== message);
      } else {
        message.e2e = "failed";
        message.e2eError = result.error;
        message.text = "This encrypted message could not be opened";
        if (result.error.includes("no sender key") && !this.waiting.includes(message)) this.waiting.push(message);
      }
    }
    // A sender key that just came opens the group messages that waited for it.
    if (newKeys && this.waiting.length) this._queue([...this.waiting]);
    this.m.onChange();
  }

  // Files

  /** Encrypt a file and upload the ciphertext: the media reference and the content. */
  async upload(file, onProgress) {
    const data = new Uint8Array(await file.arrayBuffer());
    const [sealed, info] = await encryptFile(data);
    const media = await uploadBytes(this.m.session, sealed, "application/octet-stream", "document", onProgress);
    const content = { type: "media", media_id: media.media_id, mime_type: file.type || "application/octet-stream", caption: "", ...info };
    this.files.set(media.media_id, URL.createObjectURL(new Blob([data], { type: content.mime_type })));
    return [media, content];
  }

  /** The decrypted file of a message as an object URL (downloaded once per page). */
  async fileUrl(message) {
    const content = message.secret;
    let url = this.files.get(content.media_id);
    if (url) return url;
    const signed = await downloadUrl(this.m.session, this.m.profiles.queriesUrl, message.chat_id, content.media_id, message.position);
    if (!signed) throw new Error("the query API does not answer");
    const response = await fetch(signed);
    if (!response.ok) throw new Error(`download failed (${response.status})`);
    const data = await decryptFile(new Uint8Array(await response.arrayBuffer()), content);
    url = URL.createObjectURL(new Blob([data], { type: content.mime_type }));
    this.files.set(content.media_id, url);
    return url;
  }

  /** Start fetching and decrypting a photo to show it (once); the view renders again.
   *  The query API authorises the download once it has projected the message: with the
   *  pushed message's position it waits for that; a message without one (from a sync
   *  page) may be asked for too early, so a failure is tried again, a second apart. */
  loadImage(message) {
    const id = message.secret.media_id;
    this._tries ??= new Map();
    const tries = this._tries.get(id) || 0;
    if (this.files.has(id) || tries < 0 || tries >= LOAD_TRIES) return;
    this._tries.set(id, -1 - tries); // under way
    this.fileUrl(message)
      .then(() => this.m.onChange())
      .catch((error) => {
        if (tries + 1 >= LOAD_TRIES) this.m.onNotice(`the photo does not open: ${error.message}`);
        setTimeout(() => {
          this._tries.set(id, tries + 1);
          this.m.onChange();
        }, 1_000);
      });
  }

  /** Whether a photo gave up loading. */
  failedImage(mediaId) {
    return (this._tries?.get(mediaId) || 0) >= LOAD_TRIES;
  }

  async safetyNumber(peer) {
    await this.ready;
    if (!this.secure) throw new Error(this.unavailable);
    return this.secure.safetyNumber(peer);
  }

  async identityChanges(peer) {
    return this.secure ? this.secure.identityChanges(peer) : [];
  }
}

/** A message as its decrypted content shows it. */
export function show(message, content) {
  message.e2e = "open";
  message.secret = content;
  if (content.type === "text") message.text = String(content.text);
  else if (content.type === "media") message.text = content.caption || (String(content.mime_type).startsWith("image/") ? "📷 Photo" : "📎 File");
  else message.hidden = true; // a sender key, or a kind this version does not show
}
