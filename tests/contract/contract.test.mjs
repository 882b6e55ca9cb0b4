// The running services against their OpenAPI documents: every documented
// path, method and status is produced by a real request, and every JSON
// answer validates against the documented schema (Ajv, JSON Schema 2020-12
// as OpenAPI 3.1 uses it). A status the services answer but the documents
// do not list fails too.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import { parse } from "yaml";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { mint, bearer } from "../e2e/session.mjs";

const root = new URL("../../", import.meta.url).pathname;
const services = {
  orders: { url: process.env.SHOP_ORDERS_URL || "http://127.0.0.1:18080" },
  payments: { url: process.env.SHOP_PAYMENTS_URL || "http://127.0.0.1:18081" },
  identity: { url: process.env.SHOP_IDENTITY_URL || "http://127.0.0.1:18084" },
};
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addFormat("int64", true);
for (const name of Object.keys(services)) {
  services[name].spec = parse(readFileSync(`${root}api/${name}.yaml`, "utf8"));
  ajv.addSchema(services[name].spec, name);
}

const covered = new Set();

// A JSON pointer's token (RFC 6901): "~" and "/" escaped.
const token = (s) => String(s).replaceAll("~", "~0").replaceAll("/", "~1");

// The documented response, and the JSON pointer where it sits in the
// service's document (so that an inline schema is validated in place,
// its own $refs resolved against that document).
function documented(service, method, template, status) {
  const spec = services[service].spec;
  const op = spec.paths[template]?.[method.toLowerCase()];
  assert.ok(op, `${service}: ${method} ${template} is not documented`);
  let response = op.responses[String(status)];
  assert.ok(response, `${service}: ${method} ${template} answered ${status}, which is not documented`);
  let pointer = `#/paths/${token(template)}/${method.toLowerCase()}/responses/${status}`;
  if (response.$ref) {
    const name = response.$ref.split("/").pop();
    response = spec.components.responses[name];
    pointer = `#/components/responses/${token(name)}`;
  }
  return { ...response, pointer };
}

// Sends one request and checks its answer against the document.
// As whom (a token minted for the user): `as`, else the user the request
// names (/accounts/U, ?user_id=U, a body's user_id), else a bystander;
// `as: null` sends no token. Identity's own calls carry none unless asked.
function actingUser(service, path, body, as) {
  if (as !== undefined) return as;
  if (service === "identity") return null;
  const named = /^\/accounts\/([^/?]+)/.exec(path)?.[1] || /user_id=([^&]+)/.exec(path)?.[1] ||
    (typeof body === "object" && typeof body?.user_id === "string" ? body.user_id : null);
  return named && /^[A-Za-z0-9_.-]{1,64}$/.test(named) ? named : "contract-bystander";
}

async function call(service, method, template, path, { body, headers = {}, status, as, type: bodyType }) {
  const who = actingUser(service, path, body, as);
  const response = await fetch(services[service].url + path, {
    method,
    headers: { "Content-Type": bodyType || "application/json", ...(who ? bearer(mint(who)) : {}), ...headers },
    body: typeof body === "string" ? body : body && JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, status, `${method} ${path}: ${text}`);
  const doc = documented(service, method, template, status);
  const type = response.headers.get("content-type") || "";
  const media = Object.keys(doc.content || {})[0];
  if (media === "application/json") {
    assert.match(type, /^application\/json/, `${method} ${path}`);
    // Every schema, inline ones too, by where it sits in the document.
    const ref = `${service}${doc.pointer}/content/${token(media)}/schema`;
    const valid = ajv.validate({ $ref: ref }, JSON.parse(text));
    assert.ok(valid, `${method} ${path} -> ${status}: ${ajv.errorsText()}\n${text}`);
  } else if (media) {
    assert.ok(type.startsWith(media), `${method} ${path}: ${type} is not ${media}`);
  }
  covered.add(`${service} ${method} ${template} ${status}`);
  return text && type.startsWith("application/json") ? JSON.parse(text) : text;
}

// The WebSocket upgrade, by hand: fetch cannot ask for one.
function upgrade(path, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(services.orders.url + path, { headers });
    req.on("upgrade", (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on("response", (res) => { res.resume(); resolve(res.statusCode); });
    req.on("error", reject);
    req.end();
  });
}

function stack(...args) {
  execFileSync(`${root}scripts/stack.sh`, args, { stdio: ["ignore", "ignore", "inherit"] });
}

function psql(sql, url = process.env.PAYMENTS_DATABASE_URL) {
  const bin = (process.env.PG_BIN || "/usr/lib/postgresql/15/bin") + "/psql";
  return execFileSync(bin, [url, "-qtAc", sql], { encoding: "utf8" }).trim();
}

// A dead letter whose message the consumer handles now (as one a release
// with a bug set aside): its id.
function setAside(service, payload) {
  const url = service === "orders" ? process.env.ORDERS_DATABASE_URL : process.env.PAYMENTS_DATABASE_URL;
  const topic = service === "orders" ? "payment.results" : "payment.requests";
  return psql(`INSERT INTO dead_letters (topic, partition, "offset", key, payload, reason)
    VALUES ('${topic}', 0, 0, 'k', convert_to('${payload}', 'UTF8'), 'contract') RETURNING id`, url);
}

// Waits until the order is no longer NEW (the payment flow answered).
async function settled(id, user) {
  for (const until = Date.now() + 30000; Date.now() < until;) {
    const response = await fetch(`${services.orders.url}/orders/${id}`, { headers: bearer(mint(user)) });
    if ((await response.json()).status !== "NEW") return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail(`order ${id} still NEW after 30 s`);
}

const run = `${process.pid}-${Date.now() % 100000}`;
const big = `{"user_id": "${"x".repeat(20000)}"}`;
const key = (name) => ({ "Idempotency-Key": `${name}-${run}` });

test("every documented answer is what the services give", { timeout: 120000 }, async () => {
  const user = `contract-${run}`, rich = `rich-${run}`;
  const other = `other-${run}`;
  // identity
  const creds = { user_id: `id-${run}`, password: "a long test password" };
  await call("identity", "POST", "/users", "/users", { body: creds, status: 201 });
  await call("identity", "POST", "/users", "/users", { body: creds, status: 409 });
  await call("identity", "POST", "/users", "/users", { body: { user_id: `x-${run}`, password: "short" }, status: 400 });
  await call("identity", "POST", "/users", "/users", { body: big, status: 413 });
  await call("identity", "POST", "/users", "/users", { body: JSON.stringify(creds), type: "text/plain", status: 415 });
  await call("identity", "POST", "/users", "/users", { body: creds, headers: { Origin: "https://evil.example" }, status: 403 });
  const session = await call("identity", "POST", "/sessions", "/sessions", { body: creds, status: 200 });
  await call("identity", "POST", "/sessions", "/sessions", { body: { user_id: 7 }, status: 400 });
  await call("identity", "POST", "/sessions", "/sessions", { body: big, status: 413 });
  await call("identity", "POST", "/sessions", "/sessions", { body: JSON.stringify(creds), type: "text/plain", status: 415 });
  await call("identity", "POST", "/sessions", "/sessions", { body: creds, headers: { Origin: "https://evil.example" }, status: 403 });
  await call("identity", "GET", "/me", "/me", { headers: bearer(session.token), status: 200 });
  await call("identity", "GET", "/me", "/me", { status: 401 });
  await call("identity", "DELETE", "/sessions/current", "/sessions/current", { status: 204 });
  for (let i = 0; i < 5; i++)
    await call("identity", "POST", "/sessions", "/sessions", { body: { ...creds, password: "not the password" }, status: 401 });
  await call("identity", "POST", "/sessions", "/sessions", { body: creds, status: 429 });

  // payments
  await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: user }, status: 201 });
  await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: 7 }, status: 400 });
  await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: user }, status: 409 });
  await call("payments", "POST", "/accounts", "/accounts", { body: big, status: 413 });
  await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: user }, as: null, status: 401 });
  await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: user }, as: other, status: 403 });
  await call("payments", "POST", "/accounts", "/accounts", { body: "user_id=x", type: "text/plain", status: 415 });
  await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: `k-${run}` }, headers: key("a"), status: 201 });
  await call("payments", "POST", "/accounts", "/accounts", { body: {}, as: `k-${run}`, headers: key("a"), status: 422 });
  const acct = "/accounts/{user_id}", dep = "/accounts/{user_id}/deposits";
  await call("payments", "GET", acct, `/accounts/${user}`, { status: 200 });
  await call("payments", "GET", acct, "/accounts/bad%20id", { status: 400 });
  await call("payments", "GET", acct, `/accounts/nobody-${run}`, { status: 404 });
  await call("payments", "GET", acct, `/accounts/${user}`, { as: null, status: 401 });
  await call("payments", "GET", acct, `/accounts/${user}`, { as: other, status: 403 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: { amount: 500 }, status: 201 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: { amount: 0 }, status: 400 });
  await call("payments", "POST", dep, `/accounts/nobody-${run}/deposits`, { body: { amount: 5 }, status: 404 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: big, status: 413 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: { amount: 5 }, as: null, status: 401 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: { amount: 5 }, as: other, status: 403 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: "amount=5", type: "text/plain", status: 415 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: { amount: 5 }, headers: key("d"), status: 201 });
  await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: { amount: 6 }, headers: key("d"), status: 422 });
  await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: rich }, status: 201 });
  psql(`UPDATE accounts SET balance = 9223372036854775000 WHERE user_id = '${rich}'`);
  await call("payments", "POST", dep, `/accounts/${rich}/deposits`, { body: { amount: 1000000 }, status: 409 });
  // Its balance as its entries say again: make reconcile checks every account.
  psql(`UPDATE accounts SET balance = 0 WHERE user_id = '${rich}'`);

  // orders
  const order = await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: 100, description: "contract" }, status: 201 });
  await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: -1 }, status: 400 });
  await call("orders", "POST", "/orders", "/orders", { body: big, status: 413 });
  await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: 1 }, as: null, status: 401 });
  await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: 1 }, as: other, status: 403 });
  await call("orders", "POST", "/orders", "/orders", { body: "amount=1", as: user, type: "text/plain", status: 415 });
  await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: 1 }, headers: key("o"), status: 201 });
  await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: 2 }, headers: key("o"), status: 422 });
  await call("orders", "GET", "/orders", `/orders?user_id=${user}&limit=1`, { status: 200 });
  await call("orders", "GET", "/orders", "/orders?limit=0", { status: 400 });
  await call("orders", "GET", "/orders", `/orders?user_id=${user}`, { as: null, status: 401 });
  await call("orders", "GET", "/orders", `/orders?user_id=${user}`, { as: other, status: 403 });
  await call("orders", "GET", "/orders/{id}", `/orders/${order.id}`, { as: user, status: 200 });
  await call("orders", "GET", "/orders/{id}", `/orders/${order.id}`, { as: other, status: 404 });
  await call("orders", "GET", "/orders/{id}", `/orders/${order.id}`, { as: null, status: 401 });
  await call("orders", "GET", "/orders/{id}", "/orders/00000000-0000-4000-8000-000000000000", { status: 404 });
  // Cancel: a NEW order (202), cancelled (200), a paid one (409).
  const cancel = "/orders/{id}/cancel";
  stack("freeze-every", "payments"); // the order stays NEW meanwhile
  let doomed;
  try {
    doomed = await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: 7, description: "to cancel" }, status: 201 });
    await call("orders", "POST", cancel, `/orders/${doomed.id}/cancel`, { as: other, status: 404 });
    await call("orders", "POST", cancel, `/orders/${doomed.id}/cancel`, { as: null, status: 401 });
    await call("orders", "POST", cancel, `/orders/${doomed.id}/cancel`,
      { as: null, headers: { Cookie: `shop_session=${mint(user)}` }, status: 403 }); // the cookie without our Origin
    await call("orders", "POST", cancel, `/orders/${doomed.id}/cancel`, { as: user, status: 202 });
  } finally {
    stack("thaw-every", "payments");
  }
  await settled(doomed.id, user);
  await call("orders", "POST", cancel, `/orders/${doomed.id}/cancel`, { as: user, status: 200 });
  await settled(order.id, user);
  await call("orders", "POST", cancel, `/orders/${order.id}/cancel`, { as: user, status: 409 });
  // Refunds of the paid order; the cancelled one has nothing to refund.
  const refund = "/orders/{id}/refunds", refunds = `/orders/${order.id}/refunds`;
  await call("orders", "POST", refund, refunds, { as: user, body: { amount: 10 }, headers: key("r1"), status: 202 });
  await call("orders", "POST", refund, refunds, { as: user, body: { amount: 10 }, status: 400 });
  await call("orders", "POST", refund, refunds, { as: null, body: { amount: 10 }, headers: key("r2"), status: 401 });
  await call("orders", "POST", refund, refunds,
    { as: null, body: { amount: 10 }, headers: { ...key("r2"), Cookie: `shop_session=${mint(user)}` }, status: 403 });
  await call("orders", "POST", refund, refunds, { as: other, body: { amount: 10 }, headers: key("r3"), status: 404 });
  await call("orders", "POST", refund, `/orders/${doomed.id}/refunds`, { as: user, headers: key("r4"), status: 409 });
  await call("orders", "POST", refund, refunds, { as: user, body: big, headers: key("r5"), status: 413 });
  await call("orders", "POST", refund, refunds, { as: user, body: "amount=5", type: "text/plain", headers: key("r6"), status: 415 });
  await call("orders", "POST", refund, refunds, { as: user, body: { amount: 91 }, headers: key("r7"), status: 422 });
  await call("orders", "GET", "/orders/{id}", `/orders/${order.id}`, { as: user, status: 200 });
  const ws = { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", ...bearer(mint(user)) };
  assert.equal(await upgrade(`/ws?user_id=${user}`, ws), 101);
  assert.equal(await upgrade("/ws", ws), 101, "without user_id: the token's user");
  covered.add("orders GET /ws 101");
  await call("orders", "GET", "/ws", `/ws?user_id=${user}`, { status: 426 });
  assert.equal(await upgrade("/ws?user_id=bad%20id", ws), 400, "a bad user_id is refused");
  const { Authorization: _, ...anonymous } = ws;
  assert.equal(await upgrade("/ws", anonymous), 401);
  covered.add("orders GET /ws 401");
  assert.equal(await upgrade(`/ws?user_id=${other}`, ws), 403, "another user's stream");
  covered.add("orders GET /ws 403");
  // RFC 6455 §4.2: a malformed handshake is 400, another version is 426.
  assert.equal(await upgrade(`/ws?user_id=${user}`, { ...ws, "Sec-WebSocket-Key": "short" }), 400);
  assert.equal(await upgrade(`/ws?user_id=${user}`, { ...ws, "Sec-WebSocket-Version": "8" }), 426);
  covered.add("orders GET /ws 400");

  // Dead-letter tools, on both services.
  const ops = `ops-${run}`;
  for (const service of ["orders", "payments"]) {
    const uuid = "0b5a1f2e-8c3d-4e6f-9a7b-" + String(Date.now()).slice(-12).padStart(12, "0");
    const type = service === "orders" ? "payment.completed" : "payment.requested";
    const id = setAside(service, `{"type":"${type}","version":1,"order_id":"${uuid}","user_id":"${user}","amount":1}`);
    const other = setAside(service, `{"type":"${type}","version":1,"order_id":"${uuid}","user_id":"${user}","amount":1}`);
    const operator = { headers: bearer(mint(ops, { role: "operator" })) };
    const one = "/dead-letters/{id}/replay", drop = "/dead-letters/{id}/discard";
    await call(service, "GET", "/dead-letters", "/dead-letters?state=all", { ...operator, status: 200 });
    await call(service, "GET", "/dead-letters", "/dead-letters?state=some", { ...operator, status: 400 });
    await call(service, "GET", "/dead-letters", "/dead-letters", { as: null, status: 401 });
    await call(service, "GET", "/dead-letters", "/dead-letters", { as: user, status: 403 });
    await call(service, "POST", one, `/dead-letters/${id}/replay`, { ...operator, status: 200 });
    await call(service, "POST", one, `/dead-letters/${id}/replay`, { ...operator, status: 409 });
    await call(service, "POST", one, "/dead-letters/999999999/replay", { ...operator, status: 404 });
    await call(service, "POST", one, `/dead-letters/${other}/replay`, { as: null, status: 401 });
    await call(service, "POST", one, `/dead-letters/${other}/replay`, { as: user, status: 403 });
    await call(service, "POST", drop, `/dead-letters/${other}/discard`, { ...operator, body: {}, status: 400 });
    await call(service, "POST", drop, `/dead-letters/${other}/discard`, { ...operator, body: big, status: 413 });
    await call(service, "POST", drop, `/dead-letters/${other}/discard`, { ...operator, body: "reason=x", type: "text/plain", status: 415 });
    await call(service, "POST", drop, `/dead-letters/${other}/discard`, { as: null, body: { reason: "x" }, status: 401 });
    await call(service, "POST", drop, `/dead-letters/${other}/discard`, { as: user, body: { reason: "x" }, status: 403 });
    await call(service, "POST", drop, "/dead-letters/999999999/discard", { ...operator, body: { reason: "x" }, status: 404 });
    await call(service, "POST", drop, `/dead-letters/${other}/discard`, { ...operator, body: { reason: "contract" }, status: 200 });
    await call(service, "POST", drop, `/dead-letters/${other}/discard`, { ...operator, body: { reason: "again" }, status: 409 });
    await call(service, "POST", "/dead-letters/replay", "/dead-letters/replay", { ...operator, status: 200 });
    await call(service, "POST", "/dead-letters/replay", "/dead-letters/replay", { as: null, status: 401 });
    await call(service, "POST", "/dead-letters/replay", "/dead-letters/replay", { as: user, status: 403 });
    await call(service, "POST", "/dead-letters/replay", "/dead-letters/replay?after=x", { ...operator, status: 400 });
    const next = await call(service, "POST", "/dead-letters/replay", "/dead-letters/replay?after=0", { ...operator, status: 200 });
    assert.equal(typeof next.more, "boolean", JSON.stringify(next));
    // The books, the service's own checks (make reconcile's first half).
    const books = await call(service, "GET", "/reconciliation", `/reconciliation?users=${user}`, { ...operator, status: 200 });
    assert.ok(books.ok, JSON.stringify(books));
    await call(service, "GET", "/reconciliation", "/reconciliation?users=a%27b", { ...operator, status: 400 });
    await call(service, "GET", "/reconciliation", "/reconciliation", { as: null, status: 401 });
    await call(service, "GET", "/reconciliation", "/reconciliation", { as: user, status: 403 });
  }

  for (const service of ["orders", "payments", "identity"]) {
    await call(service, "GET", "/healthz", "/healthz", { status: 200 });
    await call(service, "GET", "/readyz", "/readyz", { status: 200 });
    await call(service, "GET", "/metrics", "/metrics", { status: 200 });
  }

  // The database down: every operation that needs it answers 503.
  stack("pg-stop");
  try {
    await call("payments", "POST", "/accounts", "/accounts", { body: { user_id: `down-${run}` }, status: 503 });
    await call("payments", "GET", acct, `/accounts/${user}`, { status: 503 });
    await call("payments", "POST", dep, `/accounts/${user}/deposits`, { body: { amount: 5 }, status: 503 });
    await call("orders", "POST", "/orders", "/orders", { body: { user_id: user, amount: 1 }, status: 503 });
    await call("orders", "GET", "/orders", `/orders?user_id=${user}`, { status: 503 });
    await call("orders", "GET", "/orders/{id}", `/orders/${order.id}`, { status: 503 });
    await call("orders", "POST", "/orders/{id}/cancel", `/orders/${order.id}/cancel`, { as: user, status: 503 });
    await call("orders", "POST", "/orders/{id}/refunds", `/orders/${order.id}/refunds`, { as: user, body: { amount: 1 }, headers: key("r8"), status: 503 });
    for (const service of ["orders", "payments", "identity"])
      await call(service, "GET", "/readyz", "/readyz", { status: 503 });
    const operator = { headers: bearer(mint(`ops-${run}`, { role: "operator" })) };
    for (const service of ["orders", "payments"]) {
      await call(service, "GET", "/dead-letters", "/dead-letters", { ...operator, status: 503 });
      await call(service, "POST", "/dead-letters/replay", "/dead-letters/replay", { ...operator, status: 503 });
      await call(service, "POST", "/dead-letters/{id}/replay", "/dead-letters/1/replay", { ...operator, status: 503 });
      await call(service, "POST", "/dead-letters/{id}/discard", "/dead-letters/1/discard", { ...operator, body: { reason: "x" }, status: 503 });
      await call(service, "GET", "/reconciliation", "/reconciliation", { ...operator, status: 503 });
    }
    await call("identity", "POST", "/users", "/users", { body: { user_id: `down-${run}`, password: "a long test password" }, status: 503 });
    await call("identity", "POST", "/sessions", "/sessions", { body: { user_id: `down-${run}`, password: "a long test password" }, status: 503 });
  } finally {
    stack("pg-start");
  }

  // Every documented answer was produced.
  for (const [service, { spec }] of Object.entries(services))
    for (const [template, ops] of Object.entries(spec.paths))
      for (const [method, op] of Object.entries(ops))
        for (const status of Object.keys(op.responses))
          assert.ok(covered.has(`${service} ${method.toUpperCase()} ${template} ${status}`),
            `no test produced ${service} ${method.toUpperCase()} ${template} ${status}`);
});
