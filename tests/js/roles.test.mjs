// The WorkOS roles endpoints for an organization through the official Node SDK
// (@workos-inc/node 11: authorization.listOrganizationRoles, getOrganizationRole), served from
// the role settings /admin/organizations/{id}/roles manages. Raw bodies are validated against
// @workos/openapi-spec. Run by tests/tests/roles_sdk.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { WorkOS, NotFoundException } from '@workos-inc/node';
import { validate } from './openapi_check.mjs';

const BASE = process.env.IDBRIDGE_URL;
const API_KEY = process.env.IDBRIDGE_API_KEY;
const PORT = Number(process.env.IDBRIDGE_PORT);
const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0 });
const TAG = randomBytes(4).toString('hex');

async function api(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

test('listOrganizationRoles and getOrganizationRole read the admin role settings', async () => {
  const org = await workos.organizations.createOrganization({ name: `Roles ${TAG}` });
  const empty = await workos.authorization.listOrganizationRoles(org.id);
  assert.deepEqual(empty.data, []);
  const set = await api('PUT', `/admin/organizations/${org.id}/roles`, {
    roles: [
      { slug: 'member', name: 'Member', priority: 100, default: true },
      { slug: 'admin', name: 'Admin', priority: 1 },
    ],
  });
  assert.equal(set.status, 200, JSON.stringify(set.json));

  const raw = await api('GET', `/authorization/organizations/${org.id}/roles`);
  assert.equal(raw.status, 200);
  validate('/authorization/organizations/{organizationId}/roles', 'get', 200, raw.json);
  const listed = await workos.authorization.listOrganizationRoles(org.id);
  assert.deepEqual(listed.data.map((r) => [r.slug, r.name, r.type]), [
    ['admin', 'Admin', 'OrganizationRole'],
    ['member', 'Member', 'OrganizationRole'],
  ]);
  for (const r of listed.data) assert.match(r.id, /^role_[0-9A-HJKMNP-TV-Z]{26}$/);

  const one = await api('GET', `/authorization/organizations/${org.id}/roles/admin`);
  assert.equal(one.status, 200);
  validate('/authorization/organizations/{organizationId}/roles/{slug}', 'get', 200, one.json);
  const admin = await workos.authorization.getOrganizationRole(org.id, 'admin');
  assert.equal(admin.id, listed.data[0].id, 'the same id every time');
  assert.deepEqual(admin.permissions, []);

  await assert.rejects(workos.authorization.getOrganizationRole(org.id, 'nobody'), (e) => e instanceof NotFoundException);
  await assert.rejects(
    workos.authorization.listOrganizationRoles('org_01ARZ3NDEKTSV4RRFFQ69G5FAV'),
    (e) => e instanceof NotFoundException,
  );
});
