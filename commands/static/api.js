// HTTP: the accounts API of the commands service (docs/auth.md) and, when it runs, the
// query API (docs/queries.md) for profiles. Tokens live in sessionStorage, so two
// windows of one browser can be two users.

const SESSION_KEY = "parley.session";

export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

async function postJson(path, body, token = "") {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "unavailable", "the server does not answer");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    const retry = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError(response.status, error.code || "http_error", error.message, retry);
  }
  return data;
}

/** The web client's settings from the server: where the query API is, if it runs. */
export async function loadConfig() {
  try {
    const response = await fetch("/web/config.json");
    if (response.ok) return await response.json();
  } catch {
    /* the defaults below */
  }
  return { queries_url: null };
}

/** A stable device id per username in this browser (an account holds at most 16). */
function deviceIdFor(username) {
  const key = `parley.device.${username}`;
  let id = localStorage.getItem(key);
  if (!id) {
    id = `web-${Math.random().toString(36).slice(2, 10)}`;
    localStorage.setItem(key, id);
  }
  return id;
}

export async function register({ username, phone, displayName, password }) {
  const body = { username, phone, password };
  if (displayName) body.display_name = displayName;
  return postJson("/v1/auth/register", body);
}

/** One logged-in device: its tokens, refreshed before they expire, one refresh at a time. */
export class Session {
  constructor(data) {
    Object.assign(this, data); // user_id, username, device_id, access_token, refresh_token, expires_at
    this._refreshing = null;
  }

  static restore() {
    const raw = sessionStorage.getItem(SESSION_KEY);
    return raw ? new Session(JSON.parse(raw)) : null;
  }

  static async login(username, password) {
    const device_id = deviceIdFor(username.toLowerCase());
    const pair = await postJson("/v1/auth/login", {
      username,
      password,
      device_id,
      device_name: "Parley web",
    });
    const session = new Session({ username: username.toLowerCase() });
    session._take(pair);
    return session;
  }

  _take(pair) {
    this.user_id = pair.user_id;
    this.device_id = pair.device_id;
    this.access_token = pair.access_token;
    this.refresh_token = pair.refresh_token; // the old one is spent: keep only this one
    this.expires_at = Date.now() + pair.expires_in * 1000;
    const { _refreshing, ...stored } = this;
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(stored));
  }

  /** An access token valid for at least another minute (refreshing it if needed). */
  async accessToken() {
    if (Date.now() < this.expires_at - 60_000) return this.access_token;
    await this.refresh();
    return this.access_token;
  }

  refresh() {
    this._refreshing ??= postJson("/v1/auth/refresh", { refresh_token: this.refresh_token })
      .then((pair) => this._take(pair))
      .finally(() => {
        this._refreshing = null;
      });
    return this._refreshing;
  }

  async logout() {
    sessionStorage.removeItem(SESSION_KEY);
    await postJson("/v1/auth/logout", { refresh_token: this.refresh_token }).catch(() => {});
  }

  forget() {
    sessionStorage.removeItem(SESSION_KEY);
  }
}

/** Profiles (display names) from the query API; ids stand in when it is not there. */
export class Profiles {
  constructor(session, queriesUrl, onChange) {
    this.session = session;
    this.queriesUrl = queriesUrl;
    this.onChange = onChange;
    this.known = new Map(); // user_id -> {display_name, username}
    this.asked = new Map(); // user_id -> when last asked (ms)
    this.known.set(session.user_id, { display_name: session.username, username: session.username });
  }

  name(userId) {
    const profile = this.known.get(userId);
    if (profile) return profile.display_name || profile.username;
    this._fetch(userId);
    return `user ${userId.slice(0, 8)}`;
  }

  async lookup(userId) {
    await this._fetch(userId, true);
    return this.known.get(userId) || null;
  }

  async _fetch(userId, force = false) {
    if (!this.queriesUrl) return;
    const last = this.asked.get(userId) || 0;
    if (!force && Date.now() - last < 30_000) return;
    this.asked.set(userId, Date.now());
    try {
      const token = await this.session.accessToken();
      const response = await fetch(`${this.queriesUrl}/v1/users/${encodeURIComponent(userId)}`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      if (!response.ok) return;
      const profile = await response.json();
      this.known.set(userId, profile);
      this.onChange();
    } catch {
      /* the query API is down or not reachable from this page: ids it is */
    }
  }
}

/**
 * The user with exactly this username or phone number (`POST /v1/users/lookup`,
 * docs/auth.md): {user_id, username, display_name}, or an ApiError (`unknown_user`,
 * `invalid_username`, `invalid_phone`, `rate_limited`). A leading "@" is dropped; a
 * handle starting with "+" or a digit is a phone number.
 */
export async function lookupUser(session, handle) {
  const text = handle.trim().replace(/^@/, "");
  const body = /^[+\d]/.test(text) ? { phone: text } : { username: text };
  return postJson("/v1/users/lookup", body, await session.accessToken());
}

/** The user's contacts: listed by the query API, changed on the commands service. */
export class Contacts {
  constructor(session, queriesUrl, profiles, onChange) {
    this.session = session;
    this.queriesUrl = queriesUrl;
    this.profiles = profiles; // told each contact's name
    this.onChange = onChange;
    this.list = []; // [{user_id, username, display_name}] by display name
    this.loaded = false;
  }

  has(userId) {
    return this.list.some((c) => c.user_id === userId);
  }

  async load() {
    if (!this.queriesUrl) return;
    try {
      const token = await this.session.accessToken();
      const response = await fetch(`${this.queriesUrl}/v1/contacts`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      if (!response.ok) return;
      this.list = (await response.json()).contacts;
      for (const contact of this.list) this.profiles.known.set(contact.user_id, contact);
      this.loaded = true;
      this.onChange();
    } catch {
      /* the query API is down or not reachable from this page: no list for now */
    }
  }

  /** Add or remove a contact by user id, then read the list again. */
  async change(action, userId) {
    await postJson("/v1/me/contacts", { action, user_id: userId }, await this.session.accessToken());
    await this.load();
  }
}
