// Shop's web page: sign up or in (identity sets an HttpOnly session
// cookie, which every later request and the WebSocket carry; the page never
// sees the token), open the account, top up, buy, and watch each order's
// status change live over the /api/ws WebSocket. An expired session says so
// and shows the sign-in form again. No framework: the page is small and the
// DOM API does the job.

const $ = (id) => document.getElementById(id);
const state = { user: null, socket: null, retry: 0, orders: new Map(), refunding: new Set(), accountWrites: 0 };

// ---- money: the API counts minor units (cents); the page shows 12.34 ----

function toCents(text) {
  const m = /^(\d{1,10})(?:\.(\d{1,2}))?$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
}

function formatCents(cents) {
  return (cents / 100).toFixed(2);
}

// ---- API calls: errors come back as {"error": {"code", "message"}} ----

async function api(method, path, body, key) {
  const headers = { "Content-Type": "application/json" };
  // A POST carries the Idempotency-Key of what the shopper asked for once
  // (see once() below): sent again, it creates nothing twice.
  if (method === "POST") headers["Idempotency-Key"] = key || crypto.randomUUID();
  let response;
  try {
    response = await fetch("/api" + path, { method, headers, body: body && JSON.stringify(body) });
  } catch {
    const error = new Error("The shop cannot be reached. Check your connection and try again.");
    error.unsure = true; // the request may have arrived
    throw error;
  }
  const data = await response.json().catch(() => null);
  if (response.status === 401 && state.user) { // the session ended under us
    sessionEnded(data?.error?.code === "token_expired"
      ? "Your session has expired. Please sign in again."
      : "You are signed out. Please sign in again.");
  }
  if (!response.ok) {
    const error = new Error(data?.error?.message || `The shop answered ${response.status}.`);
    error.status = response.status;
    error.code = data?.error?.code;
    // No definite answer: the same request again (same key) is safe, and
    // tells what happened.
    error.unsure = [502, 503, 504].includes(response.status) || response.status === 429 ||
      error.code === "idempotency_key_in_use";
    throw error;
  }
  return data;
}

// ---- a purchase or a top-up happens once, whatever the network does ----
//
// Each form keeps one Idempotency-Key for what the shopper asked for, until
// a definite answer: retried by the page itself (a lost answer, a
// 502/503/504, "outcome unknown"), and again if the shopper clicks once
// more with the same values, so that however often it is sent, it is done
// once. A new key only for a new request: other values, or after a
// definite answer.
const pendingKeys = new Map(); // form id -> { body: JSON text, key }

function keyFor(formId, body) {
  const text = JSON.stringify(body);
  const kept = pendingKeys.get(formId);
  if (kept && kept.body === text) return kept.key;
  const key = crypto.randomUUID();
  pendingKeys.set(formId, { body: text, key });
  return key;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function once(formId, path, body) {
  const key = keyFor(formId, body);
  for (let attempt = 0; ; attempt++) {
    try {
      const data = await api("POST", path, body, key);
      pendingKeys.delete(formId);
      return data;
    } catch (error) {
      if (!error.unsure || attempt >= 5) {
        if (!error.unsure) pendingKeys.delete(formId); // definite: done with this key
        else error.message += " Click again to retry: it will not be done twice.";
        throw error;
      }
      showError(new Error("Still trying…"));
      await sleep(500 * 2 ** attempt);
      showError(null);
    }
  }
}

function showError(error) {
  const box = $("error");
  box.textContent = error ? error.message : "";
  box.hidden = !error;
}

// Runs a form's action with its button disabled and errors shown; a second
// submit while the first is under way (a double click, Enter) does nothing.
function handle(form, action) {
  let busy = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    busy = true;
    const button = form.querySelector("button");
    button.disabled = true;
    showError(null);
    try {
      await action(new FormData(form));
      form.reset();
    } catch (error) {
      showError(error);
    } finally {
      busy = false;
      button.disabled = false;
    }
  });
}

// ---- account ----

function showAccount(account) {
  $("no-account").hidden = Boolean(account);
  $("account").hidden = !account;
  if (account) $("balance").value = formatCents(account.balance);
}

// A read of the account says what was true when it was served: one sent
// before a write (the opening, a top-up) was answered may be older than
// that write's answer (it may say there is no account yet), so it is
// dropped. The write's answer, and reads sent after it, are shown.
async function writeAccount(request) {
  const account = await request();
  state.accountWrites++;
  showAccount(account);
}

async function loadAccount() {
  if (!state.user) return;
  const writes = state.accountWrites;
  let account;
  try {
    account = await api("GET", `/accounts/${encodeURIComponent(state.user)}`);
  } catch (error) {
    if (error.status !== 404) return showError(error);
    account = null;
  }
  if (writes === state.accountWrites) showAccount(account);
}

// ---- orders ----

function renderOrders() {
  const rows = [...state.orders.values()].sort((a, b) => b.created_at.localeCompare(a.created_at));
  const body = $("orders");
  body.replaceChildren(...rows.map((order) => {
    const row = document.createElement("tr");
    row.dataset.orderId = order.id;
    const when = document.createElement("td");
    when.textContent = new Date(order.created_at).toLocaleTimeString();
    if (order.trace_id) { // its journey through the services, in Zipkin
      const trace = document.createElement("a");
      trace.className = "trace";
      trace.href = `/zipkin/traces/${encodeURIComponent(order.trace_id)}`;
      trace.target = "_blank";
      trace.rel = "noopener";
      trace.title = "Where this order went and where its time went (its trace, in Zipkin)";
      trace.textContent = "trace";
      when.append(trace);
    }
    const what = document.createElement("td");
    what.textContent = order.description || "—";
    const price = document.createElement("td");
    price.className = "num";
    price.textContent = formatCents(order.amount);
    if (order.refunded_amount > 0) {
      const back = document.createElement("span");
      back.className = "refunded";
      back.textContent = `${formatCents(order.refunded_amount)} refunded`;
      price.append(back);
    }
    const status = document.createElement("td");
    status.className = `status ${order.status}`;
    status.textContent = order.status;
    if (order.reason) {
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = order.reason.replaceAll("_", " ");
      status.append(reason);
    }
    const actions = document.createElement("td");
    if (order.status === "NEW" && order.cancel_requested) {
      actions.textContent = "cancelling…";
    } else if (order.status === "NEW") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cancel";
      button.textContent = "Cancel";
      button.addEventListener("click", () => cancelOrder(order.id, button));
      actions.append(button);
    } else if (state.refunding.has(order.id)) {
      actions.textContent = "refunding…";
    } else if (order.status === "FINISHED") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "refund";
      button.textContent = "Refund";
      button.title = `Give back ${formatCents(order.amount - order.refunded_amount)}`;
      button.addEventListener("click", () => refundOrder(order, button));
      actions.append(button);
    }
    row.append(when, what, price, status, actions);
    return row;
  }));
  $("no-orders").hidden = rows.length > 0;
}

// Asks to cancel a NEW order: it ends CANCELLED (live), and whatever was
// paid for it comes back. Asking twice is harmless, so no key is needed.
async function cancelOrder(id, button) {
  button.disabled = true;
  showError(null);
  try {
    remember(await api("POST", `/orders/${id}/cancel`));
  } catch (error) {
    if (error.code === "not_cancellable") loadOrders(); // paid meanwhile: show it so
    showError(error);
  }
  renderOrders();
}

// Asks for what is left of a paid order back. A refund moves money: one
// Idempotency-Key per order until a definite answer (once()), so a lost
// answer retried, or a second click, is still one refund. The refund
// completes live (order.updated with its new refunded_amount).
async function refundOrder(order, button) {
  button.disabled = true;
  showError(null);
  state.refunding.add(order.id);
  renderOrders();
  try {
    await once(`refund-${order.id}`, `/orders/${order.id}/refunds`, {});
  } catch (error) {
    state.refunding.delete(order.id);
    if (error.code === "refund_exceeds_payment") loadOrders(); // refunded meanwhile
    showError(error);
  }
  renderOrders();
}

function remember(order) {
  const known = state.orders.get(order.id);
  // A late NEW (the POST's answer) never hides a final status from the socket.
  if (known && known.status !== "NEW" && order.status === "NEW") return;
  state.orders.set(order.id, order);
}

async function loadOrders() {
  if (!state.user) return;
  try {
    const page = await api("GET", "/orders?limit=50");
    state.orders.clear();
    page.orders.forEach(remember);
    renderOrders();
  } catch (error) {
    showError(error);
  }
}

// ---- live updates ----

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The session cookie goes with the upgrade: the socket follows its user.
  const socket = new WebSocket(`${scheme}://${location.host}/api/ws`);
  state.socket = socket;
  socket.addEventListener("open", () => {
    state.retry = 0;
    $("live").classList.add("on");
    // Whatever changed while we were away.
    loadOrders();
    loadAccount();
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "resync") { // the server may have missed changes
      loadOrders();
      loadAccount();
      return;
    }
    if (message.type !== "order.updated") return;
    remember(message.order);
    // A paid order changes only when a refund of it completed (or failed).
    if (message.order.status !== "NEW") state.refunding.delete(message.order.id);
    renderOrders();
    if (["FINISHED", "REFUNDED"].includes(message.order.status)) loadAccount();
  });
  socket.addEventListener("close", (event) => {
    $("live").classList.remove("on");
    if (state.socket !== socket) return; // signed out
    // 4001: the session's token expired; the server follows it no longer.
    if (event.code === 4001) {
      sessionEnded("Your session has expired: sign in again.");
      return;
    }
    const delay = Math.min(10000, 500 * 2 ** state.retry++);
    setTimeout(() => state.socket === socket && connect(), delay);
  });
}

// ---- session ----

function showSignedIn(user) {
  state.user = user;
  $("who-name").textContent = user;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("shop").hidden = false;
  state.orders.clear();
  renderOrders();
  loadAccount();
  loadOrders();
  connect();
}

function showSignedOut() {
  const socket = state.socket;
  state.socket = null;
  socket?.close();
  state.user = null;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("shop").hidden = true;
}

function sessionEnded(message) {
  showSignedOut();
  showError(new Error(message));
}

async function signOut() {
  try {
    await api("DELETE", "/sessions/current");
  } catch { /* the cookie is cleared on the next answer anyway */ }
  showSignedOut();
  showError(null);
}

async function signIn(user, password) {
  const session = await api("POST", "/sessions", { user_id: user, password });
  showSignedIn(session.user_id);
}

handle($("sign-in-form"), async (form) =>
  signIn(form.get("user_id").trim(), form.get("password")));

$("sign-up-button").addEventListener("click", async () => {
  const form = $("sign-in-form");
  if (!form.reportValidity()) return;
  const data = new FormData(form);
  const user = data.get("user_id").trim(), password = data.get("password");
  showError(null);
  try {
    await api("POST", "/users", { user_id: user, password });
    await signIn(user, password);
    form.reset();
    // Every user gets their account at sign-up.
    await writeAccount(() => api("POST", "/accounts", {}));
  } catch (error) {
    showError(error);
  }
});

$("sign-out").addEventListener("click", signOut);

$("create-account").addEventListener("click", async () => {
  showError(null);
  try {
    await writeAccount(() => api("POST", "/accounts", {}));
  } catch (error) {
    if (error.code === "account_exists") loadAccount();
    else showError(error);
  }
});

handle($("deposit-form"), async (form) => {
  const amount = toCents(form.get("amount"));
  if (amount === null) throw new Error("Enter an amount like 100 or 12.50.");
  await writeAccount(() => once("deposit-form", `/accounts/${encodeURIComponent(state.user)}/deposits`, { amount }));
});

handle($("order-form"), async (form) => {
  const amount = toCents(form.get("amount"));
  if (amount === null) throw new Error("Enter a price like 30 or 4.99.");
  const order = await once("order-form", "/orders", {
    amount, description: form.get("description").trim(),
  });
  remember(order);
  renderOrders();
});

// A session from before (the cookie): who am I?
localStorage.removeItem("shop.user"); // the old, password-less page's
api("GET", "/me").then((me) => showSignedIn(me.user_id)).catch((error) => {
  showSignedOut();
  if (error.code === "token_expired") showError(new Error("Your session has expired. Please sign in again."));
});
