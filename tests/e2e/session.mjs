// What the node tests share to act as a user: sign up and in through the
// identity API (what a client does), or mint a token with the test stack's
// signing key (to make one that is expired, or an operator's, on demand).
import { readFileSync } from "node:fs";
import { createPrivateKey, sign } from "node:crypto";

export const identity = process.env.SHOP_IDENTITY_URL || "http://127.0.0.1:18084";

// Signs up (if new) and in; returns the token.
export async function signedIn(user, password = "a long test password") {
  const post = (path) => fetch(identity + path, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: user, password }),
  });
  const up = await post("/users");
  if (up.status !== 201 && up.status !== 409) throw new Error(`sign-up ${user}: ${up.status}`);
  const session = await post("/sessions");
  if (session.status !== 200) throw new Error(`sign-in ${user}: ${session.status}`);
  return (await session.json()).token;
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

// A token signed with identity's key (libsodium's secret key: the 32-byte
// seed, then the public key), with the claims asked for.
export function mint(user, { role = "user", expiresIn = 900, audience = "shop" } = {}) {
  const raw = Buffer.from(readFileSync(process.env.AUTH_KEY_FILE, "utf8").trim(), "base64");
  const key = createPrivateKey({
    key: { kty: "OKP", crv: "Ed25519", d: b64url(raw.subarray(0, 32)), x: b64url(raw.subarray(32)) },
    format: "jwk",
  });
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "EdDSA", typ: "JWT" }));
  const claims = b64url(JSON.stringify({
    iss: "shop-identity", aud: audience, sub: user, role, iat: now - 60, exp: now + expiresIn, jti: "node",
  }));
  const signature = b64url(sign(null, Buffer.from(`${header}.${claims}`), key));
  return `${header}.${claims}.${signature}`;
}

export const bearer = (token) => ({ Authorization: `Bearer ${token}` });
