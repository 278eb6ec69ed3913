// dsync.activated / dsync.deactivated: a SCIM directory links on its first change
// (dsync.activated), is unlinked by hand with POST /admin/directories/{id}/deactivate
// (dsync.deactivated) — its SCIM token is then refused (SCIM 401, nothing written) — and after
// POST /admin/directories/{id}/activate links again on the next change. Read through the official Node SDK
// (getDirectory, events.listEvents); the events are validated against @workos/openapi-spec.
// Run by tests/tests/dsync_state_sdk.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { WorkOS } from '@workos-inc/node';
import { validate } from './openapi_check.mjs';

const BASE = process.env.IDBRIDGE_URL;
const API_KEY = process.env.IDBRIDGE_API_KEY;
const PORT = Number(process.env.IDBRIDGE_PORT);
const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0 });
const TAG = randomBytes(4).toString('hex');

async function api(method, url, body, token = API_KEY, type = 'application/json') {
  const res = await fetch(url.startsWith('http') ? url : BASE + url, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': type },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null, text };
}

function scimUser(name) {
  return {
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
    userName: `${name}-${TAG}@example.com`,
    externalId: `${name}-${TAG}`,
    name: { givenName: name, familyName: 'Test' },
    emails: [{ primary: true, value: `${name}-${TAG}@example.com`, type: 'work' }],
    active: true,
  };
}

test('a directory links, is deactivated by hand, and links again; events match the spec', async () => {
  const org = await workos.organizations.createOrganization({
    name: `Dsync ${TAG}`,
    domainData: [{ domain: `dsync-${TAG}.example.com`, state: 'verified' }],
  });
  const created = await api('POST', '/admin/directories', { organization_id: org.id, name: `SCIM ${TAG}`, type: 'generic scim v2.0' });
  assert.equal(created.status, 201, created.text);
  const dirId = created.json.directory.id;
  const scim = BASE + new URL(created.json.scim.endpoint).pathname.replace(/\/$/, '');
  const token = created.json.scim.bearer_token;

  const push = async (name) => {
    const r = await api('POST', `${scim}/Users`, scimUser(name), token, 'application/scim+json');
    assert.equal(r.status, 201, r.text);
  };
  // A deactivated directory's own token gets a SCIM 401 saying so; a wrong token the usual one.
  const refused = async (name) => {
    const r = await api('POST', `${scim}/Users`, scimUser(name), token, 'application/scim+json');
    assert.equal(r.status, 401, r.text);
    assert.deepEqual(r.json.schemas, ['urn:ietf:params:scim:api:messages:2.0:Error']);
    assert.equal(r.json.status, '401');
    assert.match(r.json.detail, /deactivated/);
    const wrong = await api('POST', `${scim}/Users`, scimUser(name), `${token}x`, 'application/scim+json');
    assert.equal(wrong.status, 401);
    assert.doesNotMatch(wrong.json.detail, /deactivated/, 'only the token holder learns the state');
    const list = await api('GET', `${scim}/Users?filter=${encodeURIComponent(`userName eq "${name}-${TAG}@example.com"`)}`, undefined, token, 'application/scim+json');
    assert.equal(list.status, 401, 'reads are refused too');
  };
  const activate = async (changed) => {
    const r = await api('POST', `/admin/directories/${dirId}/activate`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.changed, changed);
  };

  // Not linked yet: deactivating emits nothing, but still stops the token.
  const early = await api('POST', `/admin/directories/${dirId}/deactivate`);
  assert.equal(early.status, 200, early.text);
  assert.equal(early.json.event_id, null);
  await refused('early');
  await activate(true);
  await activate(false);
  assert.equal((await api('POST', `/admin/directories/${dirId}/activate`, { now: true })).status, 422);
  await push('first');
  assert.equal((await workos.directorySync.getDirectory(dirId)).state, 'active');

  const off = await api('POST', `/admin/directories/${dirId}/deactivate`);
  assert.equal(off.status, 200, off.text);
  assert.match(off.json.event_id, /^event_/);
  assert.equal((await workos.directorySync.getDirectory(dirId)).state, 'inactive');
  const again = await api('POST', `/admin/directories/${dirId}/deactivate`);
  assert.equal(again.json.event_id, null, 'no second event');
  const bad = await api('POST', `/admin/directories/${dirId}/deactivate`, { force: true });
  assert.equal(bad.status, 422);
  assert.equal((await api('POST', '/admin/directories/directory_01ARZ3NDEKTSV4RRFFQ69G5FAV/deactivate')).status, 404);

  await refused('late');
  const users = await workos.directorySync.listUsers({ directory: dirId });
  assert.deepEqual(users.data.map((u) => u.email), [`first-${TAG}@example.com`], 'nothing was written');
  await activate(true);
  await push('second');
  assert.equal((await workos.directorySync.getDirectory(dirId)).state, 'active');

  const ev = await api('GET', '/events?events=dsync.activated,dsync.deactivated&limit=100');
  assert.equal(ev.status, 200, ev.text);
  validate('/events', 'get', 200, ev.json);
  const mine = ev.json.data.filter((e) => e.data.id === dirId);
  assert.deepEqual(mine.map((e) => [e.event, e.data.state]), [
    ['dsync.activated', 'active'],
    ['dsync.deactivated', 'inactive'],
    ['dsync.activated', 'active'],
  ]);
  assert.deepEqual(mine[1].data.domains.map((d) => d.domain), [`dsync-${TAG}.example.com`]);
  const listed = await workos.events.listEvents({ events: ['dsync.activated', 'dsync.deactivated'], limit: 100 });
  assert.equal(listed.data.filter((e) => e.data.id === dirId).length, 3);
});
