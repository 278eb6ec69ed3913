// Directory Sync and the Events API through the official WorkOS Node SDK (@workos-inc/node 11),
// against an idbridge fed the way an IdP feeds it: plain SCIM 2.0 requests (Okta-style) to the
// endpoint and bearer token that `POST /admin/directories` hands out. Every raw response is
// validated against WorkOS's OpenAPI description (@workos/openapi-spec).
// Run by tests/tests/directory_sync_sdk.rs against a fresh `idbridge serve`; needs
// IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_PORT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

import { WorkOS, NotFoundException, UnprocessableEntityException } from '@workos-inc/node';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

const BASE = process.env.IDBRIDGE_URL;
const API_KEY = process.env.IDBRIDGE_API_KEY;
const PORT = Number(process.env.IDBRIDGE_PORT);
if (!BASE || !API_KEY || !PORT) {
  throw new Error('IDBRIDGE_URL, IDBRIDGE_API_KEY and IDBRIDGE_PORT must be set');
}

const workos = new WorkOS(API_KEY, {
  apiHostname: '127.0.0.1',
  https: false,
  port: PORT,
  maxRetries: 0,
});

const TAG = randomBytes(4).toString('hex');
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const USER_ID = /^directory_user_[0-9A-HJKMNP-TV-Z]{26}$/;
const GROUP_ID = /^directory_group_[0-9A-HJKMNP-TV-Z]{26}$/;
const DIR_ID = /^directory_[0-9A-HJKMNP-TV-Z]{26}$/;
const UNKNOWN_USER = 'directory_user_01ARZ3NDEKTSV4RRFFQ69G5FAV';
const UNKNOWN_GROUP = 'directory_group_01ARZ3NDEKTSV4RRFFQ69G5FAV';
const UNKNOWN_DIR = 'directory_01ARZ3NDEKTSV4RRFFQ69G5FAV';
const DSYNC_EVENTS = [
  'dsync.activated',
  'dsync.deleted',
  'dsync.user.created',
  'dsync.user.updated',
  'dsync.user.deleted',
  'dsync.group.created',
  'dsync.group.updated',
  'dsync.group.deleted',
  'dsync.group.user_added',
  'dsync.group.user_removed',
];

// ---------------------------------------------------------------------------------------
// OpenAPI validation (the approach of organizations.test.mjs).

const require = createRequire(import.meta.url);
const spec = YAML.parse(readFileSync(require.resolve('@workos/openapi-spec/spec'), 'utf8'), {
  maxAliasCount: -1,
});
const SPEC_ID = 'https://idbridge.invalid/workos-openapi.json';
const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
addFormats(ajv);
ajv.addSchema({ $id: SPEC_ID, components: spec.components });
const validators = new Map();

function validatorFor(path, method, status) {
  const key = `${method} ${path} ${status}`;
  if (validators.has(key)) return validators.get(key);
  const op = spec.paths[path]?.[method];
  assert.ok(op, `the spec has no ${method.toUpperCase()} ${path}`);
  const resp = op.responses[String(status)];
  assert.ok(
    resp,
    `${method.toUpperCase()} ${path} answered ${status}, which the spec does not document ` +
      `(documented: ${Object.keys(op.responses).join(', ')})`,
  );
  const schema = resp.content?.['application/json']?.schema;
  let validate = null;
  if (schema) {
    const rooted = JSON.parse(
      JSON.stringify(schema).replaceAll('"#/components/', `"${SPEC_ID}#/components/`),
    );
    validate = ajv.compile(rooted);
  }
  validators.set(key, validate);
  return validate;
}

/** Raw API request; checks the wire conventions and, with specPath, the spec schema. */
async function raw(method, specPath, urlPath, { body, validate = true } = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${API_KEY}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE + urlPath, {
    method: method.toUpperCase(),
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const label = `${method.toUpperCase()} ${urlPath} → ${res.status} ${text.slice(0, 500)}`;
  assert.ok(res.status < 500, `server error: ${label}`);
  assert.ok(res.headers.get('x-request-id'), `no X-Request-ID: ${label}`);
  let json = null;
  if (text.length > 0) {
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/i, label);
    json = JSON.parse(text);
  }
  if (validate && specPath) {
    const v = validatorFor(specPath, method, res.status);
    if (v) {
      assert.ok(json !== null, `expected a JSON body: ${label}`);
      assert.ok(
        v(json),
        `response does not match the OpenAPI schema: ${label}\n` +
          JSON.stringify(v.errors, null, 2),
      );
    }
  }
  return { status: res.status, json, label };
}

/** A raw GET that must be 200 and match the spec. */
async function ok(specPath, urlPath) {
  const r = await raw('get', specPath, urlPath);
  assert.equal(r.status, 200, r.label);
  return r.json;
}

// ---------------------------------------------------------------------------------------
// The SCIM side: what an IdP (Okta's SCIM 2.0 client) sends.

async function createDirectory(organizationId, name) {
  const r = await raw('post', null, '/admin/directories', {
    body: { organization_id: organizationId, name, type: 'generic scim v2.0' },
  });
  assert.equal(r.status, 201, r.label);
  assert.match(r.json.directory.id, DIR_ID);
  assert.ok(r.json.scim?.endpoint && r.json.scim?.bearer_token, r.label);
  // The endpoint is built from the configured public URL; talk to this server's own address.
  const path = new URL(r.json.scim.endpoint).pathname.replace(/\/$/, '');
  return { id: r.json.directory.id, scim: BASE + path, token: r.json.scim.bearer_token };
}

async function scim(dir, method, path, body) {
  const res = await fetch(dir.scim + path, {
    method,
    headers: {
      Authorization: `Bearer ${dir.token}`,
      Accept: 'application/scim+json',
      ...(body ? { 'Content-Type': 'application/scim+json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const label = `SCIM ${method} ${path} → ${res.status} ${text.slice(0, 500)}`;
  assert.ok(res.status >= 200 && res.status < 300, label);
  return text ? JSON.parse(text) : null;
}

function scimUser(i, prefix) {
  const n = String(i).padStart(2, '0');
  const email = `${prefix}${n}-${TAG}@example.com`;
  return {
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
    userName: email,
    externalId: `${prefix}-okta-${n}`,
    name: { givenName: `Given${n}`, familyName: `Family ${prefix}` },
    displayName: `Given${n} Family`,
    emails: [{ primary: true, value: email, type: 'work' }],
    title: 'Engineer',
    active: true,
  };
}

async function addMembers(dir, groupId, userIds) {
  await scim(dir, 'PATCH', `/Groups/${groupId}`, {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
    Operations: [{ op: 'add', path: 'members', value: userIds.map((value) => ({ value })) }],
  });
}

// ---------------------------------------------------------------------------------------
// Shared state (tests in a file run in order).

let acme; // organization with two directories
let beta; // organization with one directory
let main; // the big directory: 23 users, two groups
let side; // second directory of acme (deleted at the end)
let betaDir;
const mainUsers = []; // {scimId, email, externalId}, in creation order
const sideUsers = [];
let eng; // {scimId, name}: users 0..11
let ops; // users 4..6
let deactivated; // user 22 of main: deactivated through SCIM → deleted

/** directory_user ids in creation order, looked up through the API by email. */
const idByEmail = new Map();

async function walkAfter(fetchPage, limit) {
  const pages = [];
  let after;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await fetchPage({ limit, after });
    assert.ok(page.data.length <= limit);
    pages.push(page);
    after = page.listMetadata.after;
    if (!after) break;
    assert.equal(after, page.data.at(-1).id, 'list_metadata.after is the last id');
  }
  for (const p of pages.slice(0, -1)) assert.equal(p.data.length, limit, 'only the last page is short');
  assert.equal(pages[0].listMetadata.before, null, 'nothing precedes the first page');
  return pages;
}

const newestFirst = (items) =>
  [...items].sort((a, b) => (`${a.createdAt}|${a.id}` < `${b.createdAt}|${b.id}` ? 1 : -1)).map((x) => x.id);

// ---------------------------------------------------------------------------------------

test('feed two organizations through SCIM', async () => {
  acme = await workos.organizations.createOrganization({
    name: `Acme ${TAG}`,
    domainData: [{ domain: `acme-${TAG}.example.com`, state: 'verified' }],
  });
  beta = await workos.organizations.createOrganization({
    name: `Beta ${TAG}`,
    domainData: [{ domain: `beta-${TAG}.example.com`, state: 'verified' }],
  });
  main = await createDirectory(acme.id, `Acme Okta ${TAG}`);
  side = await createDirectory(acme.id, `Acme Azure ${TAG}`);
  betaDir = await createDirectory(beta.id, `Beta OKTA ${TAG}`);

  for (let i = 0; i < 23; i++) {
    const body = scimUser(i, 'main');
    const created = await scim(main, 'POST', '/Users', body);
    assert.ok(created.id, 'SCIM create returns the id');
    mainUsers.push({ scimId: created.id, email: body.userName, externalId: body.externalId });
  }
  for (let i = 0; i < 3; i++) {
    const body = scimUser(i, 'side');
    const created = await scim(side, 'POST', '/Users', body);
    sideUsers.push({ scimId: created.id, email: body.userName, externalId: body.externalId });
  }
  await scim(betaDir, 'POST', '/Users', scimUser(0, 'beta'));

  const groupBody = (name) => ({
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'],
    displayName: name,
    externalId: `grp-${name}`,
    members: [],
  });
  eng = await scim(main, 'POST', '/Groups', groupBody(`Engineering ${TAG}`));
  ops = await scim(main, 'POST', '/Groups', groupBody(`Ops ${TAG}`));
  await addMembers(main, eng.id, mainUsers.slice(0, 12).map((u) => u.scimId));
  await addMembers(main, ops.id, mainUsers.slice(4, 7).map((u) => u.scimId));
  const sideGroup = await scim(side, 'POST', '/Groups', groupBody(`Side ${TAG}`));
  await addMembers(side, sideGroup.id, sideUsers.map((u) => u.scimId));

  // An update (Okta PUTs the whole user), a membership removal and a deactivation.
  const u3 = scimUser(3, 'main');
  await scim(main, 'PUT', `/Users/${mainUsers[3].scimId}`, { ...u3, title: 'Staff Engineer', name: { ...u3.name, familyName: 'Renamed' } });
  await scim(main, 'PATCH', `/Groups/${ops.id}`, {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
    Operations: [{ op: 'remove', path: `members[value eq "${mainUsers[6].scimId}"]` }],
  });
  deactivated = mainUsers.pop();
  await scim(main, 'PATCH', `/Users/${deactivated.scimId}`, {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
    Operations: [{ op: 'replace', value: { active: false } }],
  });
});

test('listDirectories and getDirectory', async () => {
  const all = await (await workos.directorySync.listDirectories()).autoPagination();
  assert.deepEqual(
    all.map((d) => d.id),
    [betaDir.id, side.id, main.id],
  );
  const raw0 = await ok('/directories', '/directories?limit=100');
  for (const d of raw0.data) assert.equal(d.state, 'linked', 'REST vocabulary');

  const dir = await workos.directorySync.getDirectory(main.id);
  assert.equal(dir.object, 'directory');
  assert.equal(dir.id, main.id);
  assert.equal(dir.organizationId, acme.id);
  assert.equal(dir.name, `Acme Okta ${TAG}`);
  assert.equal(dir.type, 'generic scim v2.0');
  assert.equal(dir.state, 'active', 'the SDK maps linked to active');
  assert.equal(dir.domain, `acme-${TAG}.example.com`);
  assert.ok(dir.externalKey);
  assert.match(dir.createdAt, TIMESTAMP);
  assert.match(dir.updatedAt, TIMESTAMP);
  const rawDir = await ok('/directories/{id}', `/directories/${main.id}`);
  assert.equal(rawDir.state, 'linked');
  assert.deepEqual(rawDir.metadata, { users: { active: 22, inactive: 0 }, groups: 2 });

  // Filters: organization, search (case-insensitive substring), domain.
  const byOrg = await workos.directorySync.listDirectories({ organizationId: acme.id });
  assert.deepEqual(byOrg.data.map((d) => d.id), [side.id, main.id]);
  const bySearch = await workos.directorySync.listDirectories({ search: 'okta' });
  assert.deepEqual(bySearch.data.map((d) => d.id), [betaDir.id, main.id]);
  const both = await workos.directorySync.listDirectories({ search: 'OKTA', organizationId: beta.id });
  assert.deepEqual(both.data.map((d) => d.id), [betaDir.id]);
  const byDomain = await ok('/directories', `/directories?domain=beta-${TAG}.example.com`);
  assert.deepEqual(byDomain.data.map((d) => d.id), [betaDir.id]);
  const none = await workos.directorySync.listDirectories({ organizationId: 'org_01ARZ3NDEKTSV4RRFFQ69G5FAV' });
  assert.deepEqual(none.data, []);

  // Pages of one, both directions.
  const pages = await walkAfter((o) => workos.directorySync.listDirectories(o), 1);
  assert.deepEqual(pages.map((p) => p.data[0].id), [betaDir.id, side.id, main.id]);
  const back = await workos.directorySync.listDirectories({ limit: 1, before: main.id });
  assert.deepEqual(back.data.map((d) => d.id), [side.id]);
  assert.equal(back.listMetadata.before, side.id);
  assert.equal(back.listMetadata.after, side.id);
  const asc = await workos.directorySync.listDirectories({ order: 'asc' });
  assert.deepEqual(asc.data.map((d) => d.id), [main.id, side.id, betaDir.id]);
  for (const q of ['?limit=1', `?limit=1&after=${betaDir.id}`, `?before=${main.id}&limit=1`, `?organization_id=${acme.id}&order=asc`, '?search=Azure']) {
    await ok('/directories', `/directories${q}`);
  }

  await assert.rejects(workos.directorySync.getDirectory(UNKNOWN_DIR), (e) => {
    assert.ok(e instanceof NotFoundException, `got ${e}`);
    assert.equal(e.code, 'entity_not_found');
    return true;
  });
  const nf = await raw('get', '/directories/{id}', `/directories/${UNKNOWN_DIR}`);
  assert.equal(nf.status, 404, nf.label);
});

test('listUsers by directory pages across several pages, both directions', async () => {
  const pages = await walkAfter((o) => workos.directorySync.listUsers({ directory: main.id, ...o }), 5);
  assert.equal(pages.length, 5, '22 users in pages of 5');
  const walked = pages.flatMap((p) => p.data);
  for (const u of walked) idByEmail.set(u.email, u.id);
  assert.deepEqual(
    walked.map((u) => u.email),
    [...mainUsers].reverse().map((u) => u.email),
    'newest first; the deactivated user is gone',
  );
  assert.deepEqual(walked.map((u) => u.id), newestFirst(walked));
  assert.ok(!walked.some((u) => u.email === deactivated.email));

  // `before` the third page's first item gives back the second page.
  const back = await workos.directorySync.listUsers({ directory: main.id, limit: 5, before: pages[2].data[0].id });
  assert.deepEqual(back.data.map((u) => u.id), pages[1].data.map((u) => u.id));
  // Oldest first is the reverse; autoPagination (limit=100 pages) sees everything.
  const asc = await workos.directorySync.listUsers({ directory: main.id, order: 'asc', limit: 100 });
  assert.deepEqual(asc.data.map((u) => u.id), [...walked.map((u) => u.id)].reverse());
  const auto = await (await workos.directorySync.listUsers({ directory: main.id })).autoPagination();
  assert.deepEqual(auto.map((u) => u.id), walked.map((u) => u.id));

  // Each raw page matches the spec.
  let after = null;
  for (let i = 0; i < 10; i++) {
    const page = await ok('/directory_users', `/directory_users?directory=${main.id}&limit=5${after ? `&after=${after}` : ''}`);
    after = page.list_metadata.after;
    if (!after) break;
  }
  await ok('/directory_users', `/directory_users?directory=${main.id}&limit=5&order=asc&before=${walked[3].id}`);

  // Another directory's users stay there.
  const sideList = await workos.directorySync.listUsers({ directory: side.id });
  assert.deepEqual(sideList.data.map((u) => u.email), [...sideUsers].reverse().map((u) => u.email));
});

test('listUsers by group, getUser with its groups', async () => {
  const groups = await workos.directorySync.listGroups({ directory: main.id, order: 'asc' });
  assert.deepEqual(groups.data.map((g) => g.name), [`Engineering ${TAG}`, `Ops ${TAG}`]);
  const [engGroup, opsGroup] = groups.data;
  for (const g of groups.data) {
    assert.match(g.id, GROUP_ID);
    assert.equal(g.directoryId, main.id);
    assert.equal(g.organizationId, acme.id);
    assert.match(g.createdAt, TIMESTAMP);
  }
  assert.equal(engGroup.idpId, `grp-Engineering ${TAG}`, 'idp_id is the SCIM externalId');

  const engEmails = mainUsers.slice(0, 12).map((u) => u.email);
  const pages = await walkAfter((o) => workos.directorySync.listUsers({ group: engGroup.id, ...o }), 5);
  assert.equal(pages.length, 3);
  assert.deepEqual(pages.flatMap((p) => p.data.map((u) => u.email)), [...engEmails].reverse());
  const withDir = await (await workos.directorySync.listUsers({ directory: main.id, group: engGroup.id })).autoPagination();
  assert.deepEqual(withDir.map((u) => u.email), [...engEmails].reverse());
  const opsUsers = await workos.directorySync.listUsers({ group: opsGroup.id, order: 'asc' });
  assert.deepEqual(opsUsers.data.map((u) => u.email), mainUsers.slice(4, 6).map((u) => u.email), 'user 6 was removed');
  await ok('/directory_users', `/directory_users?group=${engGroup.id}&limit=5`);

  const id5 = idByEmail.get(mainUsers[5].email);
  const u5 = await workos.directorySync.getUser(id5);
  assert.equal(u5.object, 'directory_user');
  assert.match(u5.id, USER_ID);
  assert.equal(u5.directoryId, main.id);
  assert.equal(u5.organizationId, acme.id);
  assert.equal(u5.idpId, mainUsers[5].externalId);
  assert.equal(u5.email, mainUsers[5].email);
  assert.equal(u5.firstName, 'Given05');
  assert.equal(u5.lastName, 'Family main');
  assert.equal(u5.state, 'active');
  assert.equal(typeof u5.customAttributes, 'object');
  assert.equal(typeof u5.rawAttributes, 'object');
  assert.deepEqual(u5.groups.map((g) => g.id).sort(), [engGroup.id, opsGroup.id].sort());
  const rawU5 = await ok('/directory_users/{id}', `/directory_users/${id5}`);
  assert.ok(Array.isArray(rawU5.groups) && rawU5.groups.length === 2);

  const u3 = await workos.directorySync.getUser(idByEmail.get(mainUsers[3].email));
  assert.equal(u3.lastName, 'Renamed', 'the SCIM PUT reached the API');
  const u20 = await workos.directorySync.getUser(idByEmail.get(mainUsers[20].email));
  assert.deepEqual(u20.groups, []);

  // Groups of a user.
  const g5 = await workos.directorySync.listGroups({ user: id5 });
  assert.deepEqual(g5.data.map((g) => g.id), [opsGroup.id, engGroup.id]);
  await ok('/directory_groups', `/directory_groups?user=${id5}`);
  await ok('/directory_groups', `/directory_groups?directory=${main.id}&limit=1`);
  const gpages = await walkAfter((o) => workos.directorySync.listGroups({ directory: main.id, ...o }), 1);
  assert.deepEqual(gpages.map((p) => p.data[0].id), [opsGroup.id, engGroup.id]);

  const got = await workos.directorySync.getGroup(opsGroup.id);
  assert.deepEqual(got, opsGroup);
  await ok('/directory_groups/{id}', `/directory_groups/${opsGroup.id}`);
});

test('errors: unknown ids are NotFoundException, missing filters 422', async () => {
  for (const call of [
    () => workos.directorySync.getUser(UNKNOWN_USER),
    () => workos.directorySync.getGroup(UNKNOWN_GROUP),
    () => workos.directorySync.listUsers({ directory: UNKNOWN_DIR }),
    () => workos.directorySync.listUsers({ group: UNKNOWN_GROUP }),
    () => workos.directorySync.listGroups({ user: UNKNOWN_USER }),
    () => workos.directorySync.listGroups({ directory: UNKNOWN_DIR }),
  ]) {
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof NotFoundException, `got ${e}`);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'entity_not_found');
      return true;
    });
  }
  await assert.rejects(workos.directorySync.listUsers({}), (e) => e instanceof UnprocessableEntityException && e.status === 422);
  await assert.rejects(workos.directorySync.listGroups({}), (e) => e instanceof UnprocessableEntityException);
  for (const [specPath, url, status] of [
    ['/directory_users/{id}', `/directory_users/${UNKNOWN_USER}`, 404],
    ['/directory_groups/{id}', `/directory_groups/${UNKNOWN_GROUP}`, 404],
    ['/directory_users', `/directory_users?directory=${UNKNOWN_DIR}`, 404],
    ['/directory_users', '/directory_users', 422],
    ['/directory_users', `/directory_users?directory=${main.id}&limit=101`, 422],
    ['/directory_groups', '/directory_groups', 422],
    ['/directory_groups', `/directory_groups?directory=${UNKNOWN_DIR}`, 404],
    ['/directories', '/directories?limit=0', 422],
  ]) {
    const r = await raw('get', specPath, url);
    assert.equal(r.status, status, r.label);
    assert.equal(typeof r.json.message, 'string', r.label);
  }
  // Tenancy: a group of one directory does not filter another's users.
  const sideGroups = await workos.directorySync.listGroups({ directory: side.id });
  const r = await raw('get', '/directory_users', `/directory_users?directory=${main.id}&group=${sideGroups.data[0].id}`);
  assert.equal(r.status, 404, r.label);
});

test('Events API: every filter and encoding over the SCIM scenario', async () => {
  // The SDK sends `events` comma-joined.
  const viaSdk = await workos.events.listEvents({ events: DSYNC_EVENTS, organizationId: acme.id, limit: 100 });
  const mine = viaSdk.data;
  const kinds = mine.map((e) => e.event);
  assert.equal(kinds[0], 'dsync.activated', 'activation precedes the first change');
  const count = (k) => kinds.filter((x) => x === k).length;
  assert.equal(count('dsync.activated'), 2, 'one per directory of acme');
  assert.equal(count('dsync.user.created'), 23 + 3);
  assert.equal(count('dsync.group.created'), 3);
  assert.equal(count('dsync.group.user_added'), 12 + 3 + 3);
  assert.equal(count('dsync.group.user_removed'), 1);
  assert.ok(count('dsync.user.updated') >= 1);
  assert.equal(count('dsync.user.deleted'), 1, 'deactivation deletes (secure flow)');
  const deletedUser = mine.find((e) => e.event === 'dsync.user.deleted');
  assert.equal(deletedUser.data.emails?.[0]?.value ?? deletedUser.data.email, deactivated.email);
  // Events vocabulary inside events.
  const activated = mine.find((e) => e.event === 'dsync.activated');
  assert.equal(activated.data.state, 'active');
  // Oldest first.
  const times = mine.map((e) => e.createdAt);
  assert.deepEqual(times, [...times].sort());

  const joined = DSYNC_EVENTS.join(',');
  const base = `/events?organization_id=${acme.id}&limit=100`;
  const rawJoined = await ok('/events', `${base}&events=${joined}`);
  const ids = rawJoined.data.map((e) => e.id);
  assert.deepEqual(ids, mine.map((e) => e.id));
  const repeated = await ok('/events', `${base}&${DSYNC_EVENTS.map((e) => `events=${e}`).join('&')}`);
  assert.deepEqual(repeated.data.map((e) => e.id), ids);
  const bracket = await ok('/events', `${base}&${DSYNC_EVENTS.map((e) => `events[]=${e}`).join('&')}`);
  assert.deepEqual(bracket.data.map((e) => e.id), ids);
  const two = await workos.events.listEvents({ events: ['dsync.group.created', 'dsync.user.deleted'], organizationId: acme.id });
  assert.deepEqual(two.data.map((e) => e.event).sort(), ['dsync.group.created', 'dsync.group.created', 'dsync.group.created', 'dsync.user.deleted'].sort());

  // organization_id separates tenants.
  const betaEvents = await workos.events.listEvents({ events: DSYNC_EVENTS, organizationId: beta.id });
  assert.deepEqual(betaEvents.data.map((e) => e.event), ['dsync.activated', 'dsync.user.created']);
  assert.ok(betaEvents.data.every((e) => e.data.organization_id === beta.id || e.data.organizationId === beta.id));

  // `after` walks the same sequence in pages of 7, through the SDK.
  const walked = [];
  let after;
  for (let i = 0; i < 100; i++) {
    const page = await workos.events.listEvents({ events: DSYNC_EVENTS, organizationId: acme.id, limit: 7, after });
    walked.push(...page.data.map((e) => e.id));
    after = page.listMetadata.after;
    if (!after) break;
  }
  assert.deepEqual(walked, ids);
  await ok('/events', `/events?events=${joined}&limit=7&after=${ids[6]}`);

  // Time range: [first, last] of acme's events holds them all; a range before them none.
  const first = rawJoined.data[0].created_at;
  const last = rawJoined.data.at(-1).created_at;
  const ranged = await workos.events.listEvents({ events: DSYNC_EVENTS, organizationId: acme.id, rangeStart: first, rangeEnd: last, limit: 100 });
  assert.deepEqual(ranged.data.map((e) => e.id), ids);
  await ok('/events', `/events?events=${joined}&range_start=${first}&range_end=${last}&limit=100`);
  const early = new Date(Date.parse(first) - 3_600_000).toISOString();
  const earlier = new Date(Date.parse(first) - 1_800_000).toISOString();
  const empty = await workos.events.listEvents({ events: DSYNC_EVENTS, rangeStart: early, rangeEnd: earlier });
  assert.deepEqual(empty.data, []);
});

test('deleteDirectory emits exactly one dsync.deleted and removes everything', async () => {
  const before = await workos.events.listEvents({ events: DSYNC_EVENTS, organizationId: acme.id, limit: 100 });
  const lastId = before.data.at(-1).id;
  const r = await raw('delete', null, `/directories/${side.id}`);
  assert.equal(r.status, 202, r.label);
  assert.equal(r.json, null, 'empty body');

  await assert.rejects(workos.directorySync.getDirectory(side.id), NotFoundException);
  await assert.rejects(workos.directorySync.listUsers({ directory: side.id }), NotFoundException);
  const dirs = await workos.directorySync.listDirectories({ organizationId: acme.id });
  assert.deepEqual(dirs.data.map((d) => d.id), [main.id]);

  const afterDelete = await workos.events.listEvents({ events: DSYNC_EVENTS, organizationId: acme.id, after: lastId, limit: 100 });
  assert.deepEqual(afterDelete.data.map((e) => e.event), ['dsync.deleted']);
  const deleted = afterDelete.data[0];
  assert.equal(deleted.data.id, side.id);
  assert.equal(deleted.data.state, 'active', 'pre-deletion state, events vocabulary');
  await ok('/events', `/events?events=dsync.deleted&organization_id=${acme.id}`);

  // Through the SDK too; a second delete is a 404.
  await workos.directorySync.deleteDirectory(betaDir.id);
  await assert.rejects(workos.directorySync.getDirectory(betaDir.id), NotFoundException);
  await assert.rejects(workos.directorySync.deleteDirectory(betaDir.id), NotFoundException);
  const betaEvents = await workos.events.listEvents({ events: DSYNC_EVENTS, organizationId: beta.id });
  assert.deepEqual(betaEvents.data.map((e) => e.event), ['dsync.activated', 'dsync.user.created', 'dsync.deleted']);
});
