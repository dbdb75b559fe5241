// A device's end-to-end state in IndexedDB: its keys and sessions (one record), its
// one-time prekeys (a record of their own: a hundred CryptoKeys cost 4 ms to read and
// write again, ten times the rest of the record, and they change only when a session
// starts or the pool is refilled), and what it decrypted (one record per message: a
// ratchet cannot decrypt a message twice).
//
// Private keys are non-extractable CryptoKeys, stored as such: script on this origin
// can use them but not read them out. The chain keys of the ratchets are bytes. There is
// no passphrase at rest here (the Python client has one): the page would have to ask for
// it on every load; the browser profile's own protection is what guards this database.
// Two tabs of one device share it: every change runs under a Web Lock, reading the
// state afresh, so two tabs never send with the same message key.

const DB = "parley-e2e";
const STATE = "state";
const PLAIN = "plain";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function openDb() {
  const req = indexedDB.open(DB, 1);
  req.onupgradeneeded = () => {
    req.result.createObjectStore(STATE);
    req.result.createObjectStore(PLAIN);
  };
  return request(req);
}

export class KeyStore {
  /** The store of one device: `name` is "user id/device id". */
  constructor(db, name) {
    this.db = db;
    this.name = name;
  }

  static async open(name) {
    return new KeyStore(await openDb(), name);
  }

  _store(which, mode = "readonly") {
    return this.db.transaction(which, mode).objectStore(which);
  }

  async load() {
    return (await request(this._store(STATE).get(this.name))) || null;
  }

  async save(state) {
    await request(this._store(STATE, "readwrite").put(state, this.name));
  }

  /** The one-time prekeys ([{id, priv, pub}]), or null when none were kept yet. */
  async prekeys() {
    return (await request(this._store(STATE).get(`${this.name}#prekeys`))) || null;
  }

  async savePrekeys(prekeys) {
    await request(this._store(STATE, "readwrite").put(prekeys, `${this.name}#prekeys`));
  }

  async plain(chatId, seq) {
    return (await request(this._store(PLAIN).get(`${this.name}/${chatId}/${seq}`))) || null;
  }

  async keepPlain(chatId, seq, content) {
    await request(this._store(PLAIN, "readwrite").put(content, `${this.name}/${chatId}/${seq}`));
  }

  /** Run `fn` holding this device's lock (every tab of the origin waits for it). */
  locked(fn) {
    if (!navigator.locks) return fn();
    return navigator.locks.request(`parley-e2e:${this.name}`, fn);
  }
}
