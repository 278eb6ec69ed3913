// An LDAP directory (pulled from a real slapd) read through the official WorkOS Node SDK
// (@workos-inc/node 11). Run by tests/tests/ldap_e2e.rs after its sync scenario; needs
// IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_PORT, IDBRIDGE_LDAP_DIRECTORY_ID and
// IDBRIDGE_LDAP_UUIDS (JSON: email -> entryUUID of the users still in the tree).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { WorkOS } from '@workos-inc/node';

const API_KEY = process.env.IDBRIDGE_API_KEY;
const PORT = Number(process.env.IDBRIDGE_PORT);
const DIR = process.env.IDBRIDGE_LDAP_DIRECTORY_ID;
const UUIDS = JSON.parse(process.env.IDBRIDGE_LDAP_UUIDS ?? 'null');
if (!API_KEY || !PORT || !DIR || !UUIDS) {
  throw new Error('IDBRIDGE_API_KEY, IDBRIDGE_PORT, IDBRIDGE_LDAP_DIRECTORY_ID and IDBRIDGE_LDAP_UUIDS must be set');
}

const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0 });

test('the LDAP directory is linked and of type ldap', async () => {
  const dir = await workos.directorySync.getDirectory(DIR);
  assert.equal(dir.id, DIR);
  assert.equal(dir.state, 'active', 'the SDK maps linked to active');
  assert.equal(dir.type, 'ldap');
});

test('users carry entryUUID as idpId and their groups', async () => {
  const users = await (await workos.directorySync.listUsers({ directory: DIR })).autoPagination();
  const byEmail = new Map(users.map((u) => [u.email, u]));
  assert.deepEqual([...byEmail.keys()].sort(), Object.keys(UUIDS).sort());
  for (const [email, uuid] of Object.entries(UUIDS)) {
    assert.equal(byEmail.get(email).idpId, uuid, email);
    assert.equal(byEmail.get(email).state, 'active');
  }
  const bob = await workos.directorySync.getUser(byEmail.get('bob@example.test').id);
  assert.equal(bob.firstName, 'Robert', 'the LDAP rename reached the API');
  assert.equal(bob.lastName, 'Baker');
  assert.deepEqual(bob.groups.map((g) => g.name), ['engineering']);
});

test('groups and memberships', async () => {
  const groups = await (await workos.directorySync.listGroups({ directory: DIR })).autoPagination();
  const names = groups.map((g) => g.name).sort();
  assert.deepEqual(names, ['admins', 'engineering']);
  const admins = groups.find((g) => g.name === 'admins');
  const members = await (await workos.directorySync.listUsers({ group: admins.id })).autoPagination();
  assert.deepEqual(members.map((u) => u.email), ['alice@example.test']);
});

test('the sync events through the Events API', async () => {
  const list = await workos.events.listEvents({
    events: ['dsync.activated', 'dsync.user.updated', 'dsync.user.deleted', 'dsync.group.user_removed'],
    limit: 100,
  });
  const kinds = list.data.map((e) => e.event);
  assert.equal(kinds.filter((k) => k === 'dsync.activated').length, 1);
  const deleted = list.data.filter((e) => e.event === 'dsync.user.deleted');
  assert.deepEqual(deleted.map((e) => e.data.email ?? e.data.emails?.[0]?.value), ['dave@example.test']);
  const removed = list.data.find(
    (e) => e.event === 'dsync.group.user_removed' && e.data.group.name === 'admins',
  );
  assert.ok(removed, 'carol left admins');
  assert.equal(removed.data.user.email, 'carol@example.test');
});
