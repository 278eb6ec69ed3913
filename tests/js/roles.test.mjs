// The WorkOS roles endpoints for an organization through the official Node SDK
// (@workos-inc/node 11: authorization.listOrganizationRoles, getOrganizationRole,
// createOrganizationRole, updateOrganizationRole, deleteOrganizationRole), served from the role
// settings /admin/organizations/{id}/roles manages. Raw bodies and the organization_role.*
// events are validated against @workos/openapi-spec. Run by tests/tests/roles_sdk.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { WorkOS, NotFoundException, ConflictException, UnprocessableEntityException, BadRequestException } from '@workos-inc/node';
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

test('createOrganizationRole, updateOrganizationRole, deleteOrganizationRole, with organization_role.* events', async () => {
  const org = await workos.organizations.createOrganization({ name: `Roles write ${TAG}` });
  const set = await api('PUT', `/admin/organizations/${org.id}/roles`, { roles: [{ slug: 'member', name: 'Member', default: true }] });
  assert.equal(set.status, 200, JSON.stringify(set.json));

  const created = await workos.authorization.createOrganizationRole(org.id, { slug: 'org-billing', name: 'Billing', description: 'Pays the bills' });
  assert.equal(created.slug, 'org-billing');
  assert.equal(created.description, 'Pays the bills');
  assert.equal(created.type, 'OrganizationRole');
  const raw = await api('POST', `/authorization/organizations/${org.id}/roles`, { name: 'Finance Team' });
  assert.equal(raw.status, 201, JSON.stringify(raw.json));
  validate('/authorization/organizations/{organizationId}/roles', 'post', 201, raw.json);
  assert.match(raw.json.slug, /^org-finance-team-[0-9a-f]{6}$/);

  await assert.rejects(
    workos.authorization.createOrganizationRole(org.id, { slug: 'org-billing', name: 'Again' }),
    (e) => e instanceof ConflictException,
  );
  const dup = await api('POST', `/authorization/organizations/${org.id}/roles`, { slug: 'org-billing', name: 'Again' });
  assert.equal(dup.status, 409);
  validate('/authorization/organizations/{organizationId}/roles', 'post', 409, dup.json);
  await assert.rejects(
    workos.authorization.createOrganizationRole(org.id, { slug: 'billing', name: 'No prefix' }),
    (e) => e instanceof UnprocessableEntityException,
  );

  const updated = await workos.authorization.updateOrganizationRole(org.id, 'org-billing', { name: 'Billing admins' });
  assert.equal(updated.name, 'Billing admins');
  assert.equal(updated.description, 'Pays the bills', 'not sent: kept');
  assert.equal(updated.id, created.id);
  const rawUpdate = await api('PATCH', `/authorization/organizations/${org.id}/roles/org-billing`, { description: null });
  assert.equal(rawUpdate.status, 200);
  validate('/authorization/organizations/{organizationId}/roles/{slug}', 'patch', 200, rawUpdate.json);
  assert.equal(rawUpdate.json.description, null);
  await assert.rejects(
    workos.authorization.updateOrganizationRole(org.id, 'org-nobody', { name: 'x' }),
    (e) => e instanceof NotFoundException,
  );

  await assert.rejects(workos.authorization.deleteOrganizationRole(org.id, 'member'), (e) => e instanceof BadRequestException || e.status === 400);
  await workos.authorization.deleteOrganizationRole(org.id, 'org-billing');
  await assert.rejects(workos.authorization.getOrganizationRole(org.id, 'org-billing'), (e) => e instanceof NotFoundException);
  const gone = await api('DELETE', `/authorization/organizations/${org.id}/roles/org-billing`);
  assert.equal(gone.status, 404);
  validate('/authorization/organizations/{organizationId}/roles/{slug}', 'delete', 404, gone.json);
  const listed = await workos.authorization.listOrganizationRoles(org.id);
  assert.deepEqual(listed.data.map((r) => r.slug), ['member', raw.json.slug]);

  // The events, raw (validated against EventSchema) and through the SDK.
  const kinds = ['organization_role.created', 'organization_role.updated', 'organization_role.deleted'];
  const page = await api('GET', `/events?events=${kinds.join(',')}&organization_id=${org.id}&limit=100`);
  assert.equal(page.status, 200, JSON.stringify(page.json));
  validate('/events', 'get', 200, page.json);
  assert.deepEqual(page.json.data.map((e) => [e.event, e.data.slug]), [
    // The admin PUT that set up the organization's roles announces the role it added.
    ['organization_role.created', 'member'],
    ['organization_role.created', 'org-billing'],
    ['organization_role.created', raw.json.slug],
    ['organization_role.updated', 'org-billing'],
    ['organization_role.updated', 'org-billing'],
    ['organization_role.deleted', 'org-billing'],
  ]);
  const deleted = page.json.data[5].data;
  assert.equal(deleted.object, 'organization_role');
  assert.equal(deleted.organization_id, org.id);
  assert.equal(deleted.name, 'Billing admins');
  const viaSdk = await workos.events.listEvents({ events: kinds, organizationId: org.id, limit: 100 });
  assert.deepEqual(viaSdk.data.map((e) => e.event), page.json.data.map((e) => e.event));
});
