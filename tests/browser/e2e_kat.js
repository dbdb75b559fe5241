// Known-answer tests of the web client's end-to-end encryption against vectors the
// Python client made (e2e_vectors.py). Runs in the browser page (e2e_kat.mjs loads it):
// the web client, given each Python party's keys and randomness, must write the same
// bytes and read the other's.

import { b64, fromUtf8, pyJson, unb64, utf8 } from "/web/e2e/bytes.js";
import { KeyStore } from "/web/e2e/keystore.js";
import { decryptFile, encryptFile } from "/web/e2e/media.js";
import { identityFromSeed, missingPrimitive, x25519FromScalar } from "/web/e2e/primitives.js";
import { safetyNumber } from "/web/e2e/safety.js";
import { decryptGroup, distribution, encryptGroup, newOwnSenderKey, peerSenderKey } from "/web/e2e/sender_keys.js";
import { Device, Envelope, envelopeBytes } from "/web/e2e/sessions.js";

const results = [];

function check(name, ok, detail = "") {
  results.push({ name, ok: Boolean(ok), detail: ok ? "" : String(detail).slice(0, 400) });
}

function same(name, got, want) {
  check(name, got === want, `got ${got}\nwant ${want}`);
}

/** Key pairs from a Python party's logged randomness, in the order it used them. */
function replay(log) {
  const queue = log.map(unb64);
  return async () => {
    if (!queue.length) throw new Error("the replayed randomness ran out");
    return x25519FromScalar(queue.shift());
  };
}

async function deviceFrom(secrets, generate) {
  const identity = await identityFromSeed(unb64(secrets.identity_seed));
  same("identity key from the seed", b64(identity.pub), secrets.identity_key);
  const spkPair = await x25519FromScalar(unb64(secrets.signed_prekey.private));
  same("signed prekey public from private", b64(spkPair.pub), secrets.signed_prekey.public_key);
  const spk = { id: secrets.signed_prekey.key_id, priv: spkPair.priv, pub: spkPair.pub, sig: unb64(secrets.signed_prekey.signature), created: Date.now() };
  const opks = [];
  for (const k of secrets.one_time_prekeys) {
    const pair = await x25519FromScalar(unb64(k.private));
    opks.push({ id: k.key_id, priv: pair.priv, pub: pair.pub });
  }
  return new Device({ identity, spk, oldSpk: null, opks, uploadedUpTo: 0, nextId: secrets.next_id }, generate);
}

async function conversation(name, v) {
  const devices = {
    alice: await deviceFrom(v.alice, replay(v.randomness.alice)),
    bob: await deviceFrom(v.bob, replay(v.randomness.bob)),
  };
  const sessions = { alice: await devices.alice.startSession(v.bundle) };
  const opkBefore = devices.bob.record.opks.length;
  let i = 0;
  for (const step of v.steps) {
    i += 1;
    const label = `${name} step ${i}: ${step.who} ${step.op}s`;
    try {
      if (step.op === "encrypt") {
        const envelope = await sessions[step.who].encrypt(unb64(step.plain));
        same(`${label}: the same envelope bytes`, b64(envelopeBytes(envelope, `${step.who}-device`)), step.wire);
        const content = JSON.parse(fromUtf8(unb64(step.plain)));
        same(`${label}: the content's bytes (json.dumps)`, b64(utf8(pyJson(content))), step.plain);
      } else {
        const envelope = Envelope.fromWire(JSON.parse(fromUtf8(unb64(step.wire))));
        let plain;
        if (!sessions[step.who]) {
          [sessions[step.who], plain] = await devices[step.who].openPrekeyMessage(envelope);
          const used = v.bundle.one_time_prekey ? 1 : 0;
          same(`${label}: one-time prekeys used up`, opkBefore - devices.bob.record.opks.length, used);
        } else plain = await sessions[step.who].decrypt(envelope);
        same(`${label}: the plaintext`, b64(plain), step.plain);
      }
    } catch (error) {
      check(label, false, `${error.name}: ${error.message}`);
    }
  }
  // A message read once does not open twice; a forged one does not open at all.
  const last = v.steps.filter((s) => s.op === "decrypt").at(-1);
  const again = Envelope.fromWire(JSON.parse(fromUtf8(unb64(last.wire))));
  const refused = await sessions[last.who].decrypt(again).then(() => false, () => true);
  check(`${name}: a replayed message is refused`, refused);
  const forged = Envelope.fromWire(JSON.parse(fromUtf8(unb64(last.wire))));
  forged.ciphertext[0] ^= 1;
  check(`${name}: a changed ciphertext is refused`, await sessions[last.who].decrypt(forged).then(() => false, () => true));
  // The Python bundle's signature is checked: a wrong one stops X3DH.
  const bad = structuredClone(v.bundle);
  const sig = unb64(bad.signed_prekey.signature);
  sig[5] ^= 1;
  bad.signed_prekey.signature = b64(sig);
  const alice2 = await deviceFrom(v.alice, replay(v.randomness.alice));
  check(`${name}: a bad prekey signature is refused`, await alice2.startSession(bad).then(() => false, () => true));
}

async function senderKeys(v) {
  const own = await newOwnSenderKey(unb64(v.signing_seed), unb64(v.chain_key), v.key_id);
  same("sender key distribution bytes", b64(utf8(pyJson(distribution(own, v.chat_id)))), v.distribution);
  for (const [i, m] of v.messages.entries()) {
    const wire = await encryptGroup(own, v.chat_id, v.user, v.device, unb64(m.plain));
    wire.sd = v.device;
    same(`group message ${i}: the same bytes (deterministic Ed25519 and AES-GCM)`, b64(utf8(pyJson(wire))), m.wire);
  }
  const peer = peerSenderKey(JSON.parse(fromUtf8(unb64(v.distribution))));
  for (const i of [2, 0, 3]) {
    const wire = JSON.parse(fromUtf8(unb64(v.messages[i].wire)));
    const plain = await decryptGroup(peer, v.chat_id, v.user, v.device, wire).catch((e) => e);
    same(`group message ${i} read out of order (1 lost)`, plain instanceof Error ? plain.message : b64(plain), v.messages[i].plain);
  }
  const replayed = JSON.parse(fromUtf8(unb64(v.messages[0].wire)));
  check("a group message read once is refused again", await decryptGroup(peer, v.chat_id, v.user, v.device, replayed).then(() => false, () => true));
  const forged = JSON.parse(fromUtf8(unb64(v.messages[1].wire)));
  check(
    "a group message under another device's name is refused",
    await decryptGroup(peer, v.chat_id, v.user, "laptop", forged).then(() => false, () => true),
  );
}

async function media(v) {
  const [sealed, info] = await encryptFile(unb64(v.data), unb64(v.key), unb64(v.nonce));
  same("encrypted file bytes", b64(sealed), v.sealed);
  same("file info", pyJson(info), pyJson(v.info));
  same("Python's encrypted file opens", b64(await decryptFile(unb64(v.sealed), v.info)), v.data);
  const changed = unb64(v.sealed);
  changed[40] ^= 1;
  check("a changed file is refused", await decryptFile(changed, v.info).then(() => false, () => true));
}

export async function run(vectors) {
  const missing = await missingPrimitive();
  check(`this browser has every primitive (${navigator.userAgent})`, missing === null, missing);
  if (missing) return results;
  same("json.dumps, default separators", pyJson(vectors.json.value), vectors.json.default);
  same("json.dumps, compact", pyJson(vectors.json.value, true), vectors.json.compact);
  await conversation("X3DH with a one-time prekey", vectors.conversation);
  await conversation("X3DH without one", vectors.conversation_without_one_time_prekey);
  await senderKeys(vectors.sender_keys);
  await media(vectors.media);
  const s = vectors.safety;
  same("safety number", await safetyNumber(s.user_a, s.keys_a.map(unb64), s.user_b, s.keys_b.map(unb64)), s.number);
  same("safety number, the other side", await safetyNumber(s.user_b, s.keys_b.map(unb64), s.user_a, s.keys_a.map(unb64)), s.number);
  return results;
}

/** What each operation costs in this browser: wall-clock ms per operation (Web Crypto
 *  runs on the page's thread here; the figures are for docs/e2e.md). */
export async function costs() {
  const out = {};
  const time = async (name, n, run) => {
    const started = performance.now();
    for (let i = 0; i < n; i += 1) await run(i);
    out[name] = Number(((performance.now() - started) / n).toFixed(3));
  };
  let bob;
  await time("a new device: identity, signed prekey, 100 one-time prekeys", 3, async () => {
    bob = await Device.create();
  });
  const alice = await Device.create();
  const body = bob.uploadBody();
  const bundle = { identity_key: body.identity_key, signed_prekey: body.signed_prekey, one_time_prekey: body.one_time_prekeys[0] };
  let session;
  await time("X3DH, active (bundle to session)", 20, async () => {
    session = await alice.startSession(bundle);
  });
  const plain = utf8(pyJson({ type: "text", text: "x".repeat(100) }));
  const first = await session.encrypt(plain);
  const firsts = [];
  for (let i = 0; i < 20; i += 1) firsts.push(await (await alice.startSession(bundle)).encrypt(plain));
  await time("X3DH, passive (first message to session)", 20, async (i) => {
    bob.record.opks.unshift({ ...bob.record.opks[0] }); // the same prekey, again
    await bob.openPrekeyMessage(firsts[i]);
  });
  const [bobSession] = await bob.openPrekeyMessage(first);
  const sealed = [];
  await time("Double Ratchet, same chain: encrypt", 200, async () => sealed.push(await session.encrypt(plain)));
  await time("Double Ratchet, same chain: decrypt", 200, async (i) => bobSession.decrypt(sealed[i]));
  await time("Double Ratchet, turns taking (a DH step each): encrypt + decrypt", 50, async (i) => {
    const [from, to] = i % 2 ? [session, bobSession] : [bobSession, session];
    await to.decrypt(await from.encrypt(plain));
  });
  const own = await newOwnSenderKey();
  const peer = peerSenderKey(distribution(own, "chat"));
  const wires = [];
  await time("Sender Keys: encrypt (with signature)", 200, async () => wires.push(await encryptGroup(own, "chat", "u", "d", plain)));
  await time("Sender Keys: decrypt (with verification)", 200, async (i) => decryptGroup(peer, "chat", "u", "d", wires[i]));
  const store = await KeyStore.open(`costs/${Math.random()}`);
  const { opks, ...device } = bob.record; // the one-time prekeys have a record of their own
  const state = { device, sessions: { "u/d": [bobSession.toRecord()] }, lists: {}, ownKeys: {}, peerKeys: {}, identityChanges: [], encryptedWith: [] };
  await time("IndexedDB: the device's record read and written again (each change)", 50, async () => {
    await store.save((await store.load()) || state);
  });
  await time("IndexedDB: the 100 one-time prekeys read and written again (a new session)", 20, async () => {
    await store.savePrekeys((await store.prekeys()) || opks);
  });
  const keys = [alice.identityKey, bob.identityKey];
  await time("safety number (two users, one device each)", 3, async () => safetyNumber("a", [keys[0]], "b", [keys[1]]));
  return out;
}
