// Checks a running cluster's dashboard in Debian's Chromium (headless),
// driven by Playwright. crates/cairn/tests/dashboard.rs starts the cluster,
// makes one snapshot fail, and runs this with:
//   node dashboard.mjs URL TOKEN NODES SHOTS_DIR
// (NODES comma-separated). Exits 0 when every check passes; otherwise
// prints what failed and exits 1. Screenshots go to SHOTS_DIR.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, token, nodeList, shots] = process.argv.slice(2);
const nodes = nodeList.split(",");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CAIRN_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // The cluster's own CA signs the admin API's certificate.
    "--ignore-certificate-errors",
  ],
});
const page = await browser.newPage({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));

let failed = false;
async function check(what, f) {
  const began = Date.now();
  try {
    await f();
    console.log(`ok   ${what} (${Date.now() - began} ms)`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${what}: ${e.message.split("\n")[0]}`);
    await page.screenshot({ path: `${shots}/failed-${what.replace(/\W+/g, "-")}.png`, fullPage: true }).catch(() => {});
  }
}

// The page itself needs no credentials; everything it shows does.
await check("the page loads and asks for the token", async () => {
  const r = await page.goto(url);
  if (!r.ok()) throw new Error(`GET ${url}: ${r.status()}`);
  await page.waitForSelector("#banner:has-text('token')", { timeout: 5000 });
});

await check("with the token it shows every node, up", async () => {
  await page.fill("#token", token);
  await page.press("#token", "Enter");
  await page.dispatchEvent("#token", "change");
  for (const n of nodes) {
    await page.waitForSelector(`#graph g.node[data-node="${n}"][data-up="true"]`, { timeout: 5000 });
  }
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });
});

// The failure is early in the run, and newer snapshots may already have
// pushed it out of the main table: the failures table keeps it.
await check("a failed snapshot's reason is visible", async () => {
  const row = page.locator('#failures tr[data-status="failed"]').first();
  await row.waitFor({ timeout: 5000 });
  const reason = await row.locator("td.reason").innerText();
  if (!/timed out|unreachable|no report/.test(reason)) throw new Error(`reason shown: ${JSON.stringify(reason)}`);
});

// A snapshot committed after this point must appear within a few seconds
// of its commit. The commit is read from the admin API itself.
await check("a new snapshot shows within 3 s of its commit", async () => {
  const headers = { Authorization: "Bearer " + token };
  const list = async () => (await (await page.request.get(new URL("/snapshots", url).href, { headers })).json());
  const before = Math.max(-1, ...(await list()).filter((s) => s.durable_ms).map((s) => s.id));
  let id = null;
  const deadline = Date.now() + 10000;
  while (id === null && Date.now() < deadline) {
    const fresh = (await list()).filter((s) => s.durable_ms && s.id > before);
    if (fresh.length) id = fresh[0].id;
    else await page.waitForTimeout(50);
  }
  if (id === null) throw new Error("no snapshot was committed within 10 s");
  await page.waitForSelector(`tr[data-snapshot-id="${id}"][data-status="complete"]`, { timeout: 3000 });
});

await check("following a snapshot shows its diagram and contents", async () => {
  const row = page.locator('tr[data-status="complete"]').first();
  const id = await row.getAttribute("data-snapshot-id");
  await row.click();
  await page.waitForSelector(`#diagram svg polyline.cut[data-snapshot="${id}"]`, { timeout: 8000 });
  const dots = await page.locator("#diagram svg circle.record[data-process]").count();
  if (dots !== nodes.length) throw new Error(`${dots} record points for ${nodes.length} nodes`);
  await page.waitForSelector("#contents table", { timeout: 5000 });
  await page.screenshot({ path: `${shots}/snapshot.png`, fullPage: true });
});

await check("no console errors", async () => {
  if (consoleErrors.length) throw new Error(consoleErrors.join(" | "));
});

await browser.close();
process.exit(failed ? 1 : 0);
