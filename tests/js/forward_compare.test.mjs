// SCIM push end to end, read the way an application reads it: the official WorkOS Node SDK
// (@workos-inc/node 11) lists the users (with their groups) and the groups of the SOURCE
// idbridge's directory and of the TARGET idbridge's directory the forwarder pushed into, and
// they must be the same, field by field.
// Run by tests/tests/forward_e2e.rs; needs FWD_SOURCE_URL, FWD_SOURCE_KEY, FWD_SOURCE_DIRECTORY,
// FWD_TARGET_URL, FWD_TARGET_KEY, FWD_TARGET_DIRECTORY and FWD_EXPECT_USERS.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { WorkOS } from '@workos-inc/node';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set`);
  return v;
};

function client(url, key) {
  const u = new URL(url);
  return new WorkOS(key, { apiHostname: u.hostname, https: false, port: Number(u.port), maxRetries: 0 });
}

// Not compared, and why:
//  - id, directoryId, organizationId: each idbridge mints its own ids (objects are matched by
//    idpId, which the forwarder carries as SCIM externalId);
//  - createdAt, updatedAt: each side's own write times;
//  - rawAttributes: deprecated (WorkOS serves {}); each side keeps its own input there (the
//    source its IdP's record, the target the SCIM resource the forwarder sent).
const EXCLUDED = ['id', 'directoryId', 'organizationId', 'createdAt', 'updatedAt', 'rawAttributes'];

function strip(o) {
  const out = { ...o };
  for (const k of EXCLUDED) delete out[k];
  return out;
}

async function snapshot(workos, directory) {
  const users = await (await workos.directorySync.listUsers({ directory, limit: 100 })).autoPagination();
  const groups = await (await workos.directorySync.listGroups({ directory, limit: 100 })).autoPagination();
  const byIdp = (a, b) => (a.idpId < b.idpId ? -1 : a.idpId > b.idpId ? 1 : 0);
  return {
    users: users
      .map((u) => ({ ...strip(u), groups: (u.groups ?? []).map(strip).sort(byIdp) }))
      .sort(byIdp),
    groups: groups.map(strip).sort(byIdp),
  };
}

test('the target shows the same users, groups, memberships and attributes as the source', async () => {
  const source = await snapshot(client(env('FWD_SOURCE_URL'), env('FWD_SOURCE_KEY')), env('FWD_SOURCE_DIRECTORY'));
  const target = await snapshot(client(env('FWD_TARGET_URL'), env('FWD_TARGET_KEY')), env('FWD_TARGET_DIRECTORY'));
  assert.equal(source.users.length, Number(env('FWD_EXPECT_USERS')));
  assert.ok(source.groups.length > 0, 'no groups to compare');
  for (let i = 0; i < source.users.length; i++) {
    assert.deepStrictEqual(target.users[i], source.users[i], `user ${source.users[i].idpId}`);
  }
  assert.deepStrictEqual(target.users.length, source.users.length);
  assert.deepStrictEqual(target.groups, source.groups);
  // Something real was compared: attributes and memberships.
  assert.ok(source.users.some((u) => u.groups.length > 0), 'no memberships compared');
  assert.ok(source.users.every((u) => Object.keys(u.customAttributes ?? {}).length > 0), 'no custom attributes');
});
