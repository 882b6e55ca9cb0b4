// Live order status over WebSocket, with two orders instances behind the
// gateway: a change processed by either instance reaches sockets on both
// and through the gateway; a user sees only their own orders; idle sockets
// are kept by ping/pong; a peer that stops answering is dropped.
// The WebSocket client is the `ws` package: Debian 12's Node.js (18) has
// none built in.
import { test } from "node:test";
import { WebSocket } from "ws";
import assert from "node:assert/strict";
import net from "node:net";
import { execFileSync } from "node:child_process";
import { mint, bearer } from "./session.mjs";

const gateway = process.env.SHOP_GATEWAY_URL || "http://127.0.0.1:18000";
const [orderA, orderB] = (process.env.SHOP_ORDERS_URLS || "http://127.0.0.1:18080 http://127.0.0.1:18082").split(" ");
const run = `${process.pid}-${Date.now() % 100000}`;
const wsUrl = (base, user) => base.replace(/^http/, "ws") + `/ws?user_id=${user}`;

// A socket that records the final statuses it is told about; it acts as
// the user named in its URL (a token minted for them).
function follow(url) {
  const user = new URL(url).searchParams.get("user_id");
  const socket = new WebSocket(url, { headers: bearer(mint(user)) });
  const finals = new Map();
  const waiters = [];
  socket.addEventListener("message", (event) => {
    const { type, order } = JSON.parse(event.data);
    if (type === "order.updated" && order.status !== "NEW") finals.set(order.id, order);
    waiters.forEach((w) => w());
  });
  const opened = new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve);
    socket.addEventListener("error", reject);
  });
  const until = (cond, ms = 30000) => new Promise((resolve, reject) => {
    const check = () => cond() && resolve();
    waiters.push(check);
    check();
    setTimeout(() => reject(new Error(`timed out: ${finals.size} final statuses seen`)), ms);
  });
  const closed = new Promise((resolve) => socket.addEventListener("close", (e) => resolve(e.code)));
  return { socket, finals, opened, until, closed };
}

// As the user the body or the path names.
async function post(path, body) {
  const user = body.user_id || path.split("/")[2];
  const r = await fetch(gateway + "/api" + path, {
    method: "POST", headers: { "Content-Type": "application/json", ...bearer(mint(user)) },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.ok, `${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

async function metric(base, name) {
  const text = await (await fetch(base + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return Number(line.split(" ")[1]);
}

test("changes reach sockets on both instances and through the gateway", { timeout: 60000 }, async () => {
  const user = `live-${run}`, other = `other-${run}`;
  await post("/accounts", { user_id: user });
  await post(`/accounts/${user}/deposits`, { amount: 300 });
  const onA = follow(wsUrl(orderA, user));
  const onB = follow(wsUrl(orderB, user));
  const viaGateway = follow(wsUrl(gateway + "/api", user));
  const stranger = follow(wsUrl(orderB, other));
  await Promise.all([onA.opened, onB.opened, viaGateway.opened, stranger.opened]);

  const ids = [];
  for (let i = 0; i < 6; i++) ids.push((await post("/orders", { user_id: user, amount: 100 })).id);
  const allFinal = (s) => () => ids.every((id) => s.finals.has(id));
  await Promise.all([onA.until(allFinal(onA)), onB.until(allFinal(onB)), viaGateway.until(allFinal(viaGateway))]);

  for (const s of [onA, onB, viaGateway]) {
    const statuses = ids.map((id) => s.finals.get(id).status);
    assert.equal(statuses.filter((x) => x === "FINISHED").length, 3);
    assert.equal(statuses.filter((x) => x === "CANCELLED").length, 3);
  }
  assert.equal(stranger.finals.size, 0, "another user's socket heard nothing");

  for (const s of [onA, onB, viaGateway, stranger]) s.socket.close(1000);
  const codes = await Promise.all([onA.closed, onB.closed, viaGateway.closed, stranger.closed]);
  assert.deepEqual(codes, [1000, 1000, 1000, 1000], "a clean close is answered cleanly");
});

test("large events are pushed whole, split over several notifications", { timeout: 60000 }, async () => {
  // 40 orders placed at once land in few consumer batches; each event is
  // ~1 kB (a 500-character description with quotes and non-ASCII text), so
  // a batch's events exceed one NOTIFY's 8,000 bytes and must be split at
  // event boundaries, none cut or lost.
  const user = `big-${run}`;
  await post("/accounts", { user_id: user });
  await post(`/accounts/${user}/deposits`, { amount: 1000 });
  const s = follow(wsUrl(gateway + "/api", user));
  await s.opened;
  const description = ('"quoted" caf\u00e9 ' + "x".repeat(500)).slice(0, 500);
  const placed = await Promise.all(
    Array.from({ length: 40 }, () => post("/orders", { user_id: user, amount: 50, description })));
  await s.until(() => placed.every((o) => s.finals.has(o.id)));
  for (const o of placed) {
    const pushed = s.finals.get(o.id);
    // The read lists the order's refunds too (none here); the push does not.
    const { refunds, ...stored } = await (await fetch(`${gateway}/api/orders/${o.id}`, { headers: bearer(mint(user)) })).json();
    assert.deepEqual(refunds, []);
    assert.deepEqual(pushed, stored, "the pushed order is the stored one");
    assert.equal(pushed.description, description);
  }
  const statuses = placed.map((o) => s.finals.get(o.id).status);
  assert.equal(statuses.filter((x) => x === "FINISHED").length, 20, "1000 buys 20 orders of 50");
  s.socket.close(1000);
});

test("idle sockets live on pongs; a silent peer is dropped", { timeout: 60000 }, async () => {
  // The test stack pings after 1 s of silence and drops after three.
  const user = `idle-${run}`;
  const alive = follow(wsUrl(orderA, user));
  await alive.opened;

  // A raw socket that completes the handshake, then never answers a ping.
  const silent = net.connect(new URL(orderA).port, "127.0.0.1");
  silent.write(`GET /ws?user_id=${user} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Authorization: Bearer ${mint(user)}\r\n` +
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
  const greeting = await new Promise((resolve) => silent.once("data", (d) => resolve(String(d))));
  assert.match(greeting, /^HTTP\/1.1 101/);
  silent.on("data", () => {}); // reads pings, never answers
  const dropped = new Promise((resolve) => silent.on("close", resolve));
  const started = Date.now();
  await dropped;
  const silentFor = Date.now() - started;
  assert.ok(silentFor >= 2000 && silentFor < 15000, `dropped after ${silentFor} ms`);

  assert.equal(alive.socket.readyState, WebSocket.OPEN, "the answering socket is still open");
  assert.ok(await metric(orderA, "ws_connections") >= 1);
  alive.socket.close(1000);
  await alive.closed;
});

test("a client's message longer than 4 KiB closes its socket with 1009, and only that one", { timeout: 30000 }, async () => {
  // Clients only listen; wslay's default would buffer up to 2 GiB of a message.
  const user = `big-${run}`;
  const other = follow(wsUrl(orderA, user));
  await other.opened;
  const socket = new WebSocket(wsUrl(orderA, user), { headers: bearer(mint(user)) });
  await new Promise((resolve, reject) => { socket.once("open", resolve); socket.once("error", reject); });
  const closed = new Promise((resolve) => socket.once("close", (code) => resolve(code)));
  try {
    const before = await metric(orderA, "ws_closed_too_big_total");
    socket.send(Buffer.alloc(1 << 20, 120)); // 1 MiB of "x"
    // The service sends 1009 and closes; with most of the megabyte still
    // unread, its kernel answers the rest with a reset, which the client may
    // see first (1006). What counts is the service's side.
    assert.ok([1009, 1006].includes(await closed), "the socket is closed");
    assert.equal(await metric(orderA, "ws_closed_too_big_total"), before + 1, "closed with 1009");
    assert.equal(other.socket.readyState, WebSocket.OPEN, "another socket of the same user stays open");
  } finally {
    socket.terminate();
    other.socket.close(1000);
  }
  await other.closed;
});

test("after the database comes back, open sockets are told to resync", { timeout: 90000 }, async () => {
  const socket = new WebSocket(wsUrl(orderA, `resync-${run}`), { headers: bearer(mint(`resync-${run}`)) });
  const messages = [];
  socket.addEventListener("message", (e) => messages.push(JSON.parse(e.data)));
  await new Promise((resolve) => socket.addEventListener("open", resolve));
  const stack = new URL("../../scripts/stack.sh", import.meta.url).pathname;
  execFileSync(stack, ["pg-stop"], { stdio: ["ignore", "ignore", "inherit"] });
  execFileSync(stack, ["pg-start"], { stdio: ["ignore", "ignore", "inherit"] });
  const until = Date.now() + 30000;
  while (!messages.some((m) => m.type === "resync") && Date.now() < until)
    await new Promise((r) => setTimeout(r, 100));
  assert.ok(messages.some((m) => m.type === "resync"), "no resync after the database restart");
  assert.equal(socket.readyState, WebSocket.OPEN, "the socket itself stayed open");
  socket.close(1000);
});

test("a socket follows its token's user: another user's id is refused, a foreign page too", { timeout: 30000 }, async () => {
  const alice = `wsa-${run}`, bob = `wsb-${run}`;
  const refused = (url, headers) => new Promise((resolve) => {
    const s = new WebSocket(url, { headers });
    s.on("unexpected-response", (req, res) => { resolve(res.statusCode); s.terminate(); });
    s.on("open", () => { resolve(101); s.terminate(); });
    s.on("error", () => resolve(0));
  });
  assert.equal(await refused(wsUrl(orderA, alice), bearer(mint(bob))), 403, "Bob asking for Alice's orders");
  assert.equal(await refused(wsUrl(orderA, alice), {}), 401, "no token");
  assert.equal(await refused(orderA.replace(/^http/, "ws") + "/ws",
    { Cookie: `shop_session=${mint(alice)}`, Origin: "http://evil.example" }), 403, "a page of another site");
  assert.equal(await refused(orderA.replace(/^http/, "ws") + "/ws",
    { Cookie: `shop_session=${mint(alice)}`, Origin: gateway }), 101, "the shop's own page, by cookie");
});

test("a socket closes with 4001 when its token expires", { timeout: 30000 }, async () => {
  // It used to outlive its token: a signed-out or expired session kept
  // hearing the user's orders.
  const user = `expiring-${run}`;
  const before = await metric(orderA, "ws_closed_expired_total");
  const socket = new WebSocket(wsUrl(orderA, user), { headers: bearer(mint(user, { expiresIn: 2 })) });
  const closed = new Promise((resolve) => socket.once("close", (code, reason) => resolve([code, String(reason)])));
  await new Promise((resolve, reject) => { socket.once("open", resolve); socket.once("error", reject); });
  const started = Date.now();
  const [code, reason] = await closed;
  assert.equal(code, 4001, `closed with ${code} (${reason})`);
  assert.equal(reason, "token expired");
  assert.ok(Date.now() - started < 10000, "closed within seconds of the expiry");
  assert.equal(await metric(orderA, "ws_closed_expired_total"), before + 1);
});
