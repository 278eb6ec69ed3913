// OIDC SSO end to end through the official WorkOS Node SDK (@workos-inc/node 11) with a real
// OpenID Provider (oidc-provider on loopback): getAuthorizationUrl → our /sso/authorize → the
// provider's login and consent pages (driven over plain HTTP with a cookie jar) → our
// /sso/oidc/callback → the app's redirect with code and state → getProfileAndToken.
// The /sso/token and /sso/profile bodies the SDK received are validated against
// @workos/openapi-spec.
// Run by tests/tests/sso_oidc_sdk.rs, which starts idbridge and the provider and creates:
//   org A (roles admiral > engineer, default member; multiple mode; navy → admiral,
//          cobol → engineer) with a GenericOIDC connection,
//   org B (roles lead > analyst, default member; single mode; navy → lead,
//          analysts → analyst) with an OktaOIDC connection,
//   org C (no roles) with a GenericOIDC connection that does not ask for `groups`.
// Provider users: any login; `grace` is Grace Hopper in groups navy + cobol, `ada` is Ada
// Lovelace in groups analysts + staff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { WorkOS } from '@workos-inc/node';

import { validate } from './openapi_check.mjs';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set (run through tests/tests/sso_oidc_sdk.rs)`);
  return v;
};
const BASE = need('IDBRIDGE_URL');
const API_KEY = need('IDBRIDGE_API_KEY');
const CLIENT_ID = need('IDBRIDGE_CLIENT_ID');
const PORT = Number(need('IDBRIDGE_PORT'));
const CALLBACK = need('IDBRIDGE_SSO_CALLBACK');
const ISSUER = need('IDBRIDGE_OIDC_ISSUER');
const ORG_A = need('IDBRIDGE_OIDC_ORG_A');
const CONN_A = need('IDBRIDGE_OIDC_CONN_A');
const ORG_B = need('IDBRIDGE_OIDC_ORG_B');
const CONN_B = need('IDBRIDGE_OIDC_CONN_B');
const ORG_C = need('IDBRIDGE_OIDC_ORG_C');
const CONN_C = need('IDBRIDGE_OIDC_CONN_C');

// Every /sso/token and /sso/profile response the SDK receives, to validate what it parsed.
const received = [];
async function recordingFetch(input, init) {
  const res = await fetch(input, init);
  const path = new URL(String(input instanceof Request ? input.url : input)).pathname;
  if (path === '/sso/token' || path === '/sso/profile') {
    const text = await res.clone().text();
    received.push({ path, method: (init?.method ?? 'GET').toLowerCase(), status: res.status, text });
  }
  return res;
}
const lastReceived = (path) => {
  const r = received.filter((x) => x.path === path).at(-1);
  assert.ok(r, `the SDK made no ${path} request`);
  return { ...r, body: JSON.parse(r.text) };
};

const workos = new WorkOS(API_KEY, {
  apiHostname: '127.0.0.1',
  https: false,
  port: PORT,
  maxRetries: 0,
  clientId: CLIENT_ID,
  fetchFn: recordingFetch,
});

/** A browser: no automatic redirects, one cookie jar (idbridge and the provider share 127.0.0.1). */
class Browser {
  jar = new Map();
  /** Every URL visited, in order. */
  visited = [];

  async send(url, init = {}) {
    this.visited.push(String(url));
    const cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, {
      ...init,
      redirect: 'manual',
      headers: { ...(init.headers ?? {}), ...(cookie ? { Cookie: cookie } : {}) },
    });
    for (const c of res.headers.getSetCookie()) {
      const pair = c.split(';')[0];
      const i = pair.indexOf('=');
      if (i > 0) this.jar.set(pair.slice(0, i).trim(), pair.slice(i + 1));
    }
    return res;
  }

  /**
   * From the SDK's authorization URL to the app's callback: signs in at the provider as `login`
   * and consents, or presses the provider's Cancel link (`abort`). Returns the callback URL.
   */
  async run(url, login, { abort = false } = {}) {
    let at = new URL(url);
    let res = await this.send(at);
    for (let step = 0; step < 25; step++) {
      if (res.status >= 300 && res.status < 400) {
        const loc = res.headers.get('location');
        assert.ok(loc, `redirect without Location at ${at}`);
        const next = new URL(loc, at);
        if (next.href.startsWith(CALLBACK)) return next;
        at = next;
        res = await this.send(at);
        continue;
      }
      const html = await res.text();
      assert.equal(res.status, 200, `unexpected ${res.status} at ${at}: ${html}`);
      if (abort) {
        const href = attr(html, 'href', (v) => v.includes('/abort'));
        assert.ok(href, `no Cancel link at ${at}`);
        at = new URL(href, at);
        res = await this.send(at);
        continue;
      }
      const action = attr(html, 'action');
      assert.ok(action, `no form at ${at}: ${html}`);
      const form = html.includes('name="prompt" value="login"')
        ? { prompt: 'login', login, password: 'any' }
        : { prompt: 'consent' };
      at = new URL(action, at);
      res = await this.send(at, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form).toString(),
      });
    }
    assert.fail(`too many steps without reaching the app's callback; visited:\n${this.visited.join('\n')}`);
  }
}

/** The first `name="…"` attribute value that passes `ok`, HTML-unescaped. */
function attr(html, name, ok = () => true) {
  for (const m of html.matchAll(new RegExp(`${name}="([^"]*)"`, 'g'))) {
    const v = m[1].replaceAll('&amp;', '&');
    if (ok(v)) return v;
  }
  return null;
}

/** The query of the provider authorization request of the last login(). */
let lastAuth = null;

/** Logs in and returns the callback's query, checking the trip went through the provider. */
async function login(url, user, opts) {
  const browser = new Browser();
  const back = await browser.run(url, user, opts);
  assert.equal(`${back.origin}${back.pathname}`, CALLBACK);
  // Our /sso/authorize sent the browser to the provider with PKCE (S256), a nonce and a state.
  const auth = browser.visited.map((v) => new URL(v)).find((u) => u.origin === ISSUER && u.pathname === '/auth');
  assert.ok(auth, `the browser never reached the provider:\n${browser.visited.join('\n')}`);
  lastAuth = auth.searchParams;
  assert.equal(auth.searchParams.get('code_challenge_method'), 'S256');
  assert.ok(auth.searchParams.get('nonce'), 'a nonce');
  assert.ok(auth.searchParams.get('state'), 'a provider state');
  assert.equal(auth.searchParams.get('redirect_uri'), `${BASE}/sso/oidc/callback`);
  return back.searchParams;
}

const slugs = (roles) => roles.map((r) => r.slug);

test('GenericOIDC by connection: profile, groups and mapped roles through getProfileAndToken', async () => {
  const url = workos.sso.getAuthorizationUrl({
    connection: CONN_A,
    redirectUri: CALLBACK,
    state: 'node-oidc-state',
    clientId: CLIENT_ID,
  });
  assert.ok(url.startsWith(`${BASE}/sso/authorize?`), url);
  const q = await login(url, 'grace');
  assert.equal(q.get('error'), null, q.toString());
  assert.equal(q.get('state'), 'node-oidc-state');
  const code = q.get('code');
  assert.ok(code, 'a code');

  const { profile, accessToken } = await workos.sso.getProfileAndToken({ code, clientId: CLIENT_ID });
  assert.match(profile.id, /^prof_/);
  assert.equal(profile.email, 'grace@example.com');
  assert.equal(profile.firstName, 'Grace');
  assert.equal(profile.lastName, 'Hopper');
  assert.equal(profile.name, 'Grace Hopper');
  assert.equal(profile.idpId, 'grace', 'idp_id is the provider\'s sub');
  assert.equal(profile.connectionType, 'GenericOIDC');
  assert.equal(profile.connectionId, CONN_A);
  assert.equal(profile.organizationId, ORG_A);
  assert.deepEqual(profile.groups, ['navy', 'cobol']);
  // Multiple-roles mode: every mapped role, best priority first; `role` is the first.
  assert.deepEqual(profile.role, { slug: 'admiral' });
  assert.deepEqual(slugs(profile.roles), ['admiral', 'engineer']);
  assert.deepEqual(profile.rawAttributes, {});
  assert.ok(accessToken, 'an access token');

  const token = lastReceived('/sso/token');
  assert.equal(token.status, 200);
  validate('/sso/token', 'post', 200, token.body);
  assert.equal(token.body.token_type, 'Bearer');
  assert.ok(token.body.expires_in > 0);
  assert.ok('raw_attributes' in token.body.profile, 'raw_attributes is always sent');

  const again = await workos.sso.getProfile({ accessToken });
  assert.equal(again.id, profile.id);
  assert.deepEqual(slugs(again.roles), ['admiral', 'engineer']);
  validate('/sso/profile', 'get', 200, lastReceived('/sso/profile').body);

  // The code was single-use.
  await assert.rejects(workos.sso.getProfileAndToken({ code, clientId: CLIENT_ID }));
  // The connection reads back through the SDK as what it is.
  const conn = await workos.sso.getConnection(CONN_A);
  assert.equal(conn.type, 'GenericOIDC');
  assert.equal(conn.state, 'active');
  assert.equal(conn.organizationId, ORG_A);
});

test('organization selector with login_hint: another user of org A gets the default role', async () => {
  const url = workos.sso.getAuthorizationUrl({
    organization: ORG_A,
    redirectUri: CALLBACK,
    state: 'node-org-a',
    clientId: CLIENT_ID,
    loginHint: 'ada',
  });
  const q = await login(url, 'ada');
  assert.equal(lastAuth.get('login_hint'), 'ada', 'login_hint is passed on to the provider');
  assert.equal(q.get('error'), null, q.toString());
  assert.equal(q.get('state'), 'node-org-a');
  const { profile } = await workos.sso.getProfileAndToken({ code: q.get('code'), clientId: CLIENT_ID });
  assert.equal(profile.email, 'ada@example.com');
  assert.equal(profile.firstName, 'Ada');
  assert.equal(profile.lastName, 'Lovelace');
  assert.equal(profile.idpId, 'ada');
  assert.equal(profile.connectionId, CONN_A);
  assert.equal(profile.organizationId, ORG_A);
  assert.deepEqual(profile.groups, ['analysts', 'staff']);
  // No group of hers is mapped in org A.
  assert.deepEqual(profile.role, { slug: 'member' });
  assert.deepEqual(slugs(profile.roles), ['member']);
  validate('/sso/token', 'post', 200, lastReceived('/sso/token').body);
});

test('OktaOIDC by organization: single-role mode keeps the best mapped role', async () => {
  const url = workos.sso.getAuthorizationUrl({
    organization: ORG_B,
    redirectUri: CALLBACK,
    state: 'node-org-b',
    clientId: CLIENT_ID,
  });
  let q = await login(url, 'grace');
  assert.equal(q.get('state'), 'node-org-b');
  let { profile } = await workos.sso.getProfileAndToken({ code: q.get('code'), clientId: CLIENT_ID });
  assert.equal(profile.connectionType, 'OktaOIDC');
  assert.equal(profile.connectionId, CONN_B);
  assert.equal(profile.organizationId, ORG_B);
  assert.equal(profile.idpId, 'grace');
  assert.deepEqual(profile.groups, ['navy', 'cobol']);
  assert.deepEqual(profile.role, { slug: 'lead' });
  assert.deepEqual(slugs(profile.roles), ['lead']);
  validate('/sso/token', 'post', 200, lastReceived('/sso/token').body);

  q = await login(workos.sso.getAuthorizationUrl({
    connection: CONN_B, redirectUri: CALLBACK, state: 'node-b-ada', clientId: CLIENT_ID,
  }), 'ada');
  ({ profile } = await workos.sso.getProfileAndToken({ code: q.get('code'), clientId: CLIENT_ID }));
  assert.deepEqual(profile.role, { slug: 'analyst' });
  assert.deepEqual(slugs(profile.roles), ['analyst']);
});

test('PKCE through getAuthorizationUrlWithPKCE, as a public client (no API key)', async () => {
  const publicClient = new WorkOS({
    clientId: CLIENT_ID, apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0,
  });
  const ok = await workos.sso.getAuthorizationUrlWithPKCE({
    connection: CONN_A, redirectUri: CALLBACK, clientId: CLIENT_ID,
  });
  let q = await login(ok.url, 'grace');
  assert.equal(q.get('state'), ok.state);
  const { profile } = await publicClient.sso.getProfileAndToken({
    code: q.get('code'), clientId: CLIENT_ID, codeVerifier: ok.codeVerifier,
  });
  assert.equal(profile.email, 'grace@example.com');
  assert.equal(profile.connectionType, 'GenericOIDC');
  assert.deepEqual(slugs(profile.roles), ['admiral', 'engineer']);

  // Another verifier is refused, and the failed attempt burns the code.
  const other = await workos.sso.getAuthorizationUrlWithPKCE({
    connection: CONN_A, redirectUri: CALLBACK, clientId: CLIENT_ID,
  });
  q = await login(other.url, 'grace');
  const code = q.get('code');
  await assert.rejects(publicClient.sso.getProfileAndToken({
    code, clientId: CLIENT_ID, codeVerifier: randomBytes(32).toString('base64url'),
  }));
  await assert.rejects(publicClient.sso.getProfileAndToken({
    code, clientId: CLIENT_ID, codeVerifier: other.codeVerifier,
  }));
});

test('the provider answers access_denied: the app gets error and state, never a code', async () => {
  const url = workos.sso.getAuthorizationUrl({
    connection: CONN_A,
    redirectUri: CALLBACK,
    state: 'node-denied',
    clientId: CLIENT_ID,
  });
  const q = await login(url, 'grace', { abort: true });
  assert.equal(q.get('error'), 'access_denied', q.toString());
  assert.ok(q.get('error_description'), 'an error_description');
  assert.equal(q.get('state'), 'node-denied');
  assert.equal(q.get('code'), null);

  // The same through the organization selector of the Okta connection.
  const q2 = await login(workos.sso.getAuthorizationUrl({
    organization: ORG_B, redirectUri: CALLBACK, state: 'node-denied-b', clientId: CLIENT_ID,
  }), 'grace', { abort: true });
  assert.equal(q2.get('error'), 'access_denied', q2.toString());
  assert.equal(q2.get('state'), 'node-denied-b');
  assert.equal(q2.get('code'), null);
});

test('provider_scopes (repeated keys) add scopes at the provider: groups for a connection without them', async () => {
  let q = await login(workos.sso.getAuthorizationUrl({
    connection: CONN_C, redirectUri: CALLBACK, state: 'node-c-plain', clientId: CLIENT_ID,
  }), 'grace');
  assert.equal(lastAuth.get('scope'), 'openid profile email');
  let { profile } = await workos.sso.getProfileAndToken({ code: q.get('code'), clientId: CLIENT_ID });
  assert.equal(profile.organizationId, ORG_C);
  assert.deepEqual(profile.groups ?? [], [], 'no groups without the groups scope');
  assert.equal(profile.role ?? null, null, 'org C has no roles');

  const url = workos.sso.getAuthorizationUrl({
    connection: CONN_C, redirectUri: CALLBACK, state: 'node-c-scopes', clientId: CLIENT_ID,
    providerScopes: ['groups', 'email'],
  });
  assert.match(url, /provider_scopes=groups&provider_scopes=email/);
  q = await login(url, 'grace');
  assert.equal(q.get('state'), 'node-c-scopes');
  assert.equal(lastAuth.get('scope'), 'openid profile email groups');
  ({ profile } = await workos.sso.getProfileAndToken({ code: q.get('code'), clientId: CLIENT_ID }));
  assert.deepEqual(profile.groups, ['navy', 'cobol']);
  assert.equal(profile.connectionType, 'GenericOIDC');
  validate('/sso/token', 'post', 200, lastReceived('/sso/token').body);
});
