// Connection PATCH (rename, partial attribute_maps / saml_options, state active/inactive),
// deleteConnection, and the connection.activated|deactivated|deleted events, through the official WorkOS Node SDK
// (@workos-inc/node 11) against a real `idbridge serve`. Node 11 has no updateConnection, so the
// PATCH itself is a raw call; every read goes through the SDK, and every raw response and event
// the spec documents is validated against @workos/openapi-spec. Run by
// tests/tests/connections_state_sdk.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import { WorkOS, NotFoundException } from '@workos-inc/node';
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
  const dir = mkdtempSync(join(tmpdir(), 'idbridge-conn-js-'));
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
  return { status: res.status, headers: res.headers, text, json: text && text.startsWith('{') ? JSON.parse(text) : null };
}

/** Starts a login the way a browser would; returns where /sso/authorize sent it. */
async function authorize(conn) {
  const url = workos.sso.getAuthorizationUrl({ connection: conn.id, redirectUri: CALLBACK, state: `st-${TAG}`, clientId: CLIENT_ID });
  const res = await fetch(url, { redirect: 'manual' });
  assert.equal(res.status, 302, `authorize answered ${res.status}`);
  return new URL(res.headers.get('location'));
}

let org;
let conn;

test('setup: an organization and a SAML connection', async () => {
  org = await workos.organizations.createOrganization({
    name: `Conn ${TAG}`,
    domainData: [{ domain: `conn-${TAG}.example.com`, state: 'verified' }],
  });
  const created = await api('POST', '/connections', {
    organization_id: org.id,
    name: `idp ${TAG}`,
    connection_type: 'GenericSAML',
    saml_options: { idp_entity_id: `https://idp.example.test/${TAG}`, idp_sso_url: IDP_SSO, idp_signing_certs: [cert()] },
  });
  assert.equal(created.status, 201, created.text);
  conn = created.json;
});

test('PATCH /connections/{id} renames; the SDK reads the new name; bad bodies are 422 and change nothing', async () => {
  const r = await api('PATCH', `/connections/${conn.id}`, { name: `renamed ${TAG}` });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.name, `renamed ${TAG}`);
  const got = await workos.sso.getConnection(conn.id);
  assert.equal(got.name, `renamed ${TAG}`);
  validate('/connections/{id}', 'get', 200, (await api('GET', `/connections/${conn.id}`)).json);

  const bad = await api('PATCH', `/connections/${conn.id}`, { state: 'paused', colour: 'red', saml_options: { foo: 1 }, name: 'x' });
  assert.equal(bad.status, 422, bad.text);
  assert.deepEqual(bad.json.errors.map((e) => e.field).sort(), ['colour', 'saml_options.foo', 'state']);
  const typed = await api('PATCH', `/connections/${conn.id}`, { connection_type: 'OktaSAML' });
  assert.equal(typed.status, 422);
  assert.equal((await workos.sso.getConnection(conn.id)).name, `renamed ${TAG}`);
  const missing = await api('PATCH', '/connections/conn_01ARZ3NDEKTSV4RRFFQ69G5FAV', { name: 'x' });
  assert.equal(missing.status, 404);
});

test('PATCH merges attribute_maps and saml_options (only what is sent changes; null resets)', async () => {
  const admin = async () => (await api('GET', `/admin/connections/${conn.id}`)).json.settings;
  const before = await admin();
  // Refused by name, nothing half-applied (the valid name beside it is not applied either).
  for (const [body, field] of [
    [{ name: 'half', attribute_maps: { standard_attributes: { shoe: 'x' } } }, 'attribute_maps.standard_attributes.shoe'],
    [{ name: 'half', saml_options: { idp_sso_url: 'not a url' } }, 'saml_options.idp_sso_url'],
    [{ name: 'half', saml_options: { idp_signing_certs: ['garbage'] } }, 'saml_options.idp_signing_certs[0]'],
    [{ name: 'half', oidc_options: { client_id: 'c' } }, 'oidc_options'],
  ]) {
    const r = await api('PATCH', `/connections/${conn.id}`, body);
    assert.equal(r.status, 422, r.text);
    assert.ok(r.json.errors.some((e) => e.field === field), r.text);
  }
  assert.deepEqual(await admin(), before);
  assert.equal((await workos.sso.getConnection(conn.id)).name, `renamed ${TAG}`);

  const r = await api('PATCH', `/connections/${conn.id}`, {
    attribute_maps: { standard_attributes: { email: 'mail', groups: null }, custom_attributes: { team: 'dept' } },
    saml_options: { idp_metadata_url: null, acs_url: null, sp_entity_id: null, idp_sso_url: 'https://idp2.example.test/sso' },
  });
  assert.equal(r.status, 200, r.text);
  validate('/connections/{id}', 'get', 200, r.json);
  const got = await workos.sso.getConnection(conn.id);
  assert.equal(got.id, conn.id);
  assert.equal(got.name, `renamed ${TAG}`, 'the name was not sent: kept');
  const after = await admin();
  assert.equal(after.attribute_map.email[0], 'mail');
  assert.deepEqual(after.attribute_map.custom, { team: 'dept' });
  assert.equal(after.idp_sso_url, 'https://idp2.example.test/sso');
  for (const k of ['idp_entity_id', 'idp_signing_certs', 'sp_signing_certs', 'sp_encryption_certs', 'sp_entity_id', 'acs_url']) {
    assert.deepEqual(after[k], before[k], `${k} must not change`);
  }
  const target = await authorize(conn);
  assert.equal(target.origin + target.pathname, 'https://idp2.example.test/sso');
  // Back, for the tests below.
  const back = await api('PATCH', `/connections/${conn.id}`, { saml_options: { idp_sso_url: IDP_SSO }, attribute_maps: { standard_attributes: { email: null } } });
  assert.equal(back.status, 200, back.text);
  assert.equal((await admin()).attribute_map.email[0], 'email', 'null: the type\'s default again');
});

test('state inactive: connection.deactivated, and /sso/authorize starts no login', async () => {
  const before = await authorize(conn);
  assert.equal(before.origin + before.pathname, IDP_SSO, 'an active connection goes to the IdP');

  const r = await api('PATCH', `/connections/${conn.id}`, { state: 'inactive' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.state, 'inactive');
  const got = await workos.sso.getConnection(conn.id);
  assert.equal(got.state, 'inactive');
  const to = await authorize(conn);
  assert.equal(to.origin + to.pathname, CALLBACK);
  assert.equal(to.searchParams.get('error'), 'connection_unlinked');
  assert.equal(to.searchParams.get('state'), `st-${TAG}`);
  // Asking again changes nothing (no second event).
  assert.equal((await api('PATCH', `/connections/${conn.id}`, { state: 'inactive' })).status, 200);
});

test('state active: connection.activated, logins start again', async () => {
  const r = await api('PATCH', `/connections/${conn.id}`, { state: 'active' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.state, 'active');
  assert.equal((await workos.sso.getConnection(conn.id)).state, 'active');
  const to = await authorize(conn);
  assert.equal(to.origin + to.pathname, IDP_SSO);
});

test('/sso/authorize?domain_hint= routes by a verified domain; others get connection_domain_invalid', async () => {
  const go = async (hint) => {
    const q = new URLSearchParams({ client_id: CLIENT_ID, redirect_uri: CALLBACK, response_type: 'code', state: 'dh', domain_hint: hint });
    const res = await fetch(`${BASE}/sso/authorize?${q}`, { redirect: 'manual' });
    assert.equal(res.status, 302);
    return new URL(res.headers.get('location'));
  };
  const to = await go(`CONN-${TAG}.example.com`);
  assert.equal(to.origin + to.pathname, IDP_SSO, 'the verified domain selects the organization and its one connection');
  const pending = await workos.organizations.createOrganization({
    name: `Pending ${TAG}`,
    domainData: [{ domain: `pending-${TAG}.example.com`, state: 'pending' }],
  });
  assert.ok(pending.id);
  for (const hint of [`pending-${TAG}.example.com`, `nobody-${TAG}.example.com`]) {
    const back = await go(hint);
    assert.equal(back.origin + back.pathname, CALLBACK);
    assert.equal(back.searchParams.get('error'), 'connection_domain_invalid', hint);
  }
  // An explicit selector still wins over the hint.
  const both = new URLSearchParams({ client_id: CLIENT_ID, redirect_uri: CALLBACK, response_type: 'code', connection: conn.id, domain_hint: `nobody-${TAG}.example.com` });
  const res = await fetch(`${BASE}/sso/authorize?${both}`, { redirect: 'manual' });
  assert.equal(new URL(res.headers.get('location')).origin + new URL(res.headers.get('location')).pathname, IDP_SSO);
});

test('deleteConnection: gone, and 404 afterwards', async () => {
  await workos.sso.deleteConnection(conn.id);
  await assert.rejects(workos.sso.getConnection(conn.id), (e) => e instanceof NotFoundException);
  assert.equal((await api('PATCH', `/connections/${conn.id}`, { state: 'active' })).status, 404);
});

test('connection.deactivated, connection.activated, connection.deleted: one each, valid per the spec', async () => {
  const names = ['connection.activated', 'connection.deactivated', 'connection.deleted'];
  const r = await api('GET', `/events?events=${names.join(',')}&limit=100`);
  assert.equal(r.status, 200, r.text);
  validate('/events', 'get', 200, r.json);
  const mine = r.json.data.filter((e) => e.data.id === conn.id);
  assert.deepEqual(mine.map((e) => e.event), ['connection.deactivated', 'connection.activated', 'connection.deleted']);
  assert.deepEqual(mine.map((e) => e.data.state), ['inactive', 'active', 'active']);
  for (const e of mine) {
    assert.equal(e.data.organization_id, org.id);
    assert.deepEqual(e.data.domains.map((d) => d.domain), [`conn-${TAG}.example.com`]);
  }
  const listed = await workos.events.listEvents({ events: names, limit: 100 });
  assert.deepEqual(
    listed.data.filter((e) => e.data.id === conn.id).map((e) => e.event),
    ['connection.deactivated', 'connection.activated', 'connection.deleted'],
  );
});
