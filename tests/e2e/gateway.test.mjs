// The gateway's own defences: per-address limits on requests, connections
// and WebSockets (429 with a JSON error), one X-Request-Id per answer, and
// workers that never run as root. The test stack exempts 127.0.0.1 (the
// other tests' clients) from the limits, so these requests come from
// 127.0.0.2: also loopback, but a client address of its own.
import { test } from "node:test";
import { WebSocket } from "ws";
import assert from "node:assert/strict";
import http from "node:http";
import fs from "node:fs";
import { execFileSync } from "node:child_process";
import { mint, bearer } from "./session.mjs";

const gateway = process.env.SHOP_GATEWAY_URL || "http://127.0.0.1:18000";
const wsConns = Number(process.env.GATEWAY_WS_CONNS || 16);
const burst = Number(process.env.GATEWAY_BURST || 200);
const run = `${process.pid}-${Date.now() % 100000}`;
const stranger = "127.0.0.2";

function get(path, { localAddress, agent } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(gateway + path, { localAddress, agent }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, raw: res.rawHeaders, headers: res.headers, body }));
    });
    req.on("error", reject);
  });
}

// The stranger's bucket full again for the next test: nginx refills it at
// GATEWAY_RATE a second, so the condition is time itself (no request can
// ask for it without spending a token).
const rate = Number(process.env.GATEWAY_RATE || 100);
const refilled = () => new Promise((resolve) => setTimeout(resolve, (1000 * burst) / rate + 500));

// Waits until a request of the stranger's is served again (not 429).
// Returns that answer's status.
async function servedAgain() {
  for (const until = Date.now() + 10000; Date.now() < until;) {
    const { status } = await get(`/api/accounts/nobody-${run}`, { localAddress: stranger });
    if (status !== 429) return status;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("still limited after 10 s");
}

test("an answer carries one X-Request-Id, the client's when it is sane", async () => {
  const r = await new Promise((resolve, reject) => {
    http.get(gateway + `/api/accounts/nobody-${run}`, { headers: { "X-Request-Id": `trace-${run}` } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res));
    }).on("error", reject);
  });
  const ids = [];
  for (let i = 0; i < r.rawHeaders.length; i += 2)
    if (r.rawHeaders[i].toLowerCase() === "x-request-id") ids.push(r.rawHeaders[i + 1]);
  assert.deepEqual(ids, [`trace-${run}`]);
});

test("WebSockets per client address are capped; one more gets 429", async () => {
  const open = (i) => new Promise((resolve) => {
    const s = new WebSocket(gateway.replace(/^http/, "ws") + `/api/ws?user_id=cap-${run}-${i}`,
      { localAddress: stranger, headers: bearer(mint(`cap-${run}-${i}`)) });
    s.on("open", () => resolve({ s, status: 101 }));
    s.on("unexpected-response", (req, res) => resolve({ s, status: res.statusCode }));
    s.on("error", () => resolve({ s, status: 0 }));
  });
  const sockets = [];
  for (let i = 0; i < wsConns; i++) sockets.push(await open(i));
  assert.deepEqual(sockets.map((x) => x.status), Array(wsConns).fill(101));
  const extra = await open(wsConns);
  assert.equal(extra.status, 429);
  // From another address (the exempt one), sockets still open.
  const other = await new Promise((resolve) => {
    const s = new WebSocket(gateway.replace(/^http/, "ws") + `/api/ws?user_id=cap-${run}-x`,
      { headers: bearer(mint(`cap-${run}-x`)) });
    s.on("open", () => resolve({ s, status: 101 }));
    s.on("unexpected-response", (req, res) => resolve({ s, status: res.statusCode }));
  });
  assert.equal(other.status, 101);
  for (const x of [...sockets, extra, other]) x.s.terminate();
  await refilled();
});

test("a client over its request rate gets 429 with a JSON error; others are served", async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8, localAddress: stranger });
  const n = burst * 2 + 100; // far more than the burst within well under a second
  const answers = await Promise.all(
    Array.from({ length: n }, () => get(`/api/accounts/nobody-${run}`, { localAddress: stranger, agent })),
  );
  agent.destroy();
  const limited = answers.filter((a) => a.status === 429);
  assert.ok(limited.length > 0, "no request was limited");
  assert.ok(answers.every((a) => a.status === 401 || a.status === 429), "only 401 (no token) or 429");
  assert.ok(n - limited.length >= burst, `the burst of ${burst} is served (${n - limited.length})`);
  assert.equal(JSON.parse(limited[0].body).error.code, "rate_limited");
  assert.equal(limited[0].headers["content-type"], "application/json");
  assert.equal(limited[0].headers["retry-after"], "1");
  // Meanwhile another address is not slowed down.
  assert.equal((await get(`/api/accounts/nobody-${run}`)).status, 401);
  assert.equal(await servedAgain(), 401, "served again");
  await refilled();
});

test("sign-ins from one address are slowed at the gateway (429 rate_limited)", { timeout: 30000 }, async () => {
  // GATEWAY_SIGNIN_RATE a minute, a burst of 10: password guessing across
  // many user ids from one address meets the gateway before identity.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: stranger });
  const attempt = (i) => new Promise((resolve, reject) => {
    const body = JSON.stringify({ user_id: `guess-${run}-${i}`, password: "not a password" });
    const req = http.request(gateway + "/api/sessions", {
      method: "POST", agent, headers: { "Content-Type": "application/json" },
    }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("error", reject);
    req.end(body);
  });
  const answers = [];
  for (let i = 0; i < 25; i++) answers.push(await attempt(i));
  agent.destroy();
  const limited = answers.filter((a) => a.status === 429);
  assert.ok(answers.slice(0, 10).every((a) => a.status === 401), "the burst reaches identity: 401");
  assert.ok(limited.length >= 10, `${limited.length} of 25 limited`);
  assert.equal(JSON.parse(limited[0].text).error.code, "rate_limited");
});

test("nginx's workers do not run as root", { skip: process.getuid() !== 0 && "only root can switch users" }, () => {
  const master = fs.readFileSync(`${process.env.SHOP_VAR}/run/gateway.pid`, "utf8").trim();
  const users = execFileSync("ps", ["-o", "user=", "--ppid", master], { encoding: "utf8" }).trim().split(/\s+/);
  assert.ok(users.length >= 1);
  assert.deepEqual([...new Set(users)], ["nobody"]);
});
