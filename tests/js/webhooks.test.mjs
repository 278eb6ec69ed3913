// Webhook endpoints, signed deliveries, the Events API and Idempotency-Key through the official
// WorkOS Node SDK (@workos-inc/node 11), with raw responses validated against WorkOS's OpenAPI
// description (@workos/openapi-spec). Deliveries go to an in-process receiver that verifies
// each one with `workos.webhooks.constructEvent`. Run by tests/tests/webhooks_e2e.rs against a
// fresh `idbridge serve` whose delivery worker runs; needs IDBRIDGE_URL, IDBRIDGE_API_KEY,
// IDBRIDGE_PORT.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { randomBytes, randomUUID } from 'node:crypto';

import { WorkOS, ConflictException, NotFoundException, UnprocessableEntityException } from '@workos-inc/node';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

import { startReceiver } from './webhooks_receiver.mjs';

const BASE = process.env.IDBRIDGE_URL;
const API_KEY = process.env.IDBRIDGE_API_KEY;
const PORT = Number(process.env.IDBRIDGE_PORT);
if (!BASE || !API_KEY || !PORT) {
  throw new Error('IDBRIDGE_URL, IDBRIDGE_API_KEY and IDBRIDGE_PORT must be set');
}

const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0 });
const TAG = randomBytes(4).toString('hex');
const WE_ID = /^we_[0-9A-HJKMNP-TV-Z]{26}$/;
const ORG_EVENTS = ['organization.created', 'organization.updated', 'organization.deleted'];

// ---------------------------------------------------------------------------------------
// OpenAPI validation (same approach as organizations.test.mjs).
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
  assert.ok(resp, `${method.toUpperCase()} ${path} answered ${status}, which the spec does not document`);
  const schema = resp.content?.['application/json']?.schema;
  let validate = null;
  if (schema) {
    const rooted = JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', `"${SPEC_ID}#/components/`));
    validate = ajv.compile(rooted);
  }
  validators.set(key, validate);
  return validate;
}

/** Raw request; checks JSON + X-Request-ID and, when `specPath` is given, the spec schema. */
async function raw(method, specPath, urlPath, { body, headers: extra = {} } = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${API_KEY}`, ...extra };
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
  const json = text.length > 0 ? JSON.parse(text) : null;
  if (specPath) {
    const v = validatorFor(specPath, method, res.status);
    if (v) {
      assert.ok(v(json), `not matching the OpenAPI schema: ${label}\n${JSON.stringify(v.errors, null, 2)}`);
    }
  }
  return { status: res.status, json, headers: res.headers, text, label };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, cond, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------
const receiver = await startReceiver();
after(() => receiver.close());
let endpoint; // as the SDK returned it
const orgIds = [];

test('create a webhook endpoint (SDK + spec)', async () => {
  endpoint = await workos.webhooks.createWebhookEndpoint({ endpointUrl: receiver.url, events: ORG_EVENTS });
  assert.match(endpoint.id, WE_ID);
  assert.equal(endpoint.object, 'webhook_endpoint');
  assert.equal(endpoint.endpointUrl, receiver.url);
  assert.equal(endpoint.status, 'enabled');
  assert.deepEqual(endpoint.events, ORG_EVENTS);
  assert.ok(endpoint.secret.length >= 20);
  receiver.state.secret = endpoint.secret;

  const list = await raw('get', '/webhook_endpoints', '/webhook_endpoints?limit=100');
  assert.equal(list.status, 200);
  const mine = list.json.data.find((e) => e.id === endpoint.id);
  assert.equal(mine.secret, endpoint.secret);
  const page = await workos.webhooks.listWebhookEndpoints({ limit: 100 });
  assert.ok(page.data.some((e) => e.id === endpoint.id));
});

test('duplicate URL, bad URL, unknown event, unknown id', async () => {
  await assert.rejects(
    workos.webhooks.createWebhookEndpoint({ endpointUrl: receiver.url, events: ORG_EVENTS }),
    (e) => e instanceof ConflictException,
  );
  const dup = await raw('post', '/webhook_endpoints', '/webhook_endpoints', {
    body: { endpoint_url: receiver.url, events: ORG_EVENTS },
  });
  assert.equal(dup.status, 409);
  assert.equal(dup.json.code, 'duplicate_endpoint');
  for (const bad of ['ftp://example.com/x', 'https://user:pw@example.com/hook', 'not a url']) {
    const r = await raw('post', '/webhook_endpoints', '/webhook_endpoints', { body: { endpoint_url: bad, events: ORG_EVENTS } });
    assert.equal(r.status, 422, r.label);
    assert.equal(r.json.code, 'invalid_url');
  }
  const unknown = await raw('post', '/webhook_endpoints', '/webhook_endpoints', {
    body: { endpoint_url: `https://example.com/${TAG}`, events: ['no.such_event'] },
  });
  assert.equal(unknown.status, 422);
  assert.equal(unknown.json.errors[0].code, 'unknown_event_type');
  await assert.rejects(
    workos.webhooks.createWebhookEndpoint({ endpointUrl: `https://example.com/${TAG}`, events: ['no.such_event'] }),
    (e) => e instanceof UnprocessableEntityException,
  );
  const missing = 'we_01ARZ3NDEKTSV4RRFFQ69G5FAV';
  const nf = await raw('patch', '/webhook_endpoints/{id}', `/webhook_endpoints/${missing}`, { body: { status: 'enabled' } });
  assert.equal(nf.status, 404);
  assert.equal(nf.json.code, 'entity_not_found');
  const del = await raw('delete', '/webhook_endpoints/{id}', `/webhook_endpoints/${missing}`);
  assert.equal(del.status, 404);
  await assert.rejects(workos.webhooks.deleteWebhookEndpoint({ id: missing }), (e) => e instanceof NotFoundException);
});

test('organization changes are delivered, signed, in log order', async () => {
  for (let i = 0; i < 3; i++) {
    const org = await workos.organizations.createOrganization({ name: `Hook ${TAG} ${i} — ünïcødé / ok` });
    orgIds.push(org.id);
  }
  await workos.organizations.updateOrganization({ organization: orgIds[0], name: `Hook ${TAG} renamed` });
  await workos.organizations.deleteOrganization(orgIds[2]);

  // The log's own order for these events (the Events API is oldest first).
  const listed = await workos.events.listEvents({ events: ORG_EVENTS, limit: 100 });
  const mine = listed.data.filter((e) => orgIds.includes(e.data?.id)).map((e) => e.id);
  assert.equal(mine.length, 5, 'three created, one updated, one deleted');

  const deliveries = await waitFor('5 deliveries', () => {
    const got = receiver.state.deliveries.filter((d) => mine.includes(d.id));
    return new Set(got.map((d) => d.id)).size >= 5 ? got : null;
  });
  for (const d of receiver.state.deliveries) {
    assert.ok(d.verified, `constructEvent rejected a delivery: ${d.error}\n${d.sigHeader}\n${d.body}`);
    assert.match(d.sigHeader, /^t=\d{13}, v1=[0-9a-f]{64}$/);
    assert.equal(d.contentType, 'application/json');
    assert.equal(d.body, JSON.stringify(JSON.parse(d.body)), 'body is exactly JSON.stringify of itself');
  }
  // First arrivals in log order (a retry may repeat an event, never reorder).
  const firstSeen = [...new Set(deliveries.map((d) => d.id))];
  assert.deepEqual(firstSeen, mine);
});

test('admin delivery state shows the cursor caught up', async () => {
  const r = await waitFor('lag 0', async () => {
    const res = await raw('get', null, `/admin/webhook_endpoints/${endpoint.id}/delivery`);
    assert.equal(res.status, 200, res.label);
    return res.json.lag === 0 ? res : null;
  });
  assert.equal(r.json.endpoint_id, endpoint.id);
  assert.ok(r.json.delivered_total >= 5);
  assert.equal(r.json.consecutive_failures, 0);
  assert.ok(r.json.last_success_at);
});

test('Events API: three encodings of the filter, organization, ranges, cursor, errors', async () => {
  const all = await raw('get', '/events', '/events?limit=100&events=organization.created,organization.updated,organization.deleted');
  assert.equal(all.status, 200);
  const ids = all.json.data.map((e) => e.id);
  const repeated = await raw('get', '/events', '/events?limit=100&events=organization.created&events=organization.updated&events=organization.deleted');
  const bracket = await raw('get', '/events', '/events?limit=100&events[]=organization.created&events[]=organization.updated&events[]=organization.deleted');
  assert.deepEqual(repeated.json.data.map((e) => e.id), ids);
  assert.deepEqual(bracket.json.data.map((e) => e.id), ids);
  const createdOnly = await raw('get', '/events', '/events?limit=100&events=organization.created');
  assert.ok(createdOnly.json.data.every((e) => e.event === 'organization.created'));
  assert.ok(createdOnly.json.data.length < ids.length);
  // Oldest first.
  const times = all.json.data.map((e) => e.created_at);
  assert.deepEqual(times, [...times].sort());

  const byOrg = await raw('get', '/events', `/events?organization_id=${orgIds[0]}&limit=100`);
  assert.deepEqual(byOrg.json.data.map((e) => e.event), ['organization.created', 'organization.updated']);
  const viaSdk = await workos.events.listEvents({ events: ORG_EVENTS, organizationId: orgIds[2] });
  assert.deepEqual(viaSdk.data.map((e) => e.event), ['organization.created', 'organization.deleted']);

  // Paging with `after`: limit 2 walks the same sequence.
  const walked = [];
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const q = `/events?limit=2&events=${ORG_EVENTS.join(',')}${cursor ? `&after=${cursor}` : ''}`;
    const page = await raw('get', '/events', q);
    walked.push(...page.json.data.map((e) => e.id));
    cursor = page.json.list_metadata.after;
    if (!cursor) break;
  }
  assert.deepEqual(walked, ids);

  // Time range: around the first of our events only.
  const first = byOrg.json.data[0];
  const t = first.created_at;
  const ranged = await raw('get', '/events', `/events?range_start=${t}&range_end=${t}&limit=100`);
  assert.ok(ranged.json.data.some((e) => e.id === first.id));
  assert.ok(ranged.json.data.every((e) => e.created_at === t));

  for (const [q, field] of [
    ['limit=0', 'limit'],
    ['limit=101', 'limit'],
    ['range_start=2026-01-01T00:00:00%2B02:00', 'range_start'],
    ['range_end=yesterday', 'range_end'],
    [`range_start=${t}&after=${ids[0]}`, 'range_start'],
    ['after=not_an_event', 'after'],
  ]) {
    const r = await raw('get', '/events', `/events?${q}`);
    assert.equal(r.status, 422, r.label);
    assert.ok(r.json.errors.some((e) => e.field === field), r.label);
  }
  const gone = await raw('get', '/events', '/events?after=event_01ARZ3NDEKTSV4RRFFQ69G5FAV');
  assert.equal(gone.status, 400, gone.label);
});

test('Idempotency-Key replays the first response and refuses a different body', async () => {
  const key = randomUUID();
  const body = { name: `Idem ${TAG}` };
  // Organization shapes are organizations.test.mjs's business; here only the replay matters.
  const a = await raw('post', null, '/organizations', { body, headers: { 'Idempotency-Key': key } });
  const b = await raw('post', null, '/organizations', { body, headers: { 'Idempotency-Key': key } });
  assert.equal(a.status, 201, a.label);
  assert.equal(b.status, 201, b.label);
  assert.equal(b.json.id, a.json.id, 'the same organization, not a second one');
  assert.equal(b.headers.get('idempotent-replayed'), 'true');
  const c = await raw('post', null, '/organizations', { body: { name: 'other' }, headers: { 'Idempotency-Key': key } });
  assert.equal(c.status, 400, c.label);
  assert.equal(c.json.code, 'idempotency_key_reused');
  const listed = await workos.organizations.listOrganizations({ limit: 100 });
  assert.equal(listed.data.filter((o) => o.name === body.name).length, 1);
  await workos.organizations.deleteOrganization(a.json.id);
});

test('update and delete the endpoint (SDK + spec)', async () => {
  const patched = await raw('patch', '/webhook_endpoints/{id}', `/webhook_endpoints/${endpoint.id}`, {
    body: { status: 'disabled', events: ['organization.created'] },
  });
  assert.equal(patched.status, 200, patched.label);
  assert.equal(patched.json.status, 'disabled');
  assert.equal(patched.json.secret, endpoint.secret, 'the secret does not change on update');
  const viaSdk = await workos.webhooks.updateWebhookEndpoint({ id: endpoint.id, status: 'enabled' });
  assert.equal(viaSdk.status, 'enabled');
  assert.deepEqual(viaSdk.events, ['organization.created']);
  const del = await raw('delete', '/webhook_endpoints/{id}', `/webhook_endpoints/${endpoint.id}`);
  assert.equal(del.status, 204);
  const again = await raw('delete', '/webhook_endpoints/{id}', `/webhook_endpoints/${endpoint.id}`);
  assert.equal(again.status, 404);
});
