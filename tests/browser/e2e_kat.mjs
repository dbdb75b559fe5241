// Runs e2e_kat.js in Debian's chromium (headless, playwright-core) on a page served
// from disk through request routing: http://127.0.0.1:9/ is never reached, and is a
// secure context (loopback), so Web Crypto is there. Prints one line per check; exits
// non-zero when one fails.
//
// Environment: PARLEY_VECTORS (a JSON file from e2e_vectors.py), PARLEY_CHROMIUM;
// PARLEY_E2E_COSTS=1 also prints what each operation costs in this browser (docs/e2e.md).

import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const staticDir = path.resolve(here, "../../commands/static");
const vectors = JSON.parse(readFileSync(process.env.PARLEY_VECTORS, "utf8"));
const origin = "http://127.0.0.1:9";

const browser = await chromium.launch({
  executablePath: process.env.PARLEY_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
let failed = 0;
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (error) => console.log(`page error: ${error.message}`));
  await page.route(`${origin}/**`, (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === "/") return route.fulfill({ contentType: "text/html", body: "<!doctype html><title>kat</title>" });
    const file = url.pathname.startsWith("/web/") ? path.join(staticDir, url.pathname.slice(5)) : path.join(here, url.pathname.slice(1));
    return route.fulfill({ path: file, contentType: "text/javascript" });
  });
  await page.goto(`${origin}/`);
  const results = await page.evaluate(async (v) => (await import("/e2e_kat.js")).run(v), vectors);
  for (const r of results) {
    console.log(`${r.ok ? "ok  " : "FAIL"} ${r.name}${r.ok ? "" : `\n     ${r.detail.replace(/\n/g, "\n     ")}`}`);
    if (!r.ok) failed += 1;
  }
  console.log(`${results.length - failed} passed, ${failed} failed`);
  if (process.env.PARLEY_E2E_COSTS) {
    const costs = await page.evaluate(async () => (await import("/e2e_kat.js")).costs());
    for (const [name, ms] of Object.entries(costs)) console.log(`cost ${name}: ${ms} ms`);
  }
  if (!results.length) failed = 1;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
