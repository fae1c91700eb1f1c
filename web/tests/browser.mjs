// The page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core). Run by tests/it/browser.rs, which starts the daemon, writes the demo
// symbol's bars to PostgreSQL and checks the order this script places, in PostgreSQL.
//
// Environment: BASE_URL (the daemon), API_KEY (ingest + orders + read), SYMBOL,
// EXPECT_BARS (bars the database holds for SYMBOL), ARTIFACTS (screenshot directory),
// CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line: {"order_id", "tick_ms", "bars", "console_errors"}; exits 1 on a
// failed check, saying which.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (k, d) => process.env[k] ?? d ?? fail(`${k} is not set`);
const BASE = env("BASE_URL");
const KEY = env("API_KEY");
const SYMBOL = env("SYMBOL");
const EXPECT_BARS = Number(env("EXPECT_BARS"));
const ARTIFACTS = env("ARTIFACTS", "target/web-artifacts");

/** A failed check: thrown, so the browser is closed before the script exits 1. */
function fail(why) {
  throw new Error(why);
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  // Root in a container: Chromium's sandbox needs user namespaces it may not have.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
  headless: true,
});
const errors = [];
let page;
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));

  await page.goto(`${BASE}/?symbol=${encodeURIComponent(SYMBOL)}`);
  // The key is entered once, in the page, and kept in localStorage.
  await page.fill("#key", KEY);
  await page.press("#key", "Enter");
  await page.waitForFunction(() => localStorage.getItem("christmas.key") !== null);
  await page.waitForSelector('#feed-status[data-tone="ok"]', { timeout: 10_000 });

  // The chart shows the bars the database holds.
  const bars = await page.waitForFunction(
    (n) => {
      const shown = document.querySelectorAll("#chart canvas").length > 0 && window.__christmasBars?.();
      return shown === n ? shown : false;
    },
    EXPECT_BARS,
    { timeout: 10_000 },
  ).then((h) => h.jsonValue()).catch(async () => {
    const shown = await page.evaluate(() => window.__christmasBars?.());
    fail(`the chart shows ${shown} bars, the database holds ${EXPECT_BARS}`);
  });

  // A tick pushed now is on the page within a second.
  const price = 4242.25;
  const started = Date.now();
  const pushed = await fetch(`${BASE}/api/ticks?ack=accepted`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify([{ kind: "trade", symbol: SYMBOL, time_ns: Date.now() * 1e6, price, volume: 2, side: "B" }]),
  });
  if (!pushed.ok) fail(`pushing a tick: ${pushed.status} ${await pushed.text()}`);
  await page.waitForSelector(`#last-trade[data-price="${price}"]`, { timeout: 1_000 }).catch(() =>
    fail("the pushed tick did not appear within 1 s"),
  );
  const tickMs = Date.now() - started;

  // An order from the ticket: answered, then in the blotter.
  await page.keyboard.press("Escape");
  await page.check('input[name="side"][value="sell"]');
  await page.selectOption("#order-type", "limit");
  await page.fill("#quantity", "3");
  await page.fill("#limit-price", "4300.5");
  await page.selectOption('select[name="time_in_force"]', "gtc");
  await page.click("#place");
  const answer = await page.waitForSelector("#order-answer[data-order-id]", { timeout: 5_000 }).catch(async () =>
    fail(`no order answer: ${await page.textContent("#order-answer")}`),
  );
  const orderId = await answer.getAttribute("data-order-id");
  const row = `#orders tr[data-order-id="${orderId}"]`;
  await page.waitForSelector(row, { timeout: 5_000 }).catch(() => fail(`order ${orderId} is not in the blotter`));

  // Cancel from the blotter.
  await page.click(`${row} button`);
  await page.waitForSelector(`${row}[data-status="cancelled"]`, { timeout: 5_000 }).catch(async () =>
    fail(`order ${orderId} not shown cancelled: ${await page.textContent("#blotter-answer")}`),
  );
  // The engine panel has been filled (refreshed every second).
  await page.waitForFunction(() => document.querySelectorAll("#engine-figures div").length >= 6, null, {
    timeout: 3_000,
  });
  // Its replica-lag row says what the daemon has (this one, no replica).
  const lagRow = await page.evaluate(() =>
    [...document.querySelectorAll("#engine-figures div")]
      .map((d) => [d.querySelector("dt").textContent, d.querySelector("dd").textContent])
      .find(([k]) => k === "replica lag"),
  );
  if (!lagRow || lagRow[1] !== "no replica") fail(`engine panel replica lag row: ${JSON.stringify(lagRow)}`);

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "page.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(ARTIFACTS, "page-phone.png"), fullPage: true });
  if (errors.length) fail(`console errors: ${JSON.stringify(errors)}`);
  console.log(JSON.stringify({ order_id: Number(orderId), tick_ms: tickMs, bars, console_errors: errors.length }));
} catch (e) {
  if (page) {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "failure.png"), fullPage: true }).catch(() => {});
  }
  console.error(`browser test failed: ${e?.message ?? e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
