// The main screen: the chat list, the open conversation, the dialogs. Rendered from the
// Messenger's state on every change (at most once a frame); the composer is built once
// so typing is never interrupted.

import { decorations, menu, shown } from "./actions.js";
import { clear, clockTime, h, hue, initials, lastSeenText } from "./dom.js";
import { ContactsPane, findUser, findUsers } from "./people.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(viewBox, paths, className) {
  const root = document.createElementNS(SVG, "svg");
  root.setAttribute("viewBox", viewBox);
  root.setAttribute("class", className);
  root.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    root.append(path);
  }
  return root;
}

const TICK_PATHS = {
  pending: ["M8 1.5a6 6 0 1 1 0 12a6 6 0 1 1 0-12", "M8 4.5v3.5l2.5 1.5"],
  sent: ["M4 6.5l3 3 6.5-7.5"],
  delivered: ["M1 6.5l3 3 6.5-7.5", "M7.5 8.5l1 1 6.5-7.5"],
  read: ["M1 6.5l3 3 6.5-7.5", "M7.5 8.5l1 1 6.5-7.5"],
};
const TICK_LABEL = { pending: "sending", sent: "sent", delivered: "delivered", read: "read", failed: "not sent" };

function ticks(status) {
  const label = TICK_LABEL[status];
  const icon =
    status === "failed" ? h("b", {}, "!") : svg(status === "pending" ? "0 0 16 15" : "0 0 17 11", TICK_PATHS[status], "tick-icon");
  return h("span", { class: `ticks ${status}`, title: label, "aria-label": label, dataset: { status } }, icon);
}

/** A padlock, closed (end-to-end encrypted) or open (not); drawn, as fonts may lack the emoji. */
function lock(closed, label) {
  const shackle = closed ? "M4.5 7V5a2.5 2.5 0 0 1 5 0v2" : "M4.5 7V4.5a2.5 2.5 0 0 1 5-0.6";
  const icon = svg("0 0 14 14", [shackle, "M3 7h8v6H3z"], "lock-icon");
  return h("span", { class: closed ? "lock" : "plain", title: label, "aria-label": label }, icon);
}

function avatar(id, name, kind) {
  return h(
    "span",
    { class: `avatar ${kind === "group" ? "group" : ""}`, style: `--hue:${hue(id)}` },
    initials(name),
  );
}

export class MainView {
  constructor(messenger, { onLogout, onNotifications }) {
    this.m = messenger;
    this.onLogout = onLogout;
    this.onNotifications = onNotifications;
    this.scheduled = false;
    this.chatList = h("ul", { class: "chat-list", id: "chat-list" });
    this.connection = h("span", { class: "connection", id: "connection-state" });
    this.header = h("header", { class: "conversation-header", id: "conversation-header" });
    this.messages = h("div", { class: "messages", id: "messages" });
    this.input = h("input", {
      id: "composer-input",
      placeholder: "Type a message",
      autocomplete: "off",
      maxlength: "4096",
      oninput: () => this.m.typed(),
    });
    this.picker = h("input", {
      type: "file",
      id: "composer-file",
      hidden: true,
      onchange: () => {
        for (const file of this.picker.files) this.m.attach(file);
        this.picker.value = "";
      },
    });
    this.replyBar = h("div", { class: "reply-bar", id: "reply-bar", hidden: true });
    this.composer = h(
      "form",
      { class: "composer", id: "composer", onsubmit: (e) => this._send(e) },
      this.replyBar,
      this.picker,
      h("button", { type: "button", class: "attach", id: "composer-attach", title: "Attach a photo or file", "aria-label": "Attach a photo or file", onclick: () => this.picker.click() }, "+"),
      this.input,
      h("button", { type: "submit", class: "send", id: "composer-send", title: "Send" }, "➤"),
    );
    this.conversation = h("section", {
      class: "conversation",
      id: "conversation",
      ondragover: (e) => e.preventDefault(),
      ondrop: (e) => {
        e.preventDefault();
        for (const file of e.dataTransfer.files) this.m.attach(file);
      },
    });
    this.dialog = h("dialog", { class: "dialog", id: "dialog" });
    this.toast = h("div", { class: "toast", id: "toast", role: "status" });
    const me = this.m.me;
    this.contactsPane = new ContactsPane(messenger, (...args) => this._showDialog(...args));
    this.meName = h("span", { class: "me-name", id: "me-name" });
    this.root = h(
      "div",
      { class: "layout" },
      h(
        "aside",
        { class: "sidebar" },
        h(
          "header",
          { class: "me" },
          h("div", { class: "me-line" }, this.meName, this.connection),
          h(
            "div",
            { class: "me-actions" },
            h("button", { id: "new-chat", onclick: () => this._newChatDialog() }, "New chat"),
            h("button", { id: "new-group", onclick: () => this._newGroupDialog() }, "New group"),
            h("button", { id: "notifications", class: "quiet", onclick: () => this.onNotifications() }, "Notify me"),
            h("button", { id: "logout", class: "quiet", onclick: () => this.onLogout() }, "Log out"),
          ),
          h(
            "div",
            { class: "me-id" },
            "Your id ",
            h("code", { id: "me-id", title: "People find you by your username or phone number" }, me),
            h("button", { class: "quiet small", id: "copy-id", onclick: () => this._copyId() }, "copy"),
          ),
        ),
        this.chatList,
        this.contactsPane.root,
      ),
      this.conversation,
      this.dialog,
      this.toast,
    );
  }

  render() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this._renderMe();
      this._renderChatList();
      this.contactsPane.render();
      this._renderConversation();
    });
  }

  notice(text) {
    this.toast.textContent = text;
    this.toast.classList.add("shown");
    clearTimeout(this._toastTimer);
    this._toastTimer = setTimeout(() => this.toast.classList.remove("shown"), 4_000);
  }

  _renderMe() {
    this.meName.textContent = this.m.profiles.name(this.m.me);
    const state = this.m.connectionState;
    let text = { online: "online", connecting: "connecting…", offline: "offline" }[state] || state;
    if (state === "online" && this.m.syncing) text = "syncing…";
    if (state === "offline") {
      const seconds = Math.max(0, Math.ceil((this.m.connection.retryAt - Date.now()) / 1000));
      text = `offline · retrying in ${seconds} s`;
    }
    this.connection.textContent = text;
    this.connection.dataset.state = state;
  }

  _renderChatList() {
    const m = this.m;
    const items = m.store.sortedChats().map((chat) => {
      const title = this._title(chat);
      const last = chat.lastMessage();
      const typing = [...chat.typists.keys()];
      const unread = m.store.unread(chat);
      const preview = typing.length
        ? h("span", { class: "typing" }, chat.kind === "group" ? `${m.profiles.name(typing[0])} is typing…` : "typing…")
        : last
          ? [last.sender === m.me ? ticks(m.store.ticks(chat, last.seq)) : null, last.text]
          : h("span", { class: "muted" }, chat.kind === "group" ? "group created" : "no messages yet");
      return h(
        "li",
        {
          class: `chat-item${m.openKey === chat.id ? " selected" : ""}`,
          dataset: { chatId: chat.id, unread: String(unread) },
          onclick: () => m.open(chat.id),
        },
        avatar(this._avatarId(chat), title, chat.kind),
        h("div", { class: "chat-main" }, h("div", { class: "chat-title" }, title), h("div", { class: "chat-preview" }, preview)),
        h(
          "div",
          { class: "chat-side" },
          h("span", { class: "chat-time" }, last ? clockTime(new Date(last.sent_at)) : ""),
          unread ? h("span", { class: "unread", title: `${unread} unread` }, String(unread)) : null,
        ),
      );
    });
    if (!items.length) items.push(h("li", { class: "empty-list" }, "No chats yet. New chat finds people by username or phone number."));
    clear(this.chatList, items);
  }

  _avatarId(chat) {
    return (chat.kind === "direct" && chat.peer(this.m.me)) || chat.id;
  }

  _title(chat) {
    return this.m.chatTitle(chat);
  }

  _renderConversation() {
    const m = this.m;
    if (!m.openKey) {
      clear(
        this.conversation,
        h(
          "div",
          { class: "welcome" },
          h("h2", {}, "Parley"),
          h("p", {}, "Pick a chat or a contact on the left, or start one: New chat takes the other person's username or phone number."),
        ),
      );
      return;
    }
    const draftPeer = m.openKey.startsWith("to:") ? m.openKey.slice(3) : null;
    const chat = draftPeer ? null : m.openChat();
    this._renderHeader(chat, draftPeer);
    this._renderMessages(chat, draftPeer);
    this.input.disabled = chat ? !chat.member : false;
    this.input.placeholder = chat && !chat.member ? "You are no longer a member of this group" : "Type a message";
    if (!this.conversation.contains(this.composer)) {
      clear(this.conversation, this.header, this.messages, this.composer);
      this.input.focus();
    }
  }

  _renderHeader(chat, draftPeer) {
    const m = this.m;
    const peer = draftPeer || (chat && chat.kind === "direct" ? chat.peer(m.me) : null);
    const title = chat ? this._title(chat) : m.profiles.name(draftPeer);
    let status = "";
    const typing = chat ? [...chat.typists.keys()].map((id) => m.profiles.name(id)) : [];
    if (typing.length === 1) status = `${typing[0]} is typing…`;
    else if (typing.length > 1) status = `${typing.slice(0, -1).join(", ")} and ${typing.at(-1)} are typing…`;
    else if (peer) {
      const seen = m.presence.get(peer);
      if (seen && seen.online) status = "online";
      else if (seen && seen.last_seen) status = lastSeenText(seen.last_seen);
    } else if (chat) {
      const names = [...chat.members.entries()]
        .filter(([, c]) => c.active)
        .map(([id]) => (id === m.me ? "You" : m.profiles.name(id)));
      status = `${names.length} members: ${names.join(", ")}`;
    }
    const actions = [];
    if (peer && m.contacts.loaded && !m.contacts.has(peer)) {
      const add = () => this.contactsPane.change("add", peer);
      actions.push(h("button", { id: "add-peer-contact", class: "quiet", onclick: add }, "Add to contacts"));
    }
    if (chat && chat.kind === "group" && chat.member && chat.cursor(m.me).role === "admin") {
      actions.push(h("button", { id: "add-member", onclick: () => this._addMemberDialog(chat) }, "Add member"));
    }
    if (chat && chat.member && (chat.kind === "direct" || chat.cursor(m.me).role === "admin")) {
      const choices = [["0", "Off"], ["86400", "24 hours"], ["604800", "7 days"], ["7776000", "90 days"]];
      const current = String(chat.timer || 0);
      const pick = (e) => m.act(chat, "timer", null, e.target.value);
      const options = choices.map(([value, label]) => h("option", { value, selected: value === current ? "" : undefined }, `⏱ ${label}`));
      actions.push(h("select", { id: "disappearing-timer", title: "Disappearing messages", onchange: pick }, options));
    }
    const mode = m.crypto.mode(m.openKey);
    if (mode.encrypted && peer) actions.unshift(h("button", { id: "safety-number", class: "quiet", onclick: () => this._safetyDialog(peer) }, "Safety number"));
    clear(
      this.header,
      avatar(chat ? this._avatarId(chat) : draftPeer, title, chat && chat.kind),
      h(
        "div",
        { class: "conversation-title" },
        h("div", { class: "title", id: "conversation-title" }, title),
        h("div", { class: `status${typing.length ? " typing" : ""}`, id: "conversation-status", dataset: { typing: typing.length ? "yes" : "no" } }, status),
        this._encryptionLine(mode),
      ),
      h("div", { class: "header-actions" }, actions),
    );
  }

  /** Whether the open chat is end-to-end encrypted, and if not, why (docs/e2e.md). */
  _encryptionLine(mode) {
    const state = mode.encrypted === null ? "checking" : mode.encrypted ? "yes" : "no";
    const shown = mode.encrypted === null ? [] : mode.encrypted ? [lock(true, "encrypted"), "End-to-end encrypted"] : [lock(false, "not encrypted"), `Not encrypted: ${mode.reason}`];
    return h("div", { class: `e2e-state ${state}`, id: "e2e-state", dataset: { encrypted: state } }, shown);
  }

  async _safetyDialog(peer) {
    const number = h("code", { class: "safety-number", id: "safety-number-digits" }, "computing…");
    const changes = h("p", { class: "muted", id: "identity-changes" });
    this._showDialog(
      `Safety number with ${this.m.profiles.name(peer)}`,
      [h("p", {}, "Compare these 60 digits with theirs, in person or over another channel. If they match, no one is in the middle."), number, changes],
      "Done",
      async () => {},
    );
    try {
      number.textContent = await this.m.crypto.safetyNumber(peer);
      const changed = await this.m.crypto.identityChanges(peer);
      if (changed.length) changes.textContent = `⚠ Their key changed on device ${changed.map((c) => c.device_id).join(", ")} since you first saw it.`;
    } catch (error) {
      number.textContent = `not available: ${error.message}`;
    }
  }

  _renderMessages(chat, draftPeer) {
    const m = this.m;
    const stick = this.messages.scrollHeight - this.messages.scrollTop - this.messages.clientHeight < 40;
    const rows = [];
    const group = chat && chat.kind === "group";
    let day = "";
    for (const message of chat ? shown(chat).values() : []) {
      // Hidden messages (from someone you blocked) and actions are folded into `shown`.
      const when = new Date(message.sent_at);
      if (when.toDateString() !== day) {
        day = when.toDateString();
        rows.push(h("div", { class: "day" }, h("span", {}, when.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" }))));
      }
      if (message.notice) {
        rows.push(h("div", { class: "day notice" }, h("span", {}, message.notice)));
        continue;
      }
      const mine = message.sender === m.me;
      const status = mine ? m.store.ticks(chat, message.seq) : null;
      const meta = [h("span", { class: "time" }, clockTime(when))];
      if (message.edited && !message.deleted) meta.unshift(h("span", { class: "edited" }, "edited"));
      const extra = message.deleted ? { above: [], below: null } : decorations(message, (id) => m.profiles.name(id));
      if (mine && group) {
        const others = chat.others(m.me).length;
        meta.unshift(h("span", { class: "read-by", dataset: { readBy: String(m.store.readBy(chat, message.seq)) } }, `read by ${m.store.readBy(chat, message.seq)} of ${others}`));
      }
      if (message.e2e === "open") meta.unshift(lock(true, "end-to-end encrypted"));
      else if (message.kind === "text" || message.kind === "media") meta.unshift(lock(false, "not end-to-end encrypted"));
      if (mine) meta.push(ticks(status));
      rows.push(
        h(
          "div",
          { class: `msg ${mine ? "mine" : "theirs"}`, dataset: { seq: String(message.seq), status: status || "", e2e: message.e2e || "" } },
          group && !mine
            ? h("div", { class: "sender", style: `--hue:${hue(message.sender)}` }, m.profiles.name(message.sender))
            : null,
          ...extra.above,
          message.deleted ? h("div", { class: "text deleted" }, "🚫 This message was deleted") : null,
          !message.deleted && (message.media || (message.secret && message.secret.type === "media")) ? this._mediaView(message) : null,
          message.deleted || (message.media && message.text.startsWith("📷")) ? null : h("div", { class: "text" }, message.text),
          extra.below,
          h("div", { class: "meta" }, meta),
          !message.deleted && chat.member ? menu(m, chat, message) : null,
        ),
      );
    }
    const replying = m.replying && chat && m.replying.chat_id === chat.id ? m.replying : null;
    this.replyBar.hidden = !replying;
    if (replying) clear(this.replyBar, h("span", {}, `↩ ${replying.text.slice(0, 80)}`), h("button", { type: "button", class: "quiet", title: "Cancel the reply", onclick: () => m.replyTo(chat, null) }, "×"));
    for (const entry of m.store.pendingFor(chat ? chat.id : `to:${draftPeer}`)) {
      if (entry.kind && entry.kind !== "text") continue; // an action: shown once it is stored
      rows.push(
        h(
          "div",
          { class: "msg mine pending", dataset: { localId: entry.local_id, status: entry.state } },
          entry.state === "uploading"
            ? h("div", { class: "upload" }, h("div", { class: "text" }, `📎 ${entry.name || "file"}`), h("progress", { class: "upload-progress", max: "1", value: String(entry.progress || 0) }))
            : h("div", { class: "text" }, entry.text || `📎 ${entry.name || "file"}`),
          h("div", { class: "meta" }, entry.error ? h("span", { class: "error" }, entry.error) : null, ticks(entry.state === "uploading" ? "pending" : entry.state)),
        ),
      );
    }
    if (!rows.length) rows.push(h("div", { class: "day" }, h("span", {}, draftPeer ? "Say hello: your first message opens the chat." : "No messages yet")));
    clear(this.messages, rows);
    if (stick || this._lastOpen !== m.openKey) this.messages.scrollTop = this.messages.scrollHeight;
    this._lastOpen = m.openKey;
  }

  /** A media message's thumbnail (images), or a file chip; a click opens it full size. */
  _mediaView(message) {
    const media = message.media;
    const open = () => this.m.openMedia(message);
    if (message.secret) return this._secretMediaView(message, open);
    if (media.thumbnail) {
      return h("img", {
        class: "thumbnail",
        src: `data:image/webp;base64,${media.thumbnail}`,
        alt: "photo",
        width: media.width && media.height ? String(Math.min(240, media.width)) : undefined,
        title: "Open the photo",
        onclick: open,
      });
    }
    return h("button", { class: "file-chip quiet", onclick: open }, `📎 ${media.mime_type}, ${Math.ceil(media.size / 1024)} KiB`);
  }

  /** An encrypted file: a photo shows once downloaded and decrypted here; a file is a chip. */
  _secretMediaView(message, open) {
    const content = message.secret;
    const size = `${Math.ceil((content.plain_size || 0) / 1024)} KiB`;
    if (String(content.mime_type).startsWith("image/")) {
      const url = this.m.crypto.files.get(content.media_id);
      if (url) return h("img", { class: "thumbnail secret", src: url, alt: "photo", title: "Open the photo", onclick: open });
      if (this.m.crypto.failedImage(content.media_id)) return h("button", { class: "file-chip quiet", onclick: open }, `encrypted photo, ${size}: not downloaded, try again`);
      this.m.crypto.loadImage(message);
      return h("div", { class: "file-chip" }, `encrypted photo, ${size}: decrypting…`);
    }
    return h("button", { class: "file-chip quiet", onclick: open }, `📎 ${content.mime_type}, ${size} (encrypted)`);
  }

  _send(event) {
    event.preventDefault();
    const text = this.input.value;
    if (!text.trim()) return;
    this.m.send(text);
    this.input.value = "";
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  async _copyId() {
    try {
      await navigator.clipboard.writeText(this.m.me);
      this.notice("Your id is copied");
    } catch {
      getSelection().selectAllChildren(this.root.querySelector("#me-id"));
    }
  }

  // Dialogs

  _showDialog(title, fields, submitLabel, onSubmit) {
    const error = h("p", { class: "form-error", id: "dialog-error", role: "alert" });
    const submit = h("button", { type: "submit", class: "primary", id: "dialog-submit" }, submitLabel);
    const form = h(
      "form",
      {
        method: "dialog",
        onsubmit: async (event) => {
          event.preventDefault();
          error.textContent = "";
          submit.disabled = true;
          try {
            await onSubmit();
            this.dialog.close();
          } catch (failure) {
            error.textContent = failure.message;
          } finally {
            submit.disabled = false;
          }
        },
      },
      h("h3", {}, title),
      fields,
      error,
      h("div", { class: "dialog-actions" }, h("button", { type: "button", class: "quiet", onclick: () => this.dialog.close() }, "Cancel"), submit),
    );
    clear(this.dialog, form);
    this.dialog.showModal();
    form.querySelector("input, textarea")?.focus();
  }

  _peoplePicker(exclude = new Set()) {
    const people = this.m.knownPeople().filter((id) => !exclude.has(id));
    if (!people.length) return { element: null, chosen: () => [] };
    const boxes = people.map((id) => h("input", { type: "checkbox", value: id }));
    const element = h(
      "fieldset",
      { class: "people" },
      h("legend", {}, "Your contacts and people you chat with"),
      people.map((id, i) => h("label", { class: "person" }, boxes[i], this.m.profiles.name(id))),
    );
    return { element, chosen: () => boxes.filter((b) => b.checked).map((b) => b.value) };
  }

  _newChatDialog() {
    const input = h("input", { id: "new-chat-user", placeholder: "username or +phone number", required: true });
    this._showDialog("New chat", [h("label", {}, "Username or phone number", input)], "Open chat", async () => {
      const id = await findUser(this.m, input.value);
      if (id === this.m.me) throw new Error("that is you");
      this.m.openDirect(id);
    });
  }

  _newGroupDialog() {
    const name = h("input", { id: "new-group-name", placeholder: "Weekend trip", required: true, maxlength: "100" });
    const ids = h("textarea", { id: "new-group-members", rows: "3", placeholder: "usernames or phone numbers, one a line" });
    const picker = this._peoplePicker();
    this._showDialog(
      "New group",
      [h("label", {}, "Name", name), picker.element, h("label", {}, "Others by username or phone", ids)],
      "Create group",
      async () => {
        const members = new Set(picker.chosen());
        for (const id of await findUsers(this.m, ids.value)) members.add(id);
        members.delete(this.m.me);
        await this.m.createGroup(name.value.trim(), [...members]);
      },
    );
  }

  _addMemberDialog(chat) {
    const ids = h("textarea", { id: "add-member-ids", rows: "2", placeholder: "usernames or phone numbers, one a line" });
    const current = new Set([...chat.members.entries()].filter(([, c]) => c.active).map(([id]) => id));
    const picker = this._peoplePicker(current);
    this._showDialog(`Add to ${chat.name || "group"}`, [picker.element, h("label", {}, "By username or phone", ids)], "Add", async () => {
      const wanted = new Set([...picker.chosen(), ...(await findUsers(this.m, ids.value))]);
      if (!wanted.size) throw new Error("choose someone to add");
      for (const id of wanted) await this.m.addMember(chat.id, id);
    });
  }
}
