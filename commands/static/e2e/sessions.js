// Pairwise sessions, as client/e2e/sessions.py makes them: X3DH (as the `x3dh` 1.3.0
// package does it, info "parley-e2e-v1", SHA-256, Ed25519 identity keys, keys encoded
// as their 32 bytes) to start one with a device, the Double Ratchet (ratchet.js) after
// it, and this device's keys with the ids the server knows them by.
//
//   active:  dh1 = X25519(IK_a, SPK_b), dh2 = X25519(EK_a, IK_b), dh3 = X25519(EK_a, SPK_b),
//            dh4 = X25519(EK_a, OPK_b) when there is one
//   secret = HKDF-SHA-256(salt = 32 zero bytes, ikm = 32 x 0xFF || dh1 || dh2 || dh3 || dh4,
//                         info = "parley-e2e-v1"), 32 bytes; ad = IK_a || IK_b (Ed25519 forms)
//
// The ratchet starts with an empty message (n = 0) whose header travels as `init` in the
// X3DH header of every message until the peer answers. The passive side works on copies
// and keeps the session (and uses up the one-time prekey) only if the message decrypts.

import { b64, concat, pyJson, randomBytes, unb64, utf8 } from "./bytes.js";
import { ed25519Sign, ed25519Verify, edToMontgomery, generateX25519, hkdf, identityFromSeed, x25519 } from "./primitives.js";
import { INFO, Ratchet, RatchetError } from "./ratchet.js";

export const PREKEY_TARGET = 100; // one-time prekeys a device keeps on the server
export const PREKEY_LOW = 50; // below this many left there, upload new ones
export const UPLOAD_MAX = 100; // one-time prekeys in one PUT /v1/me/keys
export const SIGNED_PREKEY_DAYS = 7; // the `x3dh` package's rotation period

export class SessionError extends Error {}

const X3DH_INFO = utf8(INFO);
const PADDING = new Uint8Array(32).fill(0xff);

async function sharedSecret(...parts) {
  return hkdf(concat(PADDING, ...parts), new Uint8Array(32), X3DH_INFO, 32);
}

/** One message for one device, as the Python client's `Envelope` (docs/e2e.md). */
export class Envelope {
  constructor(dh, pn, n, ciphertext, prekey = null) {
    Object.assign(this, { dh, pn, n, ciphertext, prekey });
  }

  get header() {
    return { dh: this.dh, pn: this.pn, n: this.n };
  }

  /** The fields in the Python client's order; `sd` (the sending device) last. */
  wire(device) {
    const data = { v: 1, dh: b64(this.dh), pn: this.pn, n: this.n, ct: b64(this.ciphertext) };
    if (this.prekey) data.x3dh = this.prekey;
    if (device !== undefined) data.sd = device;
    return data;
  }

  static fromWire(data) {
    try {
      const n = (x) => {
        if (!Number.isSafeInteger(x) || x < 0) throw new Error("not a count");
        return x;
      };
      return new Envelope(unb64(data.dh), n(data.pn), n(data.n), unb64(data.ct), data.x3dh || null);
    } catch (error) {
      throw new SessionError(`not an envelope: ${error.message}`);
    }
  }
}

/** The ratchet with one device, and the associated data X3DH gave it. */
export class Session {
  constructor(ratchet, ad, peerIdentity, pendingPrekey = null) {
    Object.assign(this, { ratchet, ad, peerIdentity, pendingPrekey });
  }

  toRecord() {
    return { ratchet: this.ratchet.toRecord(), ad: this.ad, peerIdentity: this.peerIdentity, pendingPrekey: this.pendingPrekey };
  }

  static fromRecord(record, generate) {
    return new Session(Ratchet.fromRecord(record.ratchet, generate), record.ad, record.peerIdentity, record.pendingPrekey);
  }

  async encrypt(plaintext) {
    const { header, ciphertext } = await this.ratchet.encrypt(plaintext, this.ad);
    return new Envelope(header.dh, header.pn, header.n, ciphertext, this.pendingPrekey);
  }

  async decrypt(envelope) {
    try {
      const plaintext = await this.ratchet.decrypt(envelope.header, envelope.ciphertext, this.ad);
      this.pendingPrekey = null; // the peer has the session: it answered
      return plaintext;
    } catch (error) {
      throw new SessionError(error instanceof RatchetError ? error.message : error.name);
    }
  }
}

/**
 * This device's keys: identity, signed prekey (and the previous one), one-time prekeys,
 * each with its id. The record holds CryptoKeys, so it goes to IndexedDB as it is.
 */
export class Device {
  constructor(record, generate = generateX25519) {
    this.record = record;
    this.generate = generate;
  }

  static async create(generate = generateX25519, seed = randomBytes(32)) {
    const identity = await identityFromSeed(seed);
    seed.fill(0);
    const device = new Device({ identity, spk: null, oldSpk: null, opks: [], uploadedUpTo: 0, nextId: 1 }, generate);
    await device.rotateSignedPrekey();
    device.record.oldSpk = null;
    await device.makePrekeys(PREKEY_TARGET);
    return device;
  }

  get identityKey() {
    return this.record.identity.pub;
  }

  _newId() {
    const id = this.record.nextId;
    this.record.nextId += 1;
    return id;
  }

  async rotateSignedPrekey(now = Date.now()) {
    const pair = await this.generate();
    const sig = await ed25519Sign(this.record.identity.signing, pair.pub);
    this.record.oldSpk = this.record.spk;
    this.record.spk = { id: this._newId(), priv: pair.priv, pub: pair.pub, sig, created: now };
  }

  signedPrekeyDue(now = Date.now()) {
    return now - this.record.spk.created > SIGNED_PREKEY_DAYS * 86_400_000;
  }

  async makePrekeys(count) {
    for (let i = 0; i < count; i += 1) {
      const pair = await this.generate();
      this.record.opks.push({ id: this._newId(), priv: pair.priv, pub: pair.pub });
    }
  }

  /** New one-time prekeys when the server's pool runs low (counting those not sent yet). */
  async refill(leftOnServer) {
    const coming = this.record.opks.filter((k) => k.id > this.record.uploadedUpTo).length;
    if (leftOnServer + coming < PREKEY_LOW) await this.makePrekeys(PREKEY_TARGET - leftOnServer - coming);
  }

  /** The `PUT /v1/me/keys` body: identity, signed prekey, one-time prekeys never sent. */
  uploadBody() {
    const { identity, spk, opks, uploadedUpTo } = this.record;
    return {
      identity_key: b64(identity.pub),
      signed_prekey: { key_id: spk.id, public_key: b64(spk.pub), signature: b64(spk.sig) },
      one_time_prekeys: opks
        .filter((k) => k.id > uploadedUpTo)
        .slice(0, UPLOAD_MAX)
        .map((k) => ({ key_id: k.id, public_key: b64(k.pub) })),
    };
  }

  markUploaded(body) {
    for (const key of body.one_time_prekeys) this.record.uploadedUpTo = Math.max(this.record.uploadedUpTo, key.key_id);
  }

  /** X3DH, actively, with a device's bundle from the server (its signature checked). */
  async startSession(bundle) {
    const identityKey = unb64(bundle.identity_key);
    const spk = bundle.signed_prekey;
    const spkPub = unb64(spk.public_key);
    if (!(await ed25519Verify(identityKey, unb64(spk.signature), spkPub))) {
      throw new SessionError("The signature of the signed pre key could not be verified.");
    }
    const opk = bundle.one_time_prekey || null;
    const ephemeral = await this.generate();
    const own = this.record.identity;
    const parts = [
      await x25519(own.dh, spkPub),
      await x25519(ephemeral.priv, edToMontgomery(identityKey)),
      await x25519(ephemeral.priv, spkPub),
    ];
    if (opk) parts.push(await x25519(ephemeral.priv, unb64(opk.public_key)));
    const secret = await sharedSecret(...parts);
    const ad = concat(own.pub, identityKey);
    const ratchet = await Ratchet.active(secret, spkPub, this.generate);
    const { header, ciphertext } = await ratchet.encrypt(new Uint8Array(0), ad);
    const init = new Envelope(header.dh, header.pn, header.n, ciphertext).wire();
    const prekey = { ik: b64(own.pub), ek: b64(ephemeral.pub), spk_id: spk.key_id, opk_id: opk ? opk.key_id : null, init };
    return new Session(ratchet, ad, identityKey, prekey);
  }

  /** X3DH, passively, from a first message: [session, plaintext]. The one-time prekey
   *  it names is used up (removed from the record) only if the message decrypts. */
  async openPrekeyMessage(envelope) {
    const p = envelope.prekey;
    const { spk, oldSpk, opks, identity } = this.record;
    const signed = [spk, oldSpk].find((k) => k && k.id === p.spk_id);
    const oneTime = p.opk_id === null || p.opk_id === undefined ? null : opks.find((k) => k.id === p.opk_id);
    if (!signed || oneTime === undefined) throw new SessionError("the first message names a prekey this device does not have");
    let session;
    let plaintext;
    try {
      const theirIdentity = unb64(p.ik);
      const ephemeral = unb64(p.ek);
      const parts = [
        await x25519(signed.priv, edToMontgomery(theirIdentity)),
        await x25519(identity.dh, ephemeral),
        await x25519(signed.priv, ephemeral),
      ];
      if (oneTime) parts.push(await x25519(oneTime.priv, ephemeral));
      const secret = await sharedSecret(...parts);
      const ad = concat(theirIdentity, identity.pub);
      const init = Envelope.fromWire(p.init);
      const ratchet = await Ratchet.passive(secret, signed, init.dh, this.generate);
      await ratchet.decryptInitial(init.header, init.ciphertext, ad);
      session = new Session(ratchet, ad, theirIdentity);
      plaintext = await session.decrypt(envelope);
    } catch (error) {
      throw new SessionError(error instanceof SessionError ? error.message : `${error.name}: ${error.message}`);
    }
    if (oneTime) this.record.opks = opks.filter((k) => k !== oneTime);
    return [session, plaintext];
  }
}

/** A 1:1 content object as the bytes the Python client encrypts: `json.dumps(content)`. */
export function contentBytes(content) {
  return utf8(pyJson(content));
}

/** An envelope's bytes on the wire: `json.dumps` of its fields with `sd` (docs/e2e.md). */
export function envelopeBytes(envelope, device) {
  return utf8(pyJson(envelope.wire(device)));
}
