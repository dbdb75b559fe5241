// Finding people and the contacts list. People are found by exact username or phone
// number (`POST /v1/users/lookup`, docs/auth.md), never by browsing; the contacts list
// comes from the query API (`GET /v1/contacts`, docs/queries.md).

import { ApiError, lookupUser } from "./api.js";
import { clear, h, UUID_RE } from "./dom.js";

/**
 * The user id of someone named by exact username ("ada", "@ada"), phone number
 * ("+44 7700 900123") or user id; an Error saying why not, for people.
 */
export async function findUser(m, handle) {
  const text = handle.trim();
  if (UUID_RE.test(text)) return text.toLowerCase();
  if (!text) throw new Error("give a username or a phone number");
  try {
    const found = await lookupUser(m.session, text);
    m.profiles.known.set(found.user_id, found);
    return found.user_id;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const shown = text.slice(0, 40);
    const why = {
      unknown_user: `nobody has the username or phone number ${shown}`,
      invalid_username: `${shown} is not a username (3-32 of a-z 0-9 _ .)`,
      invalid_phone: `${shown} is not a phone number (+ and 8-15 digits)`,
      rate_limited: `too many lookups: try again in ${error.retryAfterS || 10} s`,
    }[error.code];
    throw new Error(why || error.message);
  }
}

/** The user ids of several people, one a line (or by commas), each looked up. */
export async function findUsers(m, text) {
  const ids = [];
  for (const handle of text.split(/[\n,;]+/).map((s) => s.trim()).filter(Boolean)) {
    ids.push(await findUser(m, handle));
  }
  return ids;
}

/** The sidebar's contacts: a click opens the 1:1 chat; "Add" finds someone to add. */
export class ContactsPane {
  constructor(m, showDialog) {
    this.m = m;
    this.showDialog = showDialog;
    this.list = h("ul", { class: "contact-list", id: "contact-list" });
    this.root = h(
      "section",
      { class: "contacts", id: "contacts" },
      h(
        "header",
        { class: "contacts-header" },
        h("span", {}, "Contacts"),
        h("button", { class: "quiet small", id: "add-contact", onclick: () => this.addDialog() }, "Add"),
      ),
      this.list,
    );
  }

  render() {
    const contacts = this.m.contacts;
    const items = contacts.list.map((contact) =>
      h(
        "li",
        {
          class: "contact",
          dataset: { userId: contact.user_id },
          onclick: () => this.m.openDirect(contact.user_id),
        },
        h("span", { class: "contact-name" }, contact.display_name),
        h("span", { class: "contact-handle" }, `@${contact.username}`),
        h(
          "button",
          {
            class: "quiet small",
            title: "Remove from contacts",
            onclick: (event) => {
              event.stopPropagation();
              this.change("remove", contact.user_id);
            },
          },
          "×",
        ),
      ),
    );
    if (!items.length) {
      const text = contacts.queriesUrl ? "No contacts yet. Add finds people by username or phone number." : "Contacts need the query API.";
      items.push(h("li", { class: "empty-list" }, text));
    }
    clear(this.list, items);
  }

  addDialog() {
    const input = h("input", { id: "add-contact-handle", placeholder: "username or +phone number", required: true });
    this.showDialog("Add a contact", [h("label", {}, "Username or phone number", input)], "Add", async () => {
      const id = await findUser(this.m, input.value);
      if (id === this.m.me) throw new Error("that is you");
      await this.m.contacts.change("add", id);
    });
  }

  async change(action, userId) {
    try {
      await this.m.contacts.change(action, userId);
    } catch (error) {
      this.m.onNotice(`contacts not changed: ${error.message}`);
    }
  }
}
