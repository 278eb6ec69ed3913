// Organization domains through the official WorkOS Node SDK (@workos-inc/node 11):
// createOrganizationDomain, getOrganizationDomain, verifyOrganizationDomain,
// deleteOrganizationDomain, against a real `idbridge serve` whose DNS verification asks a real
// DNS server (dnsmasq from Debian) started here on a free loopback port. Raw responses and the
// organization_domain.* events are validated against @workos/openapi-spec. Run by
// tests/tests/organization_domains_sdk.rs; needs IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_PORT.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { WorkOS, ConflictException, NotFoundException } from '@workos-inc/node';
import { validate } from './openapi_check.mjs';

const BASE = process.env.IDBRIDGE_URL;
const API_KEY = process.env.IDBRIDGE_API_KEY;
const PORT = Number(process.env.IDBRIDGE_PORT);
if (!BASE || !API_KEY || !PORT) {
  throw new Error('IDBRIDGE_URL, IDBRIDGE_API_KEY and IDBRIDGE_PORT must be set');
}
const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0 });

const TAG = randomBytes(4).toString('hex');
// Every name lives under a zone dnsmasq answers for itself (NXDOMAIN for what it lacks).
const ZONE = 'idbridge.test';
const DOMAIN_ID = /^org_domain_[0-9A-HJKMNP-TV-Z]{26}$/;

async function raw(method, specPath, urlPath, body) {
  const headers = { Authorization: `Bearer ${API_KEY}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE + urlPath, {
    method: method.toUpperCase(),
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (specPath) validate(specPath, method, res.status, json);
  return { status: res.status, json, headers: res.headers };
}

async function freePort() {
  const sock = createSocket('udp4');
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  const { port } = sock.address();
  await new Promise((r) => sock.close(r));
  return port;
}

/** dnsmasq on loopback serving exactly `records` ([name, value] TXT pairs) under ZONE. */
async function startDns(records) {
  const dir = mkdtempSync(join(tmpdir(), 'idbridge-dns-'));
  const port = await freePort();
  const args = [
    '-k',
    `--port=${port}`,
    '--listen-address=127.0.0.1',
    '--bind-interfaces',
    '--no-resolv',
    '--no-hosts',
    '--conf-file=/dev/null',
    `--pid-file=${join(dir, 'pid')}`,
    `--local=/${ZONE}/`,
    '--user=root',
    ...records.map(([name, value]) => `--txt-record=${name},${value}`),
  ];
  const proc = spawn('dnsmasq', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  // Ready when it answers: a verify of nothing would be slow, so poll the UDP port.
  for (let i = 0; i < 50; i++) {
    if (proc.exitCode !== null) throw new Error(`dnsmasq exited: ${stderr}`);
    if (await answers(port)) break;
    await sleep(100);
  }
  return {
    addr: `127.0.0.1:${port}`,
    async stop() {
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.once('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Sends a minimal DNS query for `ZONE` TXT and waits briefly for any reply. */
async function answers(port) {
  const sock = createSocket('udp4');
  const labels = ZONE.split('.').flatMap((l) => [Buffer.from([l.length]), Buffer.from(l)]);
  const q = Buffer.concat([
    Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...labels,
    Buffer.from([0, 0, 16, 0, 1]),
  ]);
  return await new Promise((resolve) => {
    const timer = setTimeout(() => {
      sock.close();
      resolve(false);
    }, 200);
    sock.on('message', () => {
      clearTimeout(timer);
      sock.close();
      resolve(true);
    });
    sock.on('error', () => {
      clearTimeout(timer);
      sock.close();
      resolve(false);
    });
    sock.send(q, port, '127.0.0.1');
  });
}

const dnsServers = [];
after(async () => {
  for (const d of dnsServers) await d.stop();
});

async function setResolver(addr, extra = {}) {
  const r = await raw('put', null, '/admin/dns', { resolver: addr, timeout_ms: 1000, ...extra });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.resolver, addr);
}

function assertDomainShape(d, org, domain) {
  assert.equal(d.object, 'organization_domain');
  assert.match(d.id, DOMAIN_ID);
  assert.equal(d.organizationId, org.id);
  assert.equal(d.domain, domain);
  assert.equal(d.verificationStrategy, 'dns');
  assert.match(d.verificationToken, /^[A-Za-z0-9]{25}$/);
}

let org;
let other;
const dom = {};

test('createOrganizationDomain: pending, dns strategy, a token; the organization shows it', async () => {
  org = await workos.organizations.createOrganization({ name: `Domains ${TAG}` });
  other = await workos.organizations.createOrganization({ name: `Other ${TAG}` });
  for (const name of ['good', 'acme', 'wrong', 'absent', 'shared', 'expire']) {
    const domain = `${name}-${TAG}.${ZONE}`;
    const d = await workos.organizationDomains.createOrganizationDomain({ organizationId: org.id, domain });
    assertDomainShape(d, org, domain);
    assert.equal(d.state, 'pending');
    dom[name] = d;
  }
  // Raw: 201 and the spec's schema.
  const r = await raw('post', '/organization_domains', '/organization_domains', {
    organization_id: other.id,
    domain: `shared-${TAG}.${ZONE}`,
  });
  assert.equal(r.status, 201);
  dom.sharedOther = r.json;
  const got = await workos.organizations.getOrganization(org.id);
  assert.deepEqual(
    got.domains.map((d) => [d.id, d.state, d.verificationStrategy]).sort(),
    Object.values(dom)
      .filter((d) => (d.organizationId ?? d.organization_id) === org.id)
      .map((d) => [d.id, 'pending', 'dns'])
      .sort(),
  );
});

test('getOrganizationDomain returns it; unknown ids are 404', async () => {
  const got = await workos.organizationDomains.getOrganizationDomain(dom.good.id);
  assert.deepEqual(got, dom.good);
  const r = await raw('get', '/organization_domains/{id}', `/organization_domains/${dom.good.id}`);
  assert.equal(r.status, 200);
  await assert.rejects(
    workos.organizationDomains.getOrganizationDomain('org_domain_01ARZ3NDEKTSV4RRFFQ69G5FAV'),
    (e) => e instanceof NotFoundException,
  );
});

test('a duplicate domain in the same organization is 409 domain_already_exists', async () => {
  await assert.rejects(
    workos.organizationDomains.createOrganizationDomain({ organizationId: org.id, domain: dom.good.domain }),
    (e) => e instanceof ConflictException && e.status === 409,
  );
  const r = await raw('post', '/organization_domains', '/organization_domains', {
    organization_id: org.id,
    domain: dom.good.domain.toUpperCase(),
  });
  assert.equal(r.status, 409);
  assert.equal(r.json.code, 'domain_already_exists');
  // Unknown fields and bad domains are 422 naming the field; nothing is created.
  const bad = await raw('post', null, '/organization_domains', { organization_id: org.id, domain: 'x', extra: 1 });
  assert.equal(bad.status, 422);
  assert.deepEqual(bad.json.errors.map((e) => e.field).sort(), ['domain', 'extra']);
});

test('a dead resolver: 503 dns_lookup_failed, nothing changed', async () => {
  const port = await freePort(); // nothing listens there
  await setResolver(`127.0.0.1:${port}`, { timeout_ms: 300 });
  const r = await raw('post', null, `/organization_domains/${dom.good.id}/verify`);
  assert.equal(r.status, 503, JSON.stringify(r.json));
  assert.equal(r.json.code, 'dns_lookup_failed');
  assert.match(r.json.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
  assert.ok(r.headers.get('retry-after'));
  await assert.rejects(workos.organizationDomains.verifyOrganizationDomain(dom.good.id), (e) => e.status === 503);
  const after = await workos.organizationDomains.getOrganizationDomain(dom.good.id);
  assert.deepEqual(after, dom.good);
});

test('a silent resolver (packets dropped) times out with the same clear error', async () => {
  const sock = createSocket('udp4');
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  try {
    await setResolver(`127.0.0.1:${sock.address().port}`, { timeout_ms: 300 });
    const t0 = Date.now();
    const r = await raw('post', null, `/organization_domains/${dom.good.id}/verify`);
    assert.equal(r.status, 503, JSON.stringify(r.json));
    assert.equal(r.json.code, 'dns_lookup_failed');
    assert.ok(Date.now() - t0 < 10_000, 'bounded by the timeout');
  } finally {
    sock.close();
  }
  assert.deepEqual(await workos.organizationDomains.getOrganizationDomain(dom.good.id), dom.good);
});

let dns;
test('verifyOrganizationDomain against dnsmasq: verified, failed on a wrong token, pending while absent', async () => {
  dns = await startDns([
    [dom.good.domain, `verification_token=${dom.good.verificationToken}`],
    [`_acme-challenge.${dom.acme.domain}`, `verification_token=${dom.acme.verificationToken}`],
    [dom.wrong.domain, 'verification_token=not-the-token'],
    [dom.absent.domain, 'v=spf1 -all'],
    [dom.shared.domain, `verification_token=${dom.shared.verificationToken}`],
  ]);
  dnsServers.push(dns);
  await setResolver(dns.addr);

  const good = await workos.organizationDomains.verifyOrganizationDomain(dom.good.id);
  assert.equal(good.state, 'verified');
  const acme = await workos.organizationDomains.verifyOrganizationDomain(dom.acme.id);
  assert.equal(acme.state, 'verified', 'the _acme-challenge record counts too');
  const wrong = await raw('post', '/organization_domains/{id}/verify', `/organization_domains/${dom.wrong.id}/verify`);
  assert.equal(wrong.status, 201);
  assert.equal(wrong.json.state, 'failed');
  const absent = await workos.organizationDomains.verifyOrganizationDomain(dom.absent.id);
  assert.equal(absent.state, 'pending');
  assert.deepEqual(await workos.organizationDomains.getOrganizationDomain(dom.absent.id), absent);
});

test('verifying a verified domain is 400 domain_already_verified', async () => {
  const r = await raw('post', '/organization_domains/{id}/verify', `/organization_domains/${dom.good.id}/verify`);
  assert.equal(r.status, 400);
  assert.equal(r.json.code, 'domain_already_verified');
  await assert.rejects(workos.organizationDomains.verifyOrganizationDomain(dom.good.id), (e) => e.status === 400);
});

test('verifying a domain another organization holds fails the other one', async () => {
  const shared = await workos.organizationDomains.verifyOrganizationDomain(dom.shared.id);
  assert.equal(shared.state, 'verified');
  const theirs = await workos.organizationDomains.getOrganizationDomain(dom.sharedOther.id);
  assert.equal(theirs.state, 'failed');
  // And a verified domain cannot be added again elsewhere.
  await assert.rejects(
    workos.organizationDomains.createOrganizationDomain({ organizationId: other.id, domain: dom.good.domain }),
    (e) => e instanceof ConflictException,
  );
});

test('the background re-check fails a domain whose verification period ran out', async () => {
  await setResolver(dns.addr, { recheck_interval_secs: 1, verification_period_secs: 1 });
  let d;
  for (let i = 0; i < 100; i++) {
    d = await workos.organizationDomains.getOrganizationDomain(dom.expire.id);
    if (d.state !== 'pending') break;
    await sleep(200);
  }
  assert.equal(d.state, 'failed');
  // Back to a long period so nothing else expires.
  await setResolver(dns.addr, { recheck_interval_secs: 300, verification_period_secs: 604800 });
});

test('deleteOrganizationDomain removes it from the organization', async () => {
  await workos.organizationDomains.deleteOrganizationDomain(dom.absent.id);
  await assert.rejects(
    workos.organizationDomains.getOrganizationDomain(dom.absent.id),
    (e) => e instanceof NotFoundException,
  );
  const got = await workos.organizations.getOrganization(org.id);
  assert.ok(!got.domains.some((d) => d.id === dom.absent.id));
  const r = await raw('delete', '/organization_domains/{id}', `/organization_domains/${dom.absent.id}`);
  assert.equal(r.status, 404);
});

test('organization_domain.* events were emitted and match the OpenAPI EventSchema', async () => {
  const names = [
    'organization_domain.created',
    'organization_domain.updated',
    'organization_domain.verified',
    'organization_domain.verification_failed',
    'organization_domain.deleted',
  ];
  const r = await raw('get', '/events', `/events?events=${names.join(',')}&limit=100`);
  assert.equal(r.status, 200);
  const mine = r.json.data.filter((e) => {
    const d = e.data.organization_domain ?? e.data;
    return d.domain?.includes(TAG);
  });
  const seen = (name) => mine.filter((e) => e.event === name);
  assert.equal(seen('organization_domain.created').length, 7);
  assert.deepEqual(
    seen('organization_domain.verified').map((e) => e.data.id).sort(),
    [dom.good.id, dom.acme.id, dom.shared.id].sort(),
  );
  assert.deepEqual(
    seen('organization_domain.verification_failed').map((e) => [e.data.organization_domain.id, e.data.reason]).sort(),
    [
      [dom.sharedOther.id, 'domain_verified_by_other_organization'],
      [dom.expire.id, 'domain_verification_period_expired'],
      // Still pending when the period ran out, so it expired too (then was deleted).
      [dom.absent.id, 'domain_verification_period_expired'],
    ].sort(),
  );
  assert.deepEqual(seen('organization_domain.updated').map((e) => [e.data.id, e.data.state]), [[dom.wrong.id, 'failed']]);
  assert.deepEqual(seen('organization_domain.deleted').map((e) => e.data.id), [dom.absent.id]);
  // The SDK reads them too.
  const listed = await workos.events.listEvents({ events: names, limit: 100 });
  assert.ok(listed.data.filter((e) => JSON.stringify(e.data).includes(TAG)).length >= mine.length);
});
