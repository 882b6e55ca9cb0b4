// The whole story in a real browser (Debian's Chromium, driven by
// playwright-core) through the gateway: two shoppers sign up in two browser
// contexts (the account comes with it); one tops up 100, buys for 30
// (FINISHED, live), buys for 500 (CANCELLED, insufficient funds, live),
// balance 70, while the other sees none of it and only their own order;
// sign-out ends the session; an expired one says so. Saves a screenshot
// under build/e2e/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { mint } from "./session.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const base = process.env.SHOP_GATEWAY_URL || "http://127.0.0.1:8000";
const shots = new URL("../../build/e2e/", import.meta.url).pathname;

// Headless, sandbox off (root), and nothing that would reach the network.
const browserArgs = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
];

async function signUp(page, user) {
  await page.goto(base + "/");
  await page.getByLabel("User id").fill(user);
  await page.getByLabel("Password").fill("a long test password");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.locator("#who-name", { hasText: user }).waitFor();
  await page.locator("#balance", { hasText: "0.00" }).waitFor(); // the account comes with it
  await page.locator("#live.on").waitFor();
}

test("two shoppers, each sees only their own money and orders, live; sign-out ends it",
  { timeout: 120000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: browserArgs,
  });
  try {
    // Two contexts: two cookie jars, as two people on two machines.
    const alice = await browser.newPage({ viewport: { width: 900, height: 720 } });
    const bob = await (await browser.newContext()).newPage({ viewport: { width: 900, height: 720 } });
    const listings = [];
    alice.on("request", (r) => r.url().includes("/api/orders?") && listings.push(r.url()));
    // Script errors only: the API's expected 4xx answers (the refused
    // top-up, /me before signing in) are logged by Chromium too.
    const scriptErrors = [];
    for (const page of [alice, bob]) page.on("pageerror", (e) => scriptErrors.push(e.message));

    const run = `${process.pid}-${Date.now() % 100000}`;
    await signUp(alice, `alice-${run}`);
    await signUp(bob, `bob-${run}`);

    await alice.getByLabel("Top up").fill("100");
    await alice.getByRole("button", { name: "Top up" }).click();
    await alice.locator("#balance", { hasText: "100.00" }).waitFor();

    const listingsBefore = listings.length;
    await alice.getByLabel("Price").fill("30");
    await alice.getByLabel("What").fill("a book");
    await alice.getByRole("button", { name: "Buy" }).click();
    const book = alice.locator("#orders tr", { hasText: "a book" });
    await book.locator(".status.FINISHED").waitFor({ timeout: 30000 });

    await alice.getByLabel("Price").fill("500");
    await alice.getByLabel("What").fill("a bike");
    await alice.getByRole("button", { name: "Buy" }).click();
    const bike = alice.locator("#orders tr", { hasText: "a bike" });
    await bike.locator(".status.CANCELLED").waitFor({ timeout: 30000 });
    assert.match(await bike.innerText(), /insufficient funds/);

    await alice.locator("#balance", { hasText: "70.00" }).waitFor();
    assert.equal(listings.length, listingsBefore, "statuses arrived without reloading the list");
    assert.equal(await alice.locator("#orders tr").count(), 2);

    // Bob, signed in all along, saw none of it; his own order is his alone.
    await bob.getByLabel("Price").fill("5");
    await bob.getByLabel("What").fill("a pen");
    await bob.getByRole("button", { name: "Buy" }).click();
    await bob.locator("#orders tr", { hasText: "a pen" }).locator(".status.CANCELLED").waitFor({ timeout: 30000 });
    assert.equal(await bob.locator("#orders tr").count(), 1, "Bob sees only his order");
    assert.equal(await bob.locator("#balance").innerText(), "0.00");
    assert.equal(await alice.locator("#orders tr").count(), 2, "Alice does not see Bob's");

    // An API error reaches the shopper as the API's own message.
    await alice.getByLabel("Top up").fill("0");
    await alice.getByRole("button", { name: "Top up" }).click();
    await alice.locator("#error", { hasText: "amount must be" }).waitFor();

    mkdirSync(shots, { recursive: true });
    await alice.screenshot({ path: shots + "shop.png", fullPage: true });

    // Signing out ends the session: the form again, even after a reload.
    await alice.getByRole("button", { name: "Sign out" }).click();
    await alice.locator("#sign-in-form").waitFor();
    await alice.reload();
    await alice.locator("#sign-in-form").waitFor();
    assert.equal(await alice.locator("#shop").isHidden(), true);
    const me = await alice.evaluate(async () => (await fetch("/api/me")).status);
    assert.equal(me, 401, "no session left in the browser");
    assert.deepEqual(scriptErrors, []);
  } finally {
    await browser.close();
  }
});

test("an expired session says so and asks to sign in again", { timeout: 60000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: browserArgs,
  });
  try {
    const context = await browser.newContext();
    const url = new URL(base);
    await context.addCookies([{ name: "shop_session", value: mint("someone", { expiresIn: -120 }),
      domain: url.hostname, path: "/", httpOnly: true, sameSite: "Strict" }]);
    const page = await context.newPage();
    await page.goto(base + "/");
    await page.locator("#error", { hasText: "Your session has expired" }).waitFor();
    assert.equal(await page.locator("#sign-in-form").isVisible(), true);
  } finally {
    await browser.close();
  }
});

// The answer lost on the way back (the gateway made to fail each first
// attempt, after it reached the shop: the request was done, the browser
// hears 503 outcome_unknown), and the shopper clicking twice meanwhile:
// the page sends the same request again with the same Idempotency-Key,
// and the top-up and the purchase each happen once.
test("a top-up and a purchase whose answers are lost happen once", { timeout: 90000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: browserArgs,
  });
  try {
    const page = await browser.newPage();
    const user = `twice-${process.pid}-${Date.now() % 100000}`;
    await signUp(page, user);
    const attempts = { orders: [], deposits: [] };
    const firstAnswers = {};
    await page.route(/\/api\/(orders|accounts\/[^/]+\/deposits)$/, async (route) => {
      const request = route.request();
      if (request.method() !== "POST") return route.continue();
      const kind = request.url().endsWith("/orders") ? "orders" : "deposits";
      attempts[kind].push(request.headers()["idempotency-key"]);
      if (attempts[kind].length > 1) return route.continue();
      const reached = await route.fetch(); // the shop does it...
      firstAnswers[kind] = reached.status();
      await route.fulfill({ // ...and the answer is lost
        status: 503, contentType: "application/json", headers: { "Retry-After": "1" },
        body: '{"error":{"code":"outcome_unknown","message":"the service did not answer"}}',
      });
    });

    await page.getByLabel("Top up").fill("100");
    await page.getByRole("button", { name: "Top up" }).dblclick();
    await page.locator("#balance", { hasText: "100.00" }).waitFor();

    await page.getByLabel("Price").fill("30");
    await page.getByLabel("What").fill("a lamp");
    const buy = page.getByRole("button", { name: "Buy" });
    await buy.click();
    await page.getByLabel("What").press("Enter"); // a second submit while the first is under way
    await page.locator("#orders tr", { hasText: "a lamp" }).locator(".status.FINISHED").waitFor({ timeout: 30000 });
    await page.locator("#balance", { hasText: "70.00" }).waitFor();
    // The order's status may come over the WebSocket before the page has
    // its own answer: done once the form is free again.
    await page.waitForFunction(() => !document.querySelector("#order-form button").disabled);

    for (const kind of ["deposits", "orders"]) {
      assert.equal(firstAnswers[kind], 201, `the first ${kind} attempt was done by the shop`);
      assert.ok(attempts[kind].length >= 2, `the page sent the ${kind} request again`);
      assert.equal(new Set(attempts[kind]).size, 1, `every ${kind} attempt carried one key`);
    }
    const orders = await page.evaluate(async () => (await (await fetch("/api/orders?limit=50")).json()).orders);
    assert.equal(orders.filter((o) => o.description === "a lamp").length, 1, "one purchase");
    assert.equal(await page.locator("#orders tr", { hasText: "a lamp" }).count(), 1);
    const account = await page.evaluate(async (u) => (await fetch(`/api/accounts/${u}`)).json(), user);
    assert.equal(account.balance, 7000, "100 once, 30 once");
  } finally {
    await browser.close();
  }
});

// Cancel, as a shopper does it: a purchase still NEW (payments is frozen
// for the moment, so it stays so), the Cancel button, and the order ends
// CANCELLED, reason cancelled, live, with the balance untouched.
test("a purchase cancelled while NEW ends cancelled and costs nothing", { timeout: 90000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: browserArgs,
  });
  const stack = (command) => execFileSync(new URL("../../scripts/stack.sh", import.meta.url).pathname,
    command.split(" "), { stdio: ["ignore", "ignore", "inherit"] });
  try {
    const page = await browser.newPage();
    await signUp(page, `canceller-${process.pid}-${Date.now() % 100000}`);
    await page.getByLabel("Top up").fill("50");
    await page.getByRole("button", { name: "Top up" }).click();
    await page.locator("#balance", { hasText: "50.00" }).waitFor();
    stack("freeze-every payments");
    try {
      await page.getByLabel("Price").fill("20");
      await page.getByLabel("What").fill("a mug");
      await page.getByRole("button", { name: "Buy" }).click();
      const mug = page.locator("#orders tr", { hasText: "a mug" });
      await mug.locator(".status.NEW").waitFor();
      await mug.getByRole("button", { name: "Cancel" }).click();
      await mug.getByText("cancelling…").waitFor();
    } finally {
      stack("thaw-every payments");
    }
    const mug = page.locator("#orders tr", { hasText: "a mug" });
    await mug.locator(".status.CANCELLED").waitFor({ timeout: 30000 });
    assert.match(await mug.innerText(), /cancelled/);
    assert.equal(await mug.getByRole("button", { name: "Cancel" }).count(), 0);
    await page.reload();
    await page.locator("#balance", { hasText: "50.00" }).waitFor();
  } finally {
    await browser.close();
  }
});

// Refund, as a shopper does it: a paid purchase, the Refund button, and the
// order ends REFUNDED live, its refunded amount shown, the money back on the
// balance. The first answer is lost (the gateway fails the request once,
// after the service did it): the page retries with the same key, so there
// is one refund, not two.
test("a paid purchase refunded from the page comes back once, live", { timeout: 90000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: browserArgs,
  });
  try {
    const page = await browser.newPage();
    await signUp(page, `refunder-${process.pid}-${Date.now() % 100000}`);
    await page.getByLabel("Top up").fill("50");
    await page.getByRole("button", { name: "Top up" }).click();
    await page.locator("#balance", { hasText: "50.00" }).waitFor();
    await page.getByLabel("Price").fill("20");
    await page.getByLabel("What").fill("a lamp");
    await page.getByRole("button", { name: "Buy" }).click();
    const lamp = page.locator("#orders tr", { hasText: "a lamp" });
    await lamp.locator(".status.FINISHED").waitFor({ timeout: 30000 });
    await page.locator("#balance", { hasText: "30.00" }).waitFor();
    // The refund reaches the service, and its answer is lost on the way back.
    let sent = 0;
    const keys = new Set();
    await page.route("**/api/orders/*/refunds", async (route) => {
      keys.add(route.request().headers()["idempotency-key"]);
      const response = await route.fetch();
      if (sent++ === 0) await route.fulfill({ status: 502, body: "{}", contentType: "application/json" });
      else await route.fulfill({ response });
    });
    await lamp.getByRole("button", { name: "Refund" }).click();
    await lamp.locator(".status.REFUNDED").waitFor({ timeout: 30000 });
    assert.match(await lamp.innerText(), /20\.00 refunded/);
    // The page's retry comes after its back-off, whenever the refund was done.
    for (const until = Date.now() + 10000; sent < 2 && Date.now() < until;) await sleep(50);
    assert.equal(sent, 2, "the page retried once");
    assert.equal(keys.size, 1, "with the same Idempotency-Key");
    assert.equal(await lamp.getByRole("button", { name: "Refund" }).count(), 0);
    await page.locator("#balance", { hasText: "50.00" }).waitFor();
    await page.reload();
    await page.locator("#balance", { hasText: "50.00" }).waitFor();
    await page.locator("#orders tr", { hasText: "a lamp" }).locator(".status.REFUNDED").waitFor();
  } finally {
    await browser.close();
  }
});

// Sign-up opens the account while the page's first reads of it are on
// their way: a read that says "no account yet", sent while the opening was
// under way, must not hide the account (make test saw the page do so).
test("an account opened while reads of it are on their way stays shown", { timeout: 60000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: browserArgs,
  });
  try {
    const page = await browser.newPage();
    // The opening is answered late: the reads the page sends meanwhile (as
    // its live socket opens) are answered first, "no account yet".
    let reads = 0, answered = 0;
    await page.route("**/api/accounts/*", (route) => { reads++; return route.continue(); });
    page.on("requestfinished", (r) => /\/api\/accounts\/[^/]+$/.test(new URL(r.url()).pathname) && answered++);
    await page.route("**/api/accounts", async (route) => {
      const response = await route.fetch();
      await sleep(500);
      await route.fulfill({ response });
    });
    await signUp(page, `slowopen-${process.pid}-${Date.now() % 100000}`);
    assert.ok(reads >= 1, "no read of the account was sent");
    // Every read sent so far answered, after the opening was.
    for (const until = Date.now() + 10000; answered < reads && Date.now() < until;) await sleep(20);
    assert.equal(answered, reads, "a read of the account was never answered");
    // ...and handled by the page: a turn of its event loop after them.
    await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)));
    assert.equal(await page.locator("#account").isVisible(), true, "the account was hidden again");
  } finally {
    await browser.close();
  }
});
