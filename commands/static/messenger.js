// A logged-in device: the protocol's client side (docs/protocol.md). On every
// (re)connect it syncs from its cursors, fills what sync did not bring, resends what was
// never acked with the same local_id, and acknowledges: `delivered` for every message
// held without a gap, `read` for the open conversation while the page is visible.

import { Contacts, Profiles } from "./api.js";
import { Connection } from "./connection.js";
import { uuid4 } from "./dom.js";
import { Encryption, show } from "./encryption.js";
import { downloadUrl, uploadFile } from "./media.js";
import { Store } from "./store.js";

const TYPING_REPEAT_MS = 2_500; // re-announce while typing (the gateway debounces 2 s)
const TYPING_IDLE_MS = 3_000; // no key for this long: "stop"
const TYPING_SHOWN_MS = 6_000; // a "start" not renewed or stopped fades after this
const PRESENCE_EVERY_MS = 30_000;

export class Messenger {
  constructor(session, config, { onChange, onLoggedOut, onNotice }) {
    this.session = session;
    this.me = session.user_id;
    this.store = new Store(this.me);
    this.profiles = new Profiles(session, config.queries_url, onChange);
    this.contacts = new Contacts(session, config.queries_url, this.profiles, onChange);
    this.onChange = onChange;
    this.onNotice = onNotice;
    this.openKey = null; // a chat id, or "to:<user id>" for a 1:1 chat not yet opened
    this.presence = new Map(); // user_id -> {online, last_seen}
    this.connectionState = "connecting";
    this.syncing = false;
    this._timers = new Map();
    this._typing = { chat: null, startedAt: 0, idle: null };
    this._acked = new Map(); // `${chat}:${cursor}` -> up_to asked for, not yet confirmed
    this.crypto = new Encryption(this); // end-to-end encryption (docs/e2e.md)
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.connection = new Connection({
      url: `${scheme}//${location.host}/ws`,
      session,
      onOpen: () => this._synced(),
      onFrame: (frame) => this._onFrame(frame),
      onState: (state) => {
        this.connectionState = state;
        onChange();
      },
      onLoggedOut,
    });
  }

  start() {
    this.crypto.start();
    this.connection.start();
    this.profiles.lookup(this.me);
    this.contacts.load();
    this._onVisible = () => this._acknowledge(this.openChat());
    document.addEventListener("visibilitychange", this._onVisible);
    window.addEventListener("focus", this._onVisible);
    this._onOnline = () => this.connection.retryNow();
    window.addEventListener("online", this._onOnline);
    this._tick = setInterval(() => this._everySecond(), 1_000);
  }

  stop() {
    this.connection.stop();
    clearInterval(this._tick);
    for (const timer of this._timers.values()) clearTimeout(timer);
    document.removeEventListener("visibilitychange", this._onVisible);
    window.removeEventListener("focus", this._onVisible);
    window.removeEventListener("online", this._onOnline);
  }

  openChat() {
    return this.openKey && !this.openKey.startsWith("to:") ? this.store.chats.get(this.openKey) : null;
  }

  // Sync

  async _synced() {
    this.syncing = true;
    this.onChange();
    try {
      const cursors = {};
      for (const chat of this.store.chats.values()) cursors[chat.id] = chat.contiguous;
      await this.connection.request({ type: "sync", cursors }, 60_000);
      // Sync brings, for a chat we named no cursor for, only what was never delivered to
      // this user; older history (delivered to another device, or before this page was
      // loaded) comes by asking again from what we hold.
      const missing = [...this.store.chats.values()].filter(
        (c) => c.contiguous < c.lastSeq || this.store.hasGap(c),
      );
      if (missing.length) await this._syncChats(missing);
      this._resendOutbox();
      for (const chat of this.store.chats.values()) {
        this._acknowledge(chat);
        if (this.store.hasGap(chat)) this._fillGap(chat); // pushed while we synced
      }
    } catch (error) {
      if (error.code !== "disconnected") {
        this.onNotice(`sync failed (${error.message}): trying again`);
        this._debounce("resync", 3_000, () => this.connection.online && this._synced());
      }
    } finally {
      this.syncing = false;
      this.onChange();
    }
  }

  async _syncChats(chats) {
    const cursors = Object.fromEntries(chats.map((c) => [c.id, c.contiguous]));
    await this.connection.request({ type: "sync", cursors }, 60_000);
    for (const chat of chats) this.store.applyFloor(chat, cursors[chat.id]);
  }

  _debounce(key, ms, run) {
    clearTimeout(this._timers.get(key));
    this._timers.set(
      key,
      setTimeout(() => {
        this._timers.delete(key);
        run();
      }, ms),
    );
  }

  /** Chats or members changed: ask for fresh summaries (and anything missed). */
  _refreshSummaries() {
    this._debounce("summaries", 250, () => {
      if (!this.connection.online || this.syncing) return;
      const cursors = {};
      for (const chat of this.store.chats.values()) cursors[chat.id] = chat.contiguous;
      this.connection.request({ type: "sync", cursors }, 60_000).catch(() => {});
    });
  }

  _fillGap(chat) {
    this._debounce(`gap:${chat.id}`, 200, () => {
      if (!this.connection.online || !this.store.hasGap(chat)) return;
      this._syncChats([chat]).catch(() => {});
    });
  }

  // Incoming frames

  _onFrame(frame) {
    switch (frame.type) {
      case "message":
        this._onMessages([frame]);
        break;
      case "sync_page":
        this._onMessages(frame.messages);
        break;
      case "sync_chats":
        frame.chats.forEach((summary, i) => this.store.applySummary(summary, i));
        for (const summary of frame.chats) {
          for (const member of summary.members) this.profiles.name(member.user_id);
        }
        break;
      case "receipt":
        this.store.applyReceipt(frame);
        break;
      case "typing":
        if (frame.user_id !== this.me) {
          const chat = this.store.chat(frame.chat_id);
          if (frame.state === "start") chat.typists.set(frame.user_id, Date.now() + TYPING_SHOWN_MS);
          else chat.typists.delete(frame.user_id);
        }
        break;
      case "chat":
        this._refreshSummaries();
        break;
      case "presence":
        this.presence.set(frame.user_id, { online: frame.online, last_seen: frame.last_seen });
        break;
      case "error":
        if (!frame.id) this.onNotice(`${frame.code}: ${frame.message}`);
        break;
      default:
        return;
    }
    this.onChange();
  }

  _onMessages(messages) {
    const touched = new Set();
    for (const message of messages) {
      const chat = this.store.chat(message.chat_id);
      this.store.addMessage(message);
      const held = chat.messages.get(Number(message.seq));
      if (held && held.kind === "ciphertext" && !held.e2e) this.crypto.reveal(held);
      chat.typists.delete(message.sender);
      if (chat.kind === null) this._refreshSummaries(); // a chat we did not know of
      if (this.store.hasGap(chat) && !this.syncing) this._fillGap(chat);
      touched.add(chat);
    }
    for (const chat of touched) this._acknowledge(chat);
  }

  // Receipts we send

  _acknowledge(chat) {
    if (!chat || !this.connection.online) return;
    this._moveCursor(chat, "delivered");
    const looking = document.visibilityState === "visible" && this.openKey === chat.id;
    if (looking) this._moveCursor(chat, "read");
  }

  _moveCursor(chat, cursor) {
    const upTo = this.store.toAcknowledge(chat, cursor);
    const key = `${chat.id}:${cursor}`;
    if (!upTo || (this._acked.get(key) || 0) >= upTo) return;
    this._acked.set(key, upTo);
    this.connection
      .request({ type: cursor === "read" ? "read" : "delivered", chat_id: chat.id, up_to: upTo })
      .then(() => {
        const mine = chat.cursor(this.me);
        mine.delivered = Math.max(mine.delivered, upTo);
        if (cursor === "read") mine.read = Math.max(mine.read, upTo);
        this.onChange();
      })
      .catch(() => {
        this._acked.delete(key); // asked again on the next message or reconnect
      });
  }

  // Sending

  send(text) {
    const key = this.openKey;
    if (!key || !text.trim()) return;
    const entry = { local_id: `${Date.now()}-${uuid4().slice(0, 8)}`, text, state: "pending" };
    if (this.replying && this.replying.chat_id === key) entry.ref = this.replying.seq;
    this.replying = null;
    if (key.startsWith("to:")) entry.to = key.slice(3);
    else entry.chat_id = key;
    this.store.queue(entry);
    this.stopTyping();
    this.onChange();
    this._transmit(entry);
  }

  chatTitle(chat) {
    if (chat.kind === "group") return chat.name || "group";
    const peer = chat.peer(this.me);
    return peer ? this.profiles.name(peer) : "chat";
  }

  /** Reply to a message: the next text sent in its chat quotes it. */
  replyTo(chat, message) {
    this.replying = message ? { chat_id: chat.id, seq: message.seq, text: message.text } : null;
    this.onChange();
  }

  /** A reaction (text: one emoji, "" to remove), edit (the new text) or delete of `ref`;
   *  a `timer` (text: the seconds) has no `ref`. Queued and resent like a send. */
  act(chat, kind, ref, text) {
    const entry = { local_id: `${Date.now()}-${uuid4().slice(0, 8)}`, chat_id: chat.id, kind, text, state: "pending" };
    if (kind === "timer") entry.timer_s = Number(text);
    else entry.ref = ref;
    this.store.queue(entry);
    this.onChange();
    this._transmit(entry);
  }

  editMessage(chat, message) {
    const text = window.prompt("Edit your message", message.text);
    if (text && text.trim() && text !== message.text) this.act(chat, "edit", message.seq, text);
  }

  /** Forward a message to chats picked by name (up to five). */
  async forwardMessage(chat, message) {
    const names = window.prompt("Forward to (chat names, comma separated)", "");
    if (!names) return;
    const wanted = names.split(",").map((n) => n.trim().toLowerCase()).filter(Boolean);
    const targets = this.store.sortedChats().filter((c) => c.member && wanted.includes(this.chatTitle(c).toLowerCase()));
    if (!targets.length) return this.onNotice("no chat by that name");
    try {
      const answer = await this.connection.request({ type: "forward", chat_id: chat.id, seq: message.seq, to_chats: targets.map((c) => c.id), local_id: uuid4() });
      const failed = answer.results.filter((r) => r.error);
      if (failed.length) this.onNotice(`not forwarded to ${failed.length}: ${failed[0].error.message}`);
    } catch (error) {
      this.onNotice(`not forwarded: ${error.message}`);
    }
  }

  /** Attach a file to the open chat: upload it (progress on the outbox entry), then send it. */
  async attach(file) {
    const key = this.openKey;
    if (!key || !file) return;
    const entry = { local_id: `${Date.now()}-${uuid4().slice(0, 8)}`, text: "", state: "uploading", progress: 0, name: file.name };
    if (key.startsWith("to:")) entry.to = key.slice(3);
    else entry.chat_id = key;
    this.store.queue(entry);
    this.onChange();
    const progress = (done) => {
      entry.progress = done;
      this.onChange();
    };
    try {
      // An encrypted chat gets the file encrypted before it leaves (docs/e2e.md).
      if (await this.crypto.encrypts(key)) {
        [entry.media, entry.content] = await this.crypto.upload(file, progress);
        entry.e2e = true;
      } else {
        entry.media = await uploadFile(this.session, file, progress);
        entry.e2e = false;
      }
    } catch (error) {
      this.store.fail(entry.local_id, error.message);
      this.onNotice(`not sent: ${error.message}`);
      this.onChange();
      return;
    }
    entry.state = "pending";
    this.store.queue(entry);
    this.onChange();
    this._transmit(entry);
  }

  /** Open a photo of a message full size, from a short-lived download URL. */
  async openMedia(message) {
    try {
      // The decrypted file exists only in this page: it opens from here (an opener).
      if (message.secret) return window.open(await this.crypto.fileUrl(message), "_blank");
      const url = await downloadUrl(this.session, this.profiles.queriesUrl, message.chat_id, message.media.media_id, message.position);
      if (url) window.open(url, "_blank", "noopener");
    } catch (error) {
      this.onNotice(`cannot open it: ${error.message}`);
    }
  }

  _resendOutbox() {
    // One connection's frames are handled in the order sent: resending all at once keeps
    // their order, and the same local_id makes each resend the original message.
    for (const entry of this.store.outbox.values()) if (entry.state === "pending") this._transmit(entry);
  }

  async _transmit(entry, attempt = 1) {
    if (!this.connection.online) return; // resent after the next sync
    let frame = { type: "send", id: `s-${entry.local_id}`, local_id: entry.local_id, kind: entry.kind || "text", text: entry.text };
    if (entry.media) Object.assign(frame, { kind: "media", media: { media_id: entry.media.media_id } });
    if (entry.ref) frame.ref = entry.ref;
    if (entry.timer_s !== undefined) frame.timer_s = entry.timer_s;
    if (entry.chat_id) frame.chat_id = entry.chat_id;
    else frame.to = entry.to;
    try {
      const sealed = await this.crypto.fields(entry); // null: this one goes in plaintext
      if (sealed) {
        frame = { type: "send", id: frame.id, local_id: entry.local_id, ...sealed };
        if (!sealed.to) frame.chat_id = entry.chat_id;
        if (entry.media) frame.media = { media_id: entry.media.media_id };
      }
      this._onAck(entry, await this.connection.request(frame));
    } catch (error) {
      if (error.code === "disconnected") return;
      if (await this.crypto.staleHandled(error, attempt).catch(() => false)) return this._transmit(entry, attempt + 1);
      if (error.code === "timeout" || error.code === "unavailable") {
        setTimeout(() => this._transmit(entry), 2_000);
      } else if (error.code === "rate_limited") {
        setTimeout(() => this._transmit(entry), (error.frame.retry_after_s || 1) * 1000);
      } else {
        this.store.fail(entry.local_id, error.message);
        this.onNotice(`not sent: ${error.message}`);
      }
    }
    this.onChange();
  }

  _onAck(entry, ack) {
    const chat = this.store.chat(ack.chat_id);
    if (entry.to) {
      chat.kind ??= "direct";
      chat.cursor(this.me);
      chat.cursor(entry.to);
      if (this.openKey === `to:${entry.to}`) this.openKey = chat.id;
      for (const other of this.store.pendingFor(`to:${entry.to}`)) {
        other.chat_id = chat.id; // later sends of this draft go to the chat itself
        delete other.to;
      }
      this._refreshSummaries();
    }
    if (!chat.messages.has(ack.seq)) {
      const message = {
        chat_id: chat.id,
        seq: ack.seq,
        message_id: ack.message_id,
        sender: this.me,
        local_id: ack.local_id,
        kind: entry.e2e ? "ciphertext" : entry.media ? "media" : entry.kind || "text",
        media: entry.media || null,
        text: entry.text,
        ref: entry.ref || null,
        sent_at: new Date().toISOString(),
        provisional: true, // the server's copy replaces it if a sync brings it
      };
      if (entry.e2e) show(message, entry.content);
      chat.messages.set(ack.seq, message);
      chat.lastSeq = Math.max(chat.lastSeq, ack.seq);
      this.store.advance(chat);
    }
    this.crypto.sent(entry, ack).catch((error) => this.onNotice(`not kept: ${error.message}`));
    this.store.settle(entry.local_id);
  }

  // Conversations

  open(key) {
    this.stopTyping();
    this.openKey = key;
    const chat = this.openChat();
    this._acknowledge(chat);
    this._askPresence();
    this.onChange();
  }

  /** Open the 1:1 chat with a user: the existing one, or a draft sent with `to`. */
  openDirect(userId) {
    const chat = this.store.directChatWith(userId);
    this.open(chat ? chat.id : `to:${userId}`);
    this.profiles.lookup(userId);
  }

  peerOfOpen() {
    if (!this.openKey) return null;
    if (this.openKey.startsWith("to:")) return this.openKey.slice(3);
    const chat = this.openChat();
    return chat && chat.kind === "direct" ? chat.peer(this.me) : null;
  }

  _askPresence() {
    const peer = this.peerOfOpen();
    if (!peer || !this.connection.online) return;
    this._presenceAskedAt = Date.now();
    this.connection.request({ type: "presence", user_id: peer }).catch(() => {});
  }

  // Typing

  typed() {
    const chat = this.openChat();
    if (!chat) return;
    const now = Date.now();
    if (this._typing.chat !== chat.id || now - this._typing.startedAt > TYPING_REPEAT_MS) {
      // With an id, an error about it (volatile: nothing to retry) answers no one.
      if (this.connection.send({ type: "typing", id: "typing", chat_id: chat.id, state: "start" })) {
        this._typing.chat = chat.id;
        this._typing.startedAt = now;
      }
    }
    clearTimeout(this._typing.idle);
    this._typing.idle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    clearTimeout(this._typing.idle);
    if (this._typing.chat) {
      this.connection.send({ type: "typing", id: "typing", chat_id: this._typing.chat, state: "stop" });
    }
    this._typing = { chat: null, startedAt: 0, idle: null };
  }

  // Groups

  async createGroup(name, members) {
    const chatId = uuid4(); // ours: a retried create is the same group
    await this.connection.request({ type: "create_group", name, members, chat_id: chatId });
    const chat = this.store.chat(chatId);
    chat.kind = "group";
    chat.name = name;
    chat.cursor(this.me).role = "admin";
    for (const member of members) chat.cursor(member);
    this._refreshSummaries();
    this.open(chatId);
  }

  async addMember(chatId, userId) {
    await this.connection.request({ type: "add_member", chat_id: chatId, user_id: userId });
    this.store.chat(chatId).cursor(userId);
    this._refreshSummaries();
    this.onChange();
  }

  /** People this user has chats with or has as contacts, for pickers. */
  knownPeople() {
    const people = new Set(this.contacts.list.map((c) => c.user_id));
    for (const chat of this.store.chats.values()) {
      for (const id of chat.members.keys()) if (id !== this.me) people.add(id);
    }
    return [...people];
  }

  _everySecond() {
    const now = Date.now();
    let changed = this.connectionState === "offline"; // the retry countdown
    for (const chat of this.store.chats.values()) {
      for (const [user, until] of chat.typists) {
        if (until < now) {
          chat.typists.delete(user);
          changed = true;
        }
      }
    }
    if (this.peerOfOpen() && now - (this._presenceAskedAt || 0) > PRESENCE_EVERY_MS) this._askPresence();
    if (changed) this.onChange();
  }
}
