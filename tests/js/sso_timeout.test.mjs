// authentication.sso_timed_out, sso_failed and sso_started through the official WorkOS Node SDK
// (@workos-inc/node 11) against a real `idbridge serve` whose logins live 2 seconds
// (`[sso] login_ttl_secs = 2`): a login abandoned at the IdP is announced once as timed out; a
// login that failed (a forged response at the ACS) is announced as failed and never as timed
// out. Every raw /events page is validated against @workos/openapi-spec. Run by
// tests/tests/connections_state_sdk.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { WorkOS } from '@workos-inc/node';
import { validate } from './openapi_check.mjs';

const BASE = process.env.IDBRIDGE_URL;
const API_KEY = process.env.IDBRIDGE_API_KEY;
const CLIENT_ID = process.env.IDBRIDGE_CLIENT_ID;
const PORT = Number(process.env.IDBRIDGE_PORT);
const CALLBACK = process.env.IDBRIDGE_SSO_CALLBACK;
if (!BASE || !API_KEY || !CLIENT_ID || !PORT || !CALLBACK) {
  throw new Error('IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_CLIENT_ID, IDBRIDGE_PORT, IDBRIDGE_SSO_CALLBACK must be set');
}
const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0, clientId: CLIENT_ID });
const TAG = randomBytes(4).toString('hex');
const IDP_SSO = 'https://idp.example.test/sso';

function cert() {
  const dir = mkdtempSync(join(tmpdir(), 'idbridge-timeout-js-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
      '-subj', '/CN=test-idp', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    return readFileSync(join(dir, 'cert.pem'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function api(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    redirect: 'manual',
    headers: {
      Authorization: `Bearer ${API_KEY}`,
      Accept: 'application/json',
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, text, json: text && text.startsWith('{') ? JSON.parse(text) : null };
}

async function connection(org, name) {
  const created = await api('POST', '/connections', {
    organization_id: org.id,
    name: `${name} ${TAG}`,
    connection_type: 'GenericSAML',
    saml_options: { idp_entity_id: `https://idp.example.test/${name}/${TAG}`, idp_sso_url: IDP_SSO, idp_signing_certs: [cert()] },
  });
  assert.equal(created.status, 201, created.text);
  return created.json;
}

/** Starts a login the way a browser would: the IdP redirect and the session cookie. */
async function authorize(conn) {
  const url = workos.sso.getAuthorizationUrl({ connection: conn.id, redirectUri: CALLBACK, state: `st-${TAG}`, clientId: CLIENT_ID });
  const res = await fetch(url, { redirect: 'manual' });
  assert.equal(res.status, 302, `authorize answered ${res.status}`);
  const location = new URL(res.headers.get('location'));
  assert.ok(location.href.startsWith(IDP_SSO), location.href);
  const cookie = res.headers.get('set-cookie').split(';')[0];
  return { relay: location.searchParams.get('RelayState'), cookie };
}

/** The raw /events page for one type and organization, validated against the spec. */
async function events(type, org) {
  const r = await api('GET', `/events?events=${type}&organization_id=${org.id}&limit=100`);
  assert.equal(r.status, 200, r.text);
  validate('/events', 'get', 200, r.json);
  return r.json.data;
}

test('an abandoned login times out once; a failed one is failed, never timed out', async () => {
  const org = await workos.organizations.createOrganization({ name: `Timeout ${TAG}` });
  const abandonedConn = await connection(org, 'abandoned');
  const failedConn = await connection(org, 'failed');

  await authorize(abandonedConn);
  const failing = await authorize(failedConn);
  const forged = Buffer.from('<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_x" Version="2.0"/>').toString('base64');
  const acs = await fetch(`${BASE}/sso/saml/acs/${failedConn.id}`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: failing.cookie },
    body: new URLSearchParams({ SAMLResponse: forged, RelayState: failing.relay }).toString(),
  });
  assert.equal(acs.status, 302);
  const back = new URL(acs.headers.get('location'));
  assert.equal(`${back.origin}${back.pathname}`, CALLBACK);
  assert.ok(back.searchParams.get('error'), back.href);

  const started = await events('authentication.sso_started', org);
  assert.equal(started.length, 2);
  const failed = await events('authentication.sso_failed', org);
  assert.deepEqual(failed.map((e) => e.data.sso.connection_id), [failedConn.id]);
  assert.equal(failed[0].data.status, 'failed');

  // Logins live 2 s and the sweeper runs every second: announced within a few seconds.
  let timedOut = [];
  for (let i = 0; i < 40 && timedOut.length === 0; i += 1) {
    await sleep(250);
    timedOut = await events('authentication.sso_timed_out', org);
  }
  assert.equal(timedOut.length, 1, JSON.stringify(timedOut));
  await sleep(2500);
  timedOut = await events('authentication.sso_timed_out', org);
  assert.deepEqual(timedOut.map((e) => e.data.sso.connection_id), [abandonedConn.id], 'once, and only the abandoned login');
  const e = timedOut[0];
  assert.equal(e.data.status, 'timed_out');
  assert.equal(e.data.type, 'sso');
  assert.equal(e.data.sso.organization_id, org.id);
  assert.equal(e.data.error.code, 'sso_timed_out');

  // Through the SDK too.
  const listed = await workos.events.listEvents({ events: ['authentication.sso_timed_out'], organizationId: org.id });
  assert.deepEqual(listed.data.map((x) => x.id), [e.id]);
});
