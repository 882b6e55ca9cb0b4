// The database cluster's leader lost while browsers follow their orders
// (make test's cluster step, DB_NODES=3): each orders instance's LISTEN
// connection finds the new leader and tells its open sockets to resync,
// the sockets themselves stay open, and /readyz names the node each
// instance now writes to. The old node is brought back (make run) and
// rejoins as a replica before the test ends.
import { test } from "node:test";
import { WebSocket } from "ws";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mint, bearer } from "./session.mjs";

const orders = (process.env.SHOP_ORDERS_URLS || "http://127.0.0.1:18180 http://127.0.0.1:18182").split(" ");
const pgPort = Number(process.env.PG_PORT || 54430);
const patroniPort = Number(process.env.PATRONI_PORT || 18190);
const stack = new URL("../../scripts/stack.sh", import.meta.url).pathname;
const run = `${process.pid}-${Date.now() % 100000}`;

async function until(what, cond, ms = 60000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await cond().catch(() => false);
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const get = async (url) => {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return { status: res.status, body: await res.json().catch(() => null) };
};
const leader = () => Number(execFileSync(stack, ["db-leader"], { encoding: "utf8" }).trim());

test("the leader lost: every orders instance tells its sockets to resync and names the new leader",
  { timeout: 180000 }, async () => {
  const lost = leader();
  for (const base of orders)
    assert.equal((await get(`${base}/readyz`)).body.checks.database_node, `127.0.0.1:${pgPort + lost - 1}`,
      `${base} writes to the leader`);
  const sockets = orders.map((base, i) => {
    const user = `failover-${i}-${run}`;
    const socket = new WebSocket(`${base.replace(/^http/, "ws")}/ws?user_id=${user}`,
      { headers: bearer(mint(user)) });
    const messages = [];
    socket.addEventListener("message", (e) => messages.push(JSON.parse(e.data)));
    return { socket, messages, opened: new Promise((resolve) => socket.addEventListener("open", resolve)) };
  });
  await Promise.all(sockets.map((s) => s.opened));

  execFileSync(stack, ["kill", "db-leader"], { stdio: ["ignore", "ignore", "inherit"] });
  const now = await until("a new leader", async () => {
    const n = leader();
    return n !== lost && n;
  });
  for (const [i, s] of sockets.entries()) {
    await until(`a resync on ${orders[i]}`, async () => s.messages.some((m) => m.type === "resync"));
    assert.equal(s.socket.readyState, WebSocket.OPEN, "the socket itself stayed open");
    s.socket.close(1000);
  }
  for (const base of orders)
    await until(`${base}/readyz naming db-${now}`, async () => {
      const r = await get(`${base}/readyz`);
      return r.status === 200 && r.body.checks.database_node === `127.0.0.1:${pgPort + now - 1}`;
    });

  execFileSync(stack, ["up"], { stdio: ["ignore", "ignore", "inherit"] });
  await until(`db-${lost} back as a replica`, async () =>
    (await fetch(`http://127.0.0.1:${patroniPort + lost - 1}/replica?lag=16MB`,
      { signal: AbortSignal.timeout(2000) })).status === 200, 120000);
});
