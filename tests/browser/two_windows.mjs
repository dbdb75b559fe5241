// Two people in two browser windows (two contexts: separate storage, like two people):
// a message sent in one appears in the other; the sender's ticks go sent -> delivered ->
// read; the typing indicator shows; a dropped connection comes back by itself and syncs
// without duplicates; a group shows "read by N"; a photo attached in one shows its
// thumbnail in both and opens full size. Their chats are end-to-end encrypted (both see
// the same safety number; the photo is stored encrypted). A screenshot of each window is saved.
//
// Environment: PARLEY_WEB_URL (the commands service), PARLEY_ARTIFACTS (a folder),
// PARLEY_CHROMIUM (default /usr/bin/chromium). Exits non-zero on the first failure.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const base = process.env.PARLEY_WEB_URL;
const artifacts = process.env.PARLEY_ARTIFACTS || "artifacts";
const executablePath = process.env.PARLEY_CHROMIUM || "/usr/bin/chromium";
const WAIT = { timeout: 20_000 };
const started = Date.now();
const problems = [];
let lookingUpNobody = false;

function step(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`);
}

async function register(page, username, displayName) {
  await page.goto(base);
  await page.click("#tab-register");
  await page.fill("#auth-username", username);
  await page.fill("#auth-display-name", displayName);
  await page.fill("#auth-password", "correct horse battery");
  await page.click("#auth-submit");
  await page.waitForSelector("#me-id", WAIT);
  await page.waitForSelector('#connection-state[data-state="online"]', WAIT);
  // Its device publishes its encryption keys (docs/e2e.md) before anyone writes to it.
  await page.waitForFunction(() => window.parley.messenger.crypto.published === true, null, WAIT);
  return (await page.textContent("#me-id")).trim();
}

/** The status of our message with this text: pending, sent, delivered or read. */
function statusOf(page, text) {
  return page
    .locator(".msg.mine", { hasText: text })
    .first()
    .getAttribute("data-status");
}

async function waitForStatus(page, text, status) {
  await page.waitForSelector(`.msg.mine[data-status="${status}"] >> text=${text}`, WAIT);
}

async function texts(page) {
  return page.locator(".msg .text").allTextContents();
}

assert.ok(base, "set PARLEY_WEB_URL");
mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const pages = {};
try {
  const viewport = { width: 960, height: 640 };
  for (const name of ["alice", "bob"]) {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
    const page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`${name}: page error: ${error.message}`));
    page.on("console", (message) => {
      // Failed connection attempts while the test holds the network down are expected,
      // and so is the 404 of a lookup for nobody while the test asks for one.
      const text = message.text();
      // An encrypted photo is downloaded as soon as it arrives: the query API answers 404
      // until it has projected the message, and the page asks again a second later.
      const mediaLag = text.includes("404") && /\/v1\/chats\/[^/]+\/media\//.test(message.location().url || "");
      const expected = text.includes("ERR_INTERNET_DISCONNECTED") || (lookingUpNobody && text.includes("404")) || mediaLag;
      if (message.type() === "error" && !expected) problems.push(`${name}: console error: ${text}`);
    });
    pages[name] = page;
  }
  const { alice: a, bob: b } = pages;
  const suffix = Math.random().toString(36).slice(2, 8);
  const config = await (await fetch(`${base}/web/config.json`)).json();
  const withProfiles = Boolean(config.queries_url);

  step("alice and bob register, each in their own window");
  const aliceId = await register(a, `alice_${suffix}`, "Alice");
  const bobId = await register(b, `bob_${suffix}`, "Bob");
  assert.notEqual(aliceId, bobId);

  step("bob closes Parley; alice finds bob by his username and says hello");
  await b.goto("about:blank");
  await a.click("#new-chat");
  lookingUpNobody = true;
  await a.fill("#new-chat-user", `nobody_${suffix}`);
  await a.click("#dialog-submit");
  await a.waitForSelector("#dialog-error >> text=nobody has the username", WAIT);
  lookingUpNobody = false;
  await a.fill("#new-chat-user", `@BOB_${suffix}`); // as people type it: no case, an @
  await a.click("#dialog-submit");
  await a.waitForSelector("#composer-input", WAIT);
  await a.fill("#composer-input", "Hi Bob! Are you there?");
  await a.press("#composer-input", "Enter");
  await waitForStatus(a, "Hi Bob! Are you there?", "sent");
  await a.waitForTimeout(1_000);
  assert.equal(await statusOf(a, "Hi Bob! Are you there?"), "sent", "one tick while bob is away");

  step("bob comes back: the chat is in his list with 1 unread; alice sees two ticks");
  await b.goto(base); // the same tab: his session is still there
  await b.waitForSelector('.chat-item[data-unread="1"]', WAIT);
  await waitForStatus(a, "Hi Bob! Are you there?", "delivered");
  await b.waitForTimeout(500);
  assert.equal(await statusOf(a, "Hi Bob! Are you there?"), "delivered", "not read before bob opens it");

  step("bob opens the chat: alice's ticks turn blue");
  await b.click(".chat-item");
  await b.waitForSelector(".msg.theirs >> text=Hi Bob! Are you there?", WAIT);
  await waitForStatus(a, "Hi Bob! Are you there?", "read");
  const blue = await a
    .locator('.msg.mine[data-status="read"] .ticks')
    .first()
    .evaluate((el) => getComputedStyle(el).color);
  assert.equal(blue, "rgb(83, 189, 235)", "read ticks are blue");
  await b.waitForSelector('.chat-item[data-unread="0"]', WAIT);

  step("bob types: alice sees 'Bob is typing…'");
  await b.click("#composer-input");
  await b.keyboard.type("Yes! Just got here", { delay: 40 });
  await a.waitForSelector('#conversation-status[data-typing="yes"]', WAIT);
  const typing = await a.textContent("#conversation-status");
  assert.match(typing, /is typing/);
  step(`alice's header says: ${typing}`);
  await b.press("#composer-input", "Enter");
  await a.waitForSelector(".msg.theirs >> text=Yes! Just got here", WAIT);
  await a.waitForSelector('#conversation-status[data-typing="no"]', WAIT);
  await waitForStatus(b, "Yes! Just got here", "read"); // alice has the chat open

  step("alice's connection drops; bob writes meanwhile; alice writes too");
  await a.evaluate(() => window.parley.messenger.connection.drop());
  await a.context().setOffline(true); // and the network stays down for a while
  await a.waitForSelector('#connection-state[data-state="offline"]', WAIT);
  // Its retries fail while the network is down: two attempts made, offline again after
  // the second (a fixed wait would catch it mid-attempt, "connecting", now and then).
  await a.waitForFunction(() => {
    const connection = window.parley.messenger.connection;
    return connection.attempt >= 2 && connection.state === "offline";
  }, null, WAIT);
  assert.equal(await a.getAttribute("#connection-state", "data-state"), "offline");
  for (const text of ["one", "two", "three"]) {
    await b.fill("#composer-input", text);
    await b.press("#composer-input", "Enter");
    await waitForStatus(b, text, "sent");
  }
  await a.fill("#composer-input", "written while offline");
  await a.press("#composer-input", "Enter");
  await a.waitForSelector('.msg.mine[data-status="pending"] >> text=written while offline', WAIT);

  step("the network is back: alice reconnects by herself, syncs, resends; nothing twice");
  await a.context().setOffline(false);
  await a.waitForSelector('#connection-state[data-state="online"]', { timeout: 40_000 });
  await a.waitForSelector(".msg.theirs >> text=three", WAIT);
  await waitForStatus(a, "written while offline", "read"); // bob has the chat open
  await b.waitForSelector(".msg.theirs >> text=written while offline", WAIT);
  const seen = await texts(a);
  const expected = ["Hi Bob! Are you there?", "Yes! Just got here", "one", "two", "three", "written while offline"];
  assert.deepEqual(seen, expected, "alice's conversation, in order, each message once");
  assert.deepEqual(await texts(b), expected, "bob's conversation is the same");
  await waitForStatus(b, "three", "read");

  step("the chat is end-to-end encrypted: every message opened, both see the same safety number");
  for (const page of [a, b]) {
    await page.waitForSelector('#e2e-state[data-encrypted="yes"]', WAIT);
    const states = await page.locator(".msg[data-seq]").evaluateAll((els) => els.map((el) => el.dataset.e2e));
    assert.ok(states.length === expected.length && states.every((e) => e === "open"), `all encrypted: ${states}`);
  }
  const safety = [];
  for (const page of [a, b]) {
    await page.click("#safety-number");
    await page.waitForFunction(() => /^(\d{5} ){11}\d{5}$/.test(document.querySelector("#safety-number-digits").textContent), null, WAIT);
    safety.push(await page.textContent("#safety-number-digits"));
    await page.click("#dialog-submit");
  }
  assert.equal(safety[0], safety[1], "the same 60 digits on both sides");

  if (withProfiles) {
    step("alice adds bob to her contacts; he is listed by name and opens the chat");
    await a.click("#add-peer-contact");
    await a.waitForSelector(`#contact-list .contact[data-user-id="${bobId}"] >> text=Bob`, WAIT);
    await a.waitForSelector("#add-peer-contact", { state: "detached", ...WAIT });
  }

  step("alice creates a group with bob: 'read by' counts bob once he reads");
  await a.click("#new-group");
  await a.fill("#new-group-name", "Weekend trip");
  await a.check(`.people input[value="${bobId}"]`);
  await a.click("#dialog-submit");
  await a.waitForSelector("#conversation-title >> text=Weekend trip", WAIT);
  await a.fill("#composer-input", "Who brings the tent?");
  await a.press("#composer-input", "Enter");
  await a.waitForSelector('.read-by[data-read-by="0"]', WAIT);
  await b.click(".chat-item >> text=Weekend trip");
  await b.waitForSelector(".msg.theirs >> text=Who brings the tent?", WAIT);
  await a.waitForSelector('.read-by[data-read-by="1"]', WAIT);
  await b.fill("#composer-input", "I do");
  await b.press("#composer-input", "Enter");
  await a.waitForSelector(".msg.theirs >> text=I do", WAIT);

  step("back in the 1:1 chat, alice attaches a photo: encrypted, bob sees it and opens it");
  await a.click('.chat-item:not(:has-text("Weekend trip"))');
  await b.click('.chat-item:not(:has-text("Weekend trip"))');
  const png = Buffer.from(await a.evaluate(drawPhoto), "base64");
  await a.setInputFiles("#composer-file", { name: "sunset.png", mimeType: "image/png", buffer: png });
  await a.waitForSelector(".msg.mine .thumbnail", WAIT);
  await b.waitForSelector(".msg.theirs .thumbnail", WAIT);
  // The server made no thumbnail (it holds ciphertext): bob's page shows the photo it
  // downloaded and decrypted.
  await b.waitForFunction(() => document.querySelector(".msg.theirs .thumbnail").complete, null, WAIT);
  const shown = await b.locator(".msg.theirs .thumbnail").first().evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  assert.deepEqual(shown, [400, 240], `the 400 x 240 photo: ${shown}`);
  const stored = Buffer.from(await b.evaluate(storedFile), "base64");
  assert.equal(stored.length, png.length + 28, "the object store holds nonce + ciphertext + tag");
  assert.equal(stored.indexOf(png.subarray(0, 64)), -1, "and none of the photo's bytes");
  const [opened] = await Promise.all([
    b.context().waitForEvent("page", WAIT),
    b.click(".msg.theirs .thumbnail"),
  ]);
  await opened.waitForLoadState("load", WAIT);
  assert.match(opened.url(), /^blob:/, "the decrypted photo, from bob's page");
  const full = Buffer.from(await opened.evaluate(async () => {
    const bytes = new Uint8Array(await (await fetch(location.href)).arrayBuffer());
    return btoa(String.fromCharCode(...bytes));
  }), "base64");
  assert.equal(Buffer.compare(full, png), 0, "byte for byte the photo alice attached");
  await opened.close();

  step("bob starts typing; screenshots of both windows");
  if (withProfiles) {
    // The query API answers profiles: people are shown by their display names.
    await a.waitForSelector("#conversation-title >> text=Bob", WAIT);
    await b.waitForSelector("#conversation-title >> text=Alice", WAIT);
  }
  await a.waitForSelector(".msg.mine >> text=written while offline", WAIT);
  await b.click("#composer-input");
  await b.keyboard.type("See you at 8", { delay: 30 });
  await a.waitForSelector('#conversation-status[data-typing="yes"]', WAIT);
  await a.screenshot({ path: path.join(artifacts, "alice.png") });
  await b.screenshot({ path: path.join(artifacts, "bob.png") });
  await sideBySide(path.join(artifacts, "alice.png"), path.join(artifacts, "bob.png"), path.join(artifacts, "both.png"));

  assert.deepEqual(problems, [], "no errors in either page");
  step(`passed; screenshots in ${artifacts}`);
} catch (error) {
  for (const [name, page] of Object.entries(pages)) {
    await page.screenshot({ path: path.join(artifacts, `${name}-failure.png`) }).catch(() => {});
  }
  console.error(problems.join("\n"));
  throw error;
} finally {
  await browser.close();
}

/** A 400x240 landscape PNG drawn in the page (runs in the browser), as base64. */
function drawPhoto() {
  const canvas = document.createElement("canvas");
  canvas.width = 400;
  canvas.height = 240;
  const g = canvas.getContext("2d");
  const sky = g.createLinearGradient(0, 0, 0, 240);
  sky.addColorStop(0, "#ff9a3c");
  sky.addColorStop(1, "#2b1055");
  g.fillStyle = sky;
  g.fillRect(0, 0, 400, 240);
  g.fillStyle = "#ffd56b";
  g.beginPath();
  g.arc(200, 170, 50, 0, Math.PI * 2);
  g.fill();
  return canvas.toDataURL("image/png").split(",")[1];
}

/** The bytes the object store holds for the photo in the open chat (runs in the page), as base64. */
async function storedFile() {
  const m = window.parley.messenger;
  const message = m.openChat().sortedMessages().find((x) => x.secret && x.secret.type === "media");
  const { downloadUrl } = await import("/web/media.js");
  const url = await downloadUrl(m.session, m.profiles.queriesUrl, message.chat_id, message.secret.media_id);
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

/** One picture of the two windows next to each other, for the README. */
async function sideBySide(left, right, out) {
  const page = await browser.newPage({ viewport: { width: 1980, height: 680 } });
  const src = (file) => `data:image/png;base64,${readFileSync(file).toString("base64")}`;
  await page.setContent(
    `<body style="margin:0;background:#d1d7db;display:flex;gap:20px;padding:20px">
       <img src="${src(left)}" style="box-shadow:0 2px 10px #0003"><img src="${src(right)}" style="box-shadow:0 2px 10px #0003">
     </body>`,
  );
  await page.screenshot({ path: out });
  await page.close();
}
