// Browser windows for a Python test to drive (tests/browser/web_driver.py): one JSON
// command a line on stdin, one JSON answer a line on stdout, `{"id", "ok", "value"}` or
// `{"id", "ok": false, "error"}`. Each named window is its own browser context (its own
// storage: another device). Every window's WebSocket passes through a route that can
// hold back one pushed message (`hold`): the page then fills the gap with a sync, so it
// gets that message after the ones behind it.
//
// Environment: PARLEY_CHROMIUM (default /usr/bin/chromium).

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const WAIT = 20_000;
const browser = await chromium.launch({
  executablePath: process.env.PARLEY_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const windows = new Map(); // name -> {page, problems, holds, held}

function window(name) {
  const found = windows.get(name);
  if (!found) throw new Error(`no window ${name}`);
  return found;
}

const commands = {
  async open({ name }) {
    const context = await browser.newContext({ viewport: { width: 960, height: 640 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const w = { page, problems: [], holds: [], held: [] };
    page.on("pageerror", (error) => w.problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      const mediaLag = /\/v1\/chats\/[^/]+\/media\//.test(message.location().url || ""); // see two_windows.mjs
      if (message.type() === "error" && !mediaLag) w.problems.push(`console error: ${message.text()}`);
    });
    await page.routeWebSocket(/\/ws/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((frame) => server.send(frame));
      server.onMessage((frame) => {
        let parsed = null;
        try {
          parsed = JSON.parse(frame);
        } catch {
          /* passed on as it is */
        }
        const rule = parsed && parsed.type === "message" && w.holds.findIndex((h) => h.chat_id === parsed.chat_id && h.seq === parsed.seq);
        if (rule !== null && rule !== false && rule >= 0) {
          w.holds.splice(rule, 1);
          w.held.push(parsed.seq);
          return; // dropped: the page sees a gap and asks for it
        }
        ws.send(frame);
      });
    });
    windows.set(name, w);
  },
  async login({ name, base, username, password }) {
    const { page } = window(name);
    await page.goto(base);
    await page.fill("#auth-username", username);
    await page.fill("#auth-password", password);
    await page.click("#auth-submit");
    await page.waitForSelector('#connection-state[data-state="online"]', { timeout: WAIT });
    await page.waitForFunction(() => window.parley.messenger.crypto.published === true, null, { timeout: WAIT });
    return page.evaluate(() => ({ user_id: window.parley.messenger.me, device_id: window.parley.messenger.session.device_id }));
  },
  async eval({ name, body, arg }) {
    return window(name).page.evaluate(`(async (arg) => { ${body} })(${JSON.stringify(arg ?? null)})`);
  },
  async wait({ name, body, arg, timeout }) {
    const expression = `(() => { const arg = ${JSON.stringify(arg ?? null)}; ${body} })()`;
    await window(name).page.waitForFunction(expression, null, { timeout: timeout || WAIT });
  },
  async click({ name, selector }) {
    await window(name).page.click(selector, { timeout: WAIT });
  },
  async fill({ name, selector, value }) {
    await window(name).page.fill(selector, value, { timeout: WAIT });
  },
  async press({ name, selector, key }) {
    await window(name).page.press(selector, key, { timeout: WAIT });
  },
  async waitFor({ name, selector, state }) {
    await window(name).page.waitForSelector(selector, { timeout: WAIT, state: state || "visible" });
  },
  async text({ name, selector }) {
    return window(name).page.textContent(selector, { timeout: WAIT });
  },
  async hold({ name, chat_id, seq }) {
    window(name).holds.push({ chat_id, seq });
  },
  async held({ name }) {
    return window(name).held;
  },
  async problems({ name }) {
    return window(name).problems;
  },
  async screenshot({ name, path }) {
    await window(name).page.screenshot({ path });
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, op, ...args } = JSON.parse(line);
  if (op === "quit") break;
  let answer;
  try {
    answer = { id, ok: true, value: (await commands[op](args)) ?? null };
  } catch (error) {
    answer = { id, ok: false, error: `${op}: ${error.message}` };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await browser.close();
