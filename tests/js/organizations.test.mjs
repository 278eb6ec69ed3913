// Organizations through the official WorkOS Node SDK (@workos-inc/node 11), plus raw HTTP
// calls whose bodies are validated against WorkOS's own OpenAPI description
// (@workos/openapi-spec). Run by tests/tests/organizations_sdk.rs against a fresh
// `idbridge serve`; needs IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_PORT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

import {
  WorkOS,
  NotFoundException,
  UnauthorizedException,
  UnprocessableEntityException,
} from '@workos-inc/node';
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

// A tag unique to this run keeps names, domains and external ids from colliding with
// anything else in the store.
const TAG = randomBytes(4).toString('hex');
const ORG_ID = /^org_[0-9A-HJKMNP-TV-Z]{26}$/;
const DOMAIN_ID = /^org_domain_[0-9A-HJKMNP-TV-Z]{26}$/;
// workos-api.md §0.3: milliseconds and Z, which Python v10 parses with fromisoformat.
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UNKNOWN_ORG = 'org_01ARZ3NDEKTSV4RRFFQ69G5FAV';

// ---------------------------------------------------------------------------------------
// OpenAPI validation: the schema for a response is found the way a reader of the spec would,
// paths → operation → responses[status] → application/json schema.

const require = createRequire(import.meta.url);
const spec = YAML.parse(readFileSync(require.resolve('@workos/openapi-spec/spec'), 'utf8'), {
  maxAliasCount: -1,
});
const SPEC_ID = 'https://idbridge.invalid/workos-openapi.json';
// strict: false because OpenAPI schemas carry annotations (example, ...) unknown to JSON Schema.
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
    // Local refs point into components, which live in the document registered under SPEC_ID.
    const rooted = JSON.parse(
      JSON.stringify(schema).replaceAll('"#/components/', `"${SPEC_ID}#/components/`),
    );
    validate = ajv.compile(rooted);
  }
  validators.set(key, validate);
  return validate;
}

/** Raw request; checks the wire conventions and the spec schema of the documented status. */
async function raw(method, specPath, urlPath, { body, key = API_KEY, validate = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (key !== null) headers.Authorization = `Bearer ${key}`;
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
  if (validate && res.status !== 401) {
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
  return { status: res.status, json, headers: res.headers, label };
}

// ---------------------------------------------------------------------------------------
// Shared state: tests in a file run in order.

const created = []; // every organization this file created, as the SDK returned it
let acme; // the organization created with domains, external id and metadata

function sortKey(o) {
  return `${o.createdAt ?? o.created_at}|${o.id}`;
}
/** Newest first: created_at desc, then id desc (workos-api.md §2.3). */
function expectedDesc(orgs) {
  return [...orgs].sort((a, b) => (sortKey(a) < sortKey(b) ? 1 : -1)).map((o) => o.id);
}

function assertOrgShape(org) {
  assert.equal(org.object, 'organization');
  assert.match(org.id, ORG_ID);
  assert.match(org.createdAt, TIMESTAMP);
  assert.match(org.updatedAt, TIMESTAMP);
  assert.ok(org.updatedAt >= org.createdAt, `updatedAt ${org.updatedAt} < createdAt`);
  assert.equal(typeof org.allowProfilesOutsideOrganization, 'boolean');
  assert.ok(Array.isArray(org.domains));
  for (const d of org.domains) {
    assert.equal(d.object, 'organization_domain');
    assert.match(d.id, DOMAIN_ID);
    assert.equal(d.organizationId, org.id);
  }
}

function domainStates(org) {
  return Object.fromEntries(org.domains.map((d) => [d.domain, d.state]));
}

// ---------------------------------------------------------------------------------------

test('createOrganization stores name, domainData, externalId and metadata', async () => {
  const input = {
    name: `Acme ${TAG}`,
    domainData: [
      { domain: `acme-${TAG}.example.com`, state: 'verified' },
      { domain: `acme-pending-${TAG}.example.com`, state: 'pending' },
    ],
    externalId: `ext-acme-${TAG}`,
    metadata: { tier: 'gold', region: 'eu' },
  };
  acme = await workos.organizations.createOrganization(input);
  created.push(acme);
  assertOrgShape(acme);
  assert.equal(acme.name, input.name);
  assert.equal(acme.externalId, input.externalId);
  assert.deepEqual(acme.metadata, input.metadata);
  assert.deepEqual(domainStates(acme), {
    [`acme-${TAG}.example.com`]: 'verified',
    [`acme-pending-${TAG}.example.com`]: 'pending',
  });
  assert.equal(acme.allowProfilesOutsideOrganization, false);
  // A fresh id each time, never reused.
  const other = await workos.organizations.createOrganization({ name: `Other ${TAG}` });
  created.push(other);
  assert.notEqual(other.id, acme.id);
  assert.equal(other.externalId, null);
  assert.deepEqual(other.metadata, {});
  assert.deepEqual(other.domains, []);
});

test('getOrganization returns what was created', async () => {
  const got = await workos.organizations.getOrganization(acme.id);
  assert.deepEqual(got, acme);
});

test('getOrganizationByExternalId finds it', async () => {
  const got = await workos.organizations.getOrganizationByExternalId(`ext-acme-${TAG}`);
  assert.deepEqual(got, acme);
  await assert.rejects(
    workos.organizations.getOrganizationByExternalId(`ext-nobody-${TAG}`),
    (err) => err instanceof NotFoundException && err.status === 404,
  );
});

test('listOrganizations paginates across pages with after, before and order', async () => {
  // 103 more organizations, so a full walk needs several pages of 7 and autoPagination (100
  // a page) needs two.
  for (let i = 0; i < 103; i++) {
    const r = await raw('post', '/organizations', '/organizations', {
      body: { name: `Bulk ${TAG} ${String(i).padStart(3, '0')}` },
      validate: false, // schema checks live in their own test below
    });
    assert.equal(r.status, 201, r.label);
    created.push({ id: r.json.id, createdAt: r.json.created_at });
  }
  const mine = new Set(created.map((o) => o.id));

  // Walk newest first (the SDK's default order) with `after`.
  const pages = [];
  let after;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await workos.organizations.listOrganizations({ limit: 7, after });
    assert.ok(page.data.length <= 7, `page of ${page.data.length} > limit 7`);
    pages.push(page);
    after = page.listMetadata.after;
    if (!after) break;
    assert.equal(after, page.data.at(-1).id, 'list_metadata.after is the last id of the page');
  }
  assert.ok(pages.length >= Math.ceil(created.length / 7), `only ${pages.length} pages`);
  for (const p of pages.slice(0, -1)) assert.equal(p.data.length, 7, 'only the last page is short');
  assert.equal(pages[0].listMetadata.before, null, 'nothing precedes the first page');
  const walked = pages.flatMap((p) => p.data.map((o) => o.id));
  assert.equal(new Set(walked).size, walked.length, 'an organization appeared on two pages');
  assert.deepEqual(
    walked.filter((id) => mine.has(id)),
    expectedDesc(created),
  );
  for (const id of mine) assert.ok(walked.includes(id), `${id} missing from the walk`);

  // `before` the second page's first item gives back exactly the first page.
  const second = pages[1];
  assert.equal(second.listMetadata.before, second.data[0].id);
  const back = await workos.organizations.listOrganizations({
    limit: 7,
    before: second.data[0].id,
  });
  assert.deepEqual(
    back.data.map((o) => o.id),
    pages[0].data.map((o) => o.id),
  );

  // Oldest first is the exact reverse.
  const asc = [];
  after = undefined;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await workos.organizations.listOrganizations({ limit: 50, order: 'asc', after });
    asc.push(...page.data.map((o) => o.id));
    after = page.listMetadata.after;
    if (!after) break;
  }
  assert.deepEqual(asc, [...walked].reverse());

  // autoPagination() requests limit=100 pages until `after` is null.
  const all = await (await workos.organizations.listOrganizations()).autoPagination();
  assert.deepEqual(
    all.map((o) => o.id),
    walked,
  );
});

test('listOrganizations filters by domains', async () => {
  const beta = await workos.organizations.createOrganization({
    name: `Beta ${TAG}`,
    domainData: [{ domain: `beta-${TAG}.example.org`, state: 'verified' }],
  });
  created.push(beta);

  const one = await workos.organizations.listOrganizations({
    domains: [`acme-${TAG}.example.com`],
  });
  assert.deepEqual(
    one.data.map((o) => o.id),
    [acme.id],
  );
  assert.equal(one.listMetadata.after, null);

  // Node sends domains comma-joined; an organization matches on any of its domains.
  const both = await workos.organizations.listOrganizations({
    domains: [`acme-pending-${TAG}.example.com`, `beta-${TAG}.example.org`],
  });
  assert.deepEqual(
    both.data.map((o) => o.id),
    expectedDesc([acme, beta]),
  );

  const none = await workos.organizations.listOrganizations({
    domains: [`nobody-${TAG}.example.net`],
  });
  assert.deepEqual(none.data, []);
  assert.deepEqual(none.listMetadata, { before: null, after: null });
});

test('updateOrganization changes name, domains, metadata and external id', async () => {
  const updated = await workos.organizations.updateOrganization({
    organization: acme.id,
    name: `Acme Renamed ${TAG}`,
    domainData: [
      { domain: `acme-${TAG}.example.com`, state: 'verified' },
      { domain: `acme-new-${TAG}.example.com`, state: 'pending' },
    ],
    metadata: { tier: 'platinum', region: 'us' },
    externalId: `ext-acme2-${TAG}`,
  });
  assertOrgShape(updated);
  assert.equal(updated.id, acme.id);
  assert.equal(updated.createdAt, acme.createdAt);
  assert.ok(updated.updatedAt >= acme.updatedAt);
  assert.equal(updated.name, `Acme Renamed ${TAG}`);
  assert.deepEqual(updated.metadata, { tier: 'platinum', region: 'us' });
  assert.equal(updated.externalId, `ext-acme2-${TAG}`);
  assert.deepEqual(domainStates(updated), {
    [`acme-${TAG}.example.com`]: 'verified',
    [`acme-new-${TAG}.example.com`]: 'pending',
  });
  // A domain that stays keeps its id.
  const kept = (org) => org.domains.find((d) => d.domain === `acme-${TAG}.example.com`).id;
  assert.equal(kept(updated), kept(acme));

  // The change is stored, and the indexes follow it.
  assert.deepEqual(await workos.organizations.getOrganization(acme.id), updated);
  assert.deepEqual(
    await workos.organizations.getOrganizationByExternalId(`ext-acme2-${TAG}`),
    updated,
  );
  await assert.rejects(
    workos.organizations.getOrganizationByExternalId(`ext-acme-${TAG}`),
    NotFoundException,
  );
  const byOldDomain = await workos.organizations.listOrganizations({
    domains: [`acme-pending-${TAG}.example.com`],
  });
  assert.deepEqual(byOldDomain.data, []);
  const byNewDomain = await workos.organizations.listOrganizations({
    domains: [`acme-new-${TAG}.example.com`],
  });
  assert.deepEqual(
    byNewDomain.data.map((o) => o.id),
    [acme.id],
  );
  acme = updated;
});

test('deleteOrganization removes it; later gets are NotFoundException', async () => {
  const victim = await workos.organizations.createOrganization({
    name: `Victim ${TAG}`,
    externalId: `ext-victim-${TAG}`,
    domainData: [{ domain: `victim-${TAG}.example.com`, state: 'verified' }],
  });
  await workos.organizations.deleteOrganization(victim.id);
  await assert.rejects(workos.organizations.getOrganization(victim.id), (err) => {
    assert.ok(err instanceof NotFoundException, `got ${err}`);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'entity_not_found');
    assert.ok(err.requestID, 'NotFoundException carries the X-Request-ID');
    return true;
  });
  await assert.rejects(
    workos.organizations.getOrganizationByExternalId(`ext-victim-${TAG}`),
    NotFoundException,
  );
  const byDomain = await workos.organizations.listOrganizations({
    domains: [`victim-${TAG}.example.com`],
  });
  assert.deepEqual(byDomain.data, []);
  const all = await (await workos.organizations.listOrganizations()).autoPagination();
  assert.ok(!all.some((o) => o.id === victim.id), 'deleted organization still listed');
  // The others are untouched.
  assert.deepEqual(await workos.organizations.getOrganization(acme.id), acme);
});

test('SDK errors: unknown id, wrong API key, invalid limit', async () => {
  await assert.rejects(workos.organizations.getOrganization(UNKNOWN_ORG), (err) => {
    assert.ok(err instanceof NotFoundException, `got ${err}`);
    assert.equal(err.code, 'entity_not_found');
    assert.match(err.message, new RegExp(UNKNOWN_ORG));
    return true;
  });
  const wrong = new WorkOS('sk_test_wrong_key_0000000000', {
    apiHostname: '127.0.0.1',
    https: false,
    port: PORT,
    maxRetries: 0,
  });
  await assert.rejects(wrong.organizations.listOrganizations(), (err) => {
    assert.ok(err instanceof UnauthorizedException, `got ${err}`);
    assert.equal(err.status, 401);
    assert.ok(err.requestID, 'UnauthorizedException carries the X-Request-ID');
    return true;
  });
  await assert.rejects(wrong.organizations.createOrganization({ name: `Intruder ${TAG}` }), UnauthorizedException);
  await assert.rejects(workos.organizations.listOrganizations({ limit: 101 }), (err) => {
    assert.ok(err instanceof UnprocessableEntityException, `got ${err}`);
    assert.equal(err.status, 422);
    assert.equal(err.code, 'invalid_request_parameters');
    return true;
  });
  const all = await (await workos.organizations.listOrganizations()).autoPagination();
  assert.ok(!all.some((o) => o.name === `Intruder ${TAG}`), 'a 401 request wrote anyway');
});

test('raw responses of every endpoint match the OpenAPI schemas', async () => {
  const body = {
    name: `Raw ${TAG}`,
    domain_data: [{ domain: `raw-${TAG}.example.com`, state: 'pending' }],
    external_id: `ext-raw-${TAG}`,
    metadata: { source: 'raw' },
  };
  const c = await raw('post', '/organizations', '/organizations', { body });
  assert.equal(c.status, 201, c.label);
  const org = c.json;
  assert.equal(org.name, body.name);
  assert.equal(org.external_id, body.external_id);
  assert.deepEqual(org.metadata, body.metadata);
  assert.deepEqual(
    org.domains.map((d) => [d.domain, d.state, d.organization_id]),
    [[`raw-${TAG}.example.com`, 'pending', org.id]],
  );
  // Keys the SDKs need even though the spec allows leaving some out (workos-api.md §10.5).
  for (const k of ['allow_profiles_outside_organization', 'metadata', 'external_id', 'domains']) {
    assert.ok(k in org, `missing key ${k}`);
  }

  const g = await raw('get', '/organizations/{id}', `/organizations/${org.id}`);
  assert.equal(g.status, 200, g.label);
  assert.deepEqual(g.json, org);

  const e = await raw(
    'get',
    '/organizations/external_id/{external_id}',
    `/organizations/external_id/${encodeURIComponent(body.external_id)}`,
  );
  assert.equal(e.status, 200, e.label);
  assert.deepEqual(e.json, org);

  const l = await raw('get', '/organizations', '/organizations?limit=2&order=desc');
  assert.equal(l.status, 200, l.label);
  assert.equal(l.json.object, 'list');
  assert.equal(l.json.data.length, 2);
  assert.deepEqual(l.json.data[0], org, 'the newest organization comes first');
  assert.equal(l.json.list_metadata.after, l.json.data[1].id);

  const u = await raw('put', '/organizations/{id}', `/organizations/${org.id}`, {
    body: { name: `Raw Renamed ${TAG}`, metadata: { source: 'raw2' } },
  });
  assert.equal(u.status, 200, u.label);
  assert.equal(u.json.name, `Raw Renamed ${TAG}`);
  assert.deepEqual(u.json.metadata, { source: 'raw2' });
  assert.deepEqual(u.json.domains, org.domains, 'domains untouched when not sent');
  assert.equal(u.json.external_id, org.external_id, 'external_id untouched when not sent');

  const d = await raw('delete', '/organizations/{id}', `/organizations/${org.id}`);
  assert.ok([200, 202].includes(d.status), d.label);

  // Error bodies: the spec's schema for the status, plus the WorkOS code.
  const nf = await raw('get', '/organizations/{id}', `/organizations/${org.id}`);
  assert.equal(nf.status, 404, nf.label);
  assert.equal(nf.json.code, 'entity_not_found');
  assert.equal(typeof nf.json.message, 'string');

  const nfExt = await raw(
    'get',
    '/organizations/external_id/{external_id}',
    `/organizations/external_id/${encodeURIComponent(body.external_id)}`,
  );
  assert.equal(nfExt.status, 404, nfExt.label);
  assert.equal(nfExt.json.code, 'entity_not_found');

  const nfPut = await raw('put', '/organizations/{id}', `/organizations/${org.id}`, {
    body: { name: 'ghost' },
  });
  assert.equal(nfPut.status, 404, nfPut.label);
  assert.equal(nfPut.json.code, 'entity_not_found');

  for (const q of ['limit=0', 'limit=101', 'limit=abc']) {
    const bad = await raw('get', '/organizations', `/organizations?${q}`);
    assert.equal(bad.status, 422, bad.label);
    assert.equal(bad.json.code, 'invalid_request_parameters', bad.label);
    assert.ok(
      bad.json.errors.some((x) => x.field === 'limit' && typeof x.code === 'string'),
      bad.label,
    );
  }

  const badCreate = await raw('post', '/organizations', '/organizations', { body: { name: 5 } });
  assert.equal(badCreate.status, 422, badCreate.label);
  assert.equal(badCreate.json.code, 'invalid_request_parameters');
  assert.ok(badCreate.json.errors.some((x) => x.field === 'name'), badCreate.label);

  for (const key of [null, 'sk_test_wrong_key_0000000000']) {
    const un = await raw('get', '/organizations', '/organizations', { key });
    assert.equal(un.status, 401, un.label);
    assert.equal(typeof un.json?.message, 'string', un.label);
  }
});
