// One order's journey as one distributed trace, read back from the real
// Zipkin server the test stack runs (its HTTP API, /api/v2/trace/{id}):
// the client's traceparent is continued through orders, the outbox, Kafka,
// payments, its outbox, Kafka again, and orders' status update and push;
// an order without a traceparent gets a trace of its own; its log lines
// carry it; a malformed traceparent is ignored; a collector that hangs
// slows no order and its lost spans are counted; and the web page links
// each order to its trace (the README's screenshot of Zipkin's UI).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { mint, bearer } from "./session.mjs";

const gateway = process.env.SHOP_GATEWAY_URL || "http://127.0.0.1:18000";
const zipkin = process.env.SHOP_ZIPKIN_URL || "http://127.0.0.1:19411";
const ordersUrls = (process.env.SHOP_ORDERS_URLS || "http://127.0.0.1:18080").split(" ");
const logDir = `${process.env.SHOP_VAR}/log`;
const run = `${process.pid}-${Date.now() % 100000}`;
const shots = new URL("../../build/e2e/", import.meta.url).pathname;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const hex = (bytes) => randomBytes(bytes).toString("hex");

async function call(method, path, user, body, headers = {}, role = "user") {
  const r = await fetch(gateway + "/api" + path, {
    method, headers: { "Content-Type": "application/json", ...bearer(mint(user, { role })), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function funded(user, amount) {
  assert.equal((await call("POST", "/accounts", user, { user_id: user })).status, 201);
  assert.equal((await call("POST", `/accounts/${user}/deposits`, user, { amount })).status, 201);
}

// Polls until cond() is truthy (its value), or fails after `ms`.
async function until(what, cond, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await cond();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const final = (user, id) => until(`order ${id} final`, async () => {
  const r = await call("GET", `/orders/${id}`, user);
  return r.body.status !== "NEW" && r.body;
});

// Every span of one order's journey, in the order they begin (each
// service sends its spans on its own schedule: they reach Zipkin in any
// order). Zipkin keeps names in lower case.
const journey = [
  "post /orders", "orders wait", "orders group", "send payment.requests",
  "process payment.requests", "payment.requests transaction", "payments decide",
  "send payment.results", "process payment.results", "payment.results transaction",
  "orders status update", "orders push",
];

// The trace once every span of the journey reached Zipkin.
const traceOf = (traceId) => until(`trace ${traceId} in Zipkin`, async () => {
  const r = await fetch(`${zipkin}/api/v2/trace/${traceId}`);
  if (r.status !== 200) return null;
  const spans = await r.json();
  return journey.every((name) => spans.some((s) => s.name === name)) && spans;
});

async function metric(base, name) {
  const text = await (await fetch(base + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return Number(line.split(" ")[1]);
}
const metricSum = async (name) =>
  (await Promise.all(ordersUrls.map((u) => metric(u, name)))).reduce((a, b) => a + b, 0);

const stack = (...args) => execFileSync("scripts/stack.sh", args, { stdio: "ignore" });

test("an order's trace runs from the client through both services and both Kafka hops",
  { timeout: 90000 }, async () => {
  const user = `trace-${run}`;
  await funded(user, 1000);
  const traceId = hex(16), clientSpan = hex(8);
  const placed = await call("POST", "/orders", user, { amount: 250, description: "a traced book" },
    { traceparent: `00-${traceId}-${clientSpan}-01` });
  assert.equal(placed.status, 201);
  assert.equal(placed.body.trace_id, traceId, "the order names the client's trace");
  const order = await final(user, placed.body.id);
  assert.equal(order.status, "FINISHED");
  assert.equal(order.trace_id, traceId);

  const spans = await traceOf(traceId);
  const byId = new Map(spans.map((s) => [s.id, s]));
  const named = (name) => spans.filter((s) => s.name === name);
  assert.ok(spans.every((s) => s.traceId === traceId), "one trace");
  assert.deepEqual([...new Set(spans.map((s) => s.localEndpoint.serviceName))].sort(),
    ["orders", "payments"]);
  for (const s of spans)
    assert.equal(s.tags?.["shop.order_id"], order.id, `the order id on ${s.name}`);

  // The client's span is the server span's parent; every other span's
  // parent is in the trace.
  const [server] = named("post /orders");
  assert.equal(server.kind, "SERVER");
  assert.equal(server.parentId, clientSpan);
  for (const s of spans) if (s !== server) assert.ok(byId.has(s.parentId), `${s.name}'s parent`);

  // Each Kafka hop: the writer of the outbox row, then the producer span
  // (publish to the broker's acknowledgement), then the consumer's span,
  // its child through the message's traceparent header.
  const hop = (topic, writer) => {
    const sends = named(`send ${topic}`), processed = named(`process ${topic}`);
    assert.ok(sends.length >= 1 && processed.length >= 1, `both ends of ${topic}`);
    for (const send of sends) {
      assert.equal(send.kind, "PRODUCER");
      assert.equal(byId.get(send.parentId).name, writer, `${topic} is sent for what wrote it`);
      assert.equal(send.tags["messaging.destination.name"], topic);
      assert.match(send.tags["messaging.destination.partition.id"], /^\d+$/);
      assert.match(send.tags["messaging.kafka.offset"], /^\d+$/);
    }
    for (const p of processed) {
      assert.equal(p.kind, "CONSUMER");
      assert.equal(byId.get(p.parentId).kind, "PRODUCER", `${topic}'s consumer span follows its producer's`);
      assert.equal(byId.get(p.parentId).name, `send ${topic}`);
    }
  };
  hop("payment.requests", "post /orders");
  hop("payment.results", "payment.requests transaction");
  assert.equal(named("payments decide")[0].tags["shop.outcome"], "payment.completed");
  assert.equal(named("orders status update")[0].tags["shop.order.status"], "FINISHED");
  assert.ok(named("orders wait").length === 1 && named("orders group").length === 1);
  assert.ok(named("orders push").length >= 1, "the push, on the instances that push");

  // Time: a span done for its parent lies inside it; across a message
  // (what was written, then sent, then read; and the push, after the
  // commit that announced it) the child starts after its parent started.
  const messaging = (s) => s.kind === "PRODUCER" || s.kind === "CONSUMER" || s.name === "orders push";
  for (const s of spans) {
    const parent = byId.get(s.parentId);
    if (!parent) continue;
    assert.ok(s.timestamp >= parent.timestamp, `${s.name} starts after ${parent.name}`);
    if (!messaging(s))
      assert.ok(s.timestamp + s.duration <= parent.timestamp + parent.duration,
        `${s.name} (${s.timestamp}+${s.duration}) ends within ${parent.name} (${parent.timestamp}+${parent.duration})`);
  }

  // A refund the client asks for in the same trace goes the same way, and
  // the operator's refund is logged (at info) with the trace's ids.
  const operator = `trace-op-${run}`;
  const refund = await call("POST", `/orders/${order.id}/refunds`, operator, { amount: 50 },
    { traceparent: `00-${traceId}-${hex(8)}-01`, "Idempotency-Key": hex(16) }, "operator");
  assert.equal(refund.status, 202);
  await until("the refund completed", async () =>
    (await call("GET", `/orders/${order.id}`, user)).body.refunded_amount === 50);
  const withRefund = await until("the refund's spans in the trace", async () => {
    const all = await (await fetch(`${zipkin}/api/v2/trace/${traceId}`)).json();
    // Each service exports on its own schedule: wait for every span looked
    // at below, the refund's own HTTP span and its send included.
    const server = all.find((x) => x.name === "post /orders/{id}/refunds");
    const ok = ["refund.completed"].every((o) =>
      all.some((x) => x.name === "payments decide" && x.tags["shop.outcome"] === o)) &&
      all.filter((x) => x.name === "orders status update").length === 2 && server &&
      all.some((x) => x.name === "send payment.requests" && x.parentId === server.id);
    return ok && all;
  });
  const refundServer = withRefund.find((x) => x.name === "post /orders/{id}/refunds");
  assert.equal(refundServer.tags["shop.order_id"], order.id);
  assert.ok(withRefund.some((x) => x.name === "send payment.requests" && x.parentId === refundServer.id),
    "the refund's request is sent for its HTTP request");
  const lines = readdirSync(logDir).filter((f) => /^orders(-\d+)?\.log$/.test(f))
    .flatMap((f) => readFileSync(`${logDir}/${f}`, "utf8").split("\n"))
    .filter((l) => l.includes(`"trace_id":"${traceId}"`));
  assert.ok(lines.some((l) => l.includes(`refunds 50 of order ${order.id}`)),
    "the operator's refund is logged with the order's trace id");
  assert.ok(lines.every((l) => JSON.parse(l).span_id.length === 16));
});

test("an order placed without a traceparent gets a trace of its own", { timeout: 60000 }, async () => {
  const user = `trace-new-${run}`;
  const placed = await call("POST", "/orders", user, { amount: 5, description: "untraced" });
  assert.equal(placed.status, 201);
  assert.match(placed.body.trace_id, /^[0-9a-f]{32}$/);
  assert.equal((await final(user, placed.body.id)).status, "CANCELLED"); // no account
  const spans = await traceOf(placed.body.trace_id);
  assert.ok(spans.some((s) => s.localEndpoint.serviceName === "payments"));
  assert.ok(spans.some((s) => s.name === "post /orders" && !s.parentId), "the server span is the root");
});

test("a malformed traceparent is ignored: the order is placed in a new trace", { timeout: 30000 }, async () => {
  const user = `trace-bad-${run}`;
  const bad = [
    "garbage", "00-" + "0".repeat(32) + "-00f067aa0ba902b7-01", // zero trace id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", // upper case
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // 00 is exactly 55
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
    "\u00ff".repeat(60),
  ];
  for (const traceparent of bad) {
    const placed = await call("POST", "/orders", user, { amount: 1, description: "x" }, { traceparent });
    assert.equal(placed.status, 201, `${JSON.stringify(traceparent)}: ${JSON.stringify(placed.body)}`);
    assert.match(placed.body.trace_id, /^[0-9a-f]{32}$/);
    assert.notEqual(placed.body.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  }
});

test("a collector that hangs slows no order; the spans it loses are counted", { timeout: 120000 }, async () => {
  const user = `trace-hung-${run}`;
  await funded(user, 100000);
  // Sequential orders, placed and paid: how long each takes.
  const place = async (n) => {
    const took = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const placed = await call("POST", "/orders", user, { amount: 1, description: `#${i}` });
      assert.equal(placed.status, 201);
      await final(user, placed.body.id);
      took.push(performance.now() - t0);
    }
    return took.sort((a, b) => a - b)[Math.floor(n / 2)];
  };
  const before = await place(10);
  const failedBefore = await metricSum("trace_exports_failed_total");
  stack("freeze", "zipkin"); // its socket open, nothing answering
  try {
    const during = await place(10);
    // A request never waits for the exporter (which waits up to
    // OTEL_EXPORTER_ZIPKIN_TIMEOUT, 3 s in the test stack, for an answer): a generous
    // bound that such a wait would break.
    assert.ok(during < before * 3 + 200, `p50 ${during.toFixed(0)} ms with the collector hung, ${before.toFixed(0)} ms before`);
    await until("the lost spans counted", async () =>
      (await metricSum("trace_exports_failed_total")) > failedBefore, 40000);
  } finally {
    stack("thaw", "zipkin");
  }
});

test("the shop's page links each order to its trace, shown by Zipkin's UI", { timeout: 120000 }, async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const user = `trace-ui-${run}`;
    await page.goto(gateway + "/");
    await page.getByLabel("User id").fill(user);
    await page.getByLabel("Password").fill("a long test password");
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.locator("#live.on").waitFor();
    await page.getByLabel("Top up").fill("100");
    await page.getByRole("button", { name: "Top up" }).click();
    await page.locator("#balance", { hasText: "100.00" }).waitFor();
    await page.getByLabel("Price").fill("30");
    await page.getByLabel("What").fill("a traced book");
    await page.getByRole("button", { name: "Buy" }).click();
    const row = page.locator("#orders tr", { hasText: "a traced book" });
    await row.locator(".status.FINISHED").waitFor({ timeout: 30000 });
    const href = await row.locator("a.trace").getAttribute("href");
    const traceId = href.match(/^\/zipkin\/traces\/([0-9a-f]{32})$/)?.[1];
    assert.ok(traceId, `the link: ${href}`);
    await traceOf(traceId);

    const [zipkinPage] = await Promise.all([page.waitForEvent("popup"), row.locator("a.trace").click()]);
    await zipkinPage.setViewportSize({ width: 1280, height: 800 });
    await zipkinPage.getByText("process payment.results").first().waitFor({ timeout: 30000 });
    await zipkinPage.getByText("orders push").first().waitFor();
    mkdirSync(shots, { recursive: true });
    await zipkinPage.screenshot({ path: shots + "trace.png" });
  } finally {
    await browser.close();
  }
});
