// The one WebSocket (docs/protocol.md): connect with a fresh access token, answer
// requests by id, ping every heartbeat_s, and when the socket drops, reconnect by itself
// with exponential backoff and jitter. What to do on each (re)connect is the caller's
// `onOpen` (sync, then resend unacked sends).

const ANSWERS = new Set(["ack", "ok", "error", "pong", "presence", "sync_done"]);

export class RequestFailed extends Error {
  constructor(frame) {
    super(frame.message || frame.code);
    this.code = frame.code;
    this.frame = frame;
  }
}

export class Connection {
  constructor({ url, session, onOpen, onFrame, onState, onLoggedOut }) {
    this.url = url;
    this.session = session;
    this.onOpen = onOpen;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onLoggedOut = onLoggedOut;
    this.ws = null;
    this.state = "connecting"; // connecting | online | offline | stopped
    this.attempt = 0;
    this.retryAt = 0;
    this.waiters = new Map(); // request id -> {resolve, reject, timer}
    this.nextId = 1;
    this.hello = null;
    this._ping = null;
    this._retry = null;
  }

  start() {
    this.state = "connecting";
    this._open();
  }

  stop() {
    this.state = "stopped";
    clearTimeout(this._retry);
    clearInterval(this._ping);
    if (this.ws) this.ws.close(1000);
  }

  /** Drop the socket as a network failure would (for tests and the "go offline" button). */
  drop() {
    if (this.ws) this.ws.close(4000, "dropped by the client");
  }

  get online() {
    return this.state === "online";
  }

  async _open() {
    clearTimeout(this._retry);
    this._setState("connecting");
    let token;
    try {
      token = await this.session.accessToken();
    } catch (error) {
      if (error.status === 401) return this._loggedOut("session ended");
      return this._scheduleRetry(); // the service is unreachable: try again later
    }
    if (this.state === "stopped") return;
    const ws = new WebSocket(`${this.url}?access_token=${encodeURIComponent(token)}`);
    this.ws = ws;
    let greeted = false;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!greeted && frame.type === "hello") {
        greeted = true;
        this.hello = frame;
        this.attempt = 0;
        this._setState("online");
        const every = Math.max(5, frame.heartbeat_s || 20) * 1000;
        clearInterval(this._ping);
        this._ping = setInterval(() => this.request({ type: "ping" }).catch(() => {}), every);
        this.onOpen(frame);
        return;
      }
      this._dispatch(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this._ping);
      for (const [id, waiter] of this.waiters) {
        clearTimeout(waiter.timer);
        waiter.reject(new RequestFailed({ code: "disconnected", message: "the connection dropped" }));
        this.waiters.delete(id);
      }
      if (this.state === "stopped") return;
      if (event.code === 4001) return this._loggedOut("logged out");
      if (!greeted) this._checkSession();
      this._scheduleRetry();
    };
  }

  /**
   * A socket refused before the upgrade (HTTP 403: an expired or ended session) looks
   * the same as a network failure from here. If the service answers, refresh the tokens
   * before the next try; if the refresh is refused, the session is over.
   */
  async _checkSession() {
    try {
      const health = await fetch("/healthz", { cache: "no-store" });
      if (!health.ok) return;
      await this.session.refresh();
    } catch (error) {
      if (error.status === 401) this._loggedOut("session ended");
    }
  }

  _scheduleRetry() {
    if (this.state === "stopped") return;
    const base = Math.min(15_000, 500 * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this._setState("offline");
    this._retry = setTimeout(() => this._open(), delay);
  }

  /** Try now instead of waiting for the backoff (the browser says it is back online). */
  retryNow() {
    if (this.state === "offline") this._open();
  }

  _loggedOut(reason) {
    this.state = "stopped";
    clearTimeout(this._retry);
    this.onLoggedOut(reason);
  }

  _setState(state) {
    if (this.state === "stopped") return;
    this.state = state;
    this.onState(state);
  }

  _dispatch(frame) {
    const waiter = frame.id ? this.waiters.get(frame.id) : undefined;
    if (waiter && ANSWERS.has(frame.type)) {
      this.waiters.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.type === "error") waiter.reject(new RequestFailed(frame));
      else waiter.resolve(frame);
    }
    this.onFrame(frame);
  }

  /** Send a frame; false when there is no open socket. */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.online) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a frame with an id and wait for the answer to it. */
  request(frame, timeoutMs = 15_000) {
    const id = frame.id || `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...frame, id })) {
        reject(new RequestFailed({ code: "disconnected", message: "not connected" }));
        return;
      }
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new RequestFailed({ code: "timeout", message: "no answer in time" }));
      }, timeoutMs);
      this.waiters.set(id, { resolve, reject, timer });
    });
  }
}
