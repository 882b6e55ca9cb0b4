// The whole story in a real browser (Debian's Chromium, driven by
// playwright-core) through the gateway: sign in, create the account, top up
// 100, buy for 30 (FINISHED, live), buy for 500 (CANCELLED, insufficient
// funds, live), balance 70. Saves a screenshot under build/e2e/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const base = process.env.SHOP_GATEWAY_URL || "http://127.0.0.1:8000";
const shots = new URL("../../build/e2e/", import.meta.url).pathname;

// Headless, sandbox off (root), and nothing that would reach the network.
const browserArgs = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
];

test("a shopper tops up, buys, and watches statuses change live", { timeout: 90000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: browserArgs,
  });
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
    const listings = [];
    page.on("request", (r) => r.url().includes("/api/orders?") && listings.push(r.url()));
    // Script errors only: the API's expected 4xx answers (the account
    // before it exists, the refused top-up) are logged by Chromium too.
    const scriptErrors = [];
    page.on("pageerror", (e) => scriptErrors.push(e.message));

    await page.goto(base + "/");
    const user = `e2e-${process.pid}-${Date.now() % 100000}`;
    await page.getByLabel("User id").fill(user);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("button", { name: "Create my account" }).click();
    await page.locator("#live.on").waitFor();

    await page.getByLabel("Top up").fill("100");
    await page.getByRole("button", { name: "Top up" }).click();
    await page.locator("#balance", { hasText: "100.00" }).waitFor();

    const listingsBefore = listings.length;
    await page.getByLabel("Price").fill("30");
    await page.getByLabel("What").fill("a book");
    await page.getByRole("button", { name: "Buy" }).click();
    const book = page.locator("#orders tr", { hasText: "a book" });
    await book.locator(".status.FINISHED").waitFor({ timeout: 30000 });

    await page.getByLabel("Price").fill("500");
    await page.getByLabel("What").fill("a bike");
    await page.getByRole("button", { name: "Buy" }).click();
    const bike = page.locator("#orders tr", { hasText: "a bike" });
    await bike.locator(".status.CANCELLED").waitFor({ timeout: 30000 });
    assert.match(await bike.innerText(), /insufficient funds/);

    await page.locator("#balance", { hasText: "70.00" }).waitFor();
    assert.equal(listings.length, listingsBefore, "statuses arrived without reloading the list");
    assert.equal(await page.locator("#orders tr").count(), 2);

    // An API error reaches the shopper as the API's own message.
    await page.getByLabel("Top up").fill("0");
    await page.getByRole("button", { name: "Top up" }).click();
    await page.locator("#error", { hasText: "amount must be" }).waitFor();

    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: shots + "shop.png", fullPage: true });
    assert.deepEqual(scriptErrors, []);
  } finally {
    await browser.close();
  }
});
