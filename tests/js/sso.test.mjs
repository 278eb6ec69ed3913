// SSO end to end through the official WorkOS Node SDK (@workos-inc/node 11) with samlify as
// the SAML IdP: getAuthorizationUrl → follow the redirect to the IdP → samlify signs a
// response → POST it to our ACS → code → getProfileAndToken → getProfile. Responses to
// /sso/token and /connections are validated against @workos/openapi-spec.
// Run by tests/tests/sso_sdk.rs against a fresh `idbridge serve` whose redirect-URI allow-list
// contains IDBRIDGE_SSO_CALLBACK. samlify comes from $IDBRIDGE_PEERS_DIR/samlify
// (scripts/test-deps.d/saml.sh); without it the SAML tests are skipped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { inflateRawSync as inflate } from 'node:zlib';

import { WorkOS } from '@workos-inc/node';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

const BASE = process.env.IDBRIDGE_URL;
const API_KEY = process.env.IDBRIDGE_API_KEY;
const CLIENT_ID = process.env.IDBRIDGE_CLIENT_ID;
const PORT = Number(process.env.IDBRIDGE_PORT);
const CALLBACK = process.env.IDBRIDGE_SSO_CALLBACK;
if (!BASE || !API_KEY || !CLIENT_ID || !PORT || !CALLBACK) {
  throw new Error('IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_CLIENT_ID, IDBRIDGE_PORT, IDBRIDGE_SSO_CALLBACK must be set');
}

const REPO = resolve(process.cwd(), '..', '..');
const PEERS = process.env.IDBRIDGE_PEERS_DIR || '/var/cache/idbridge-peers';
const SAMLIFY_MODULES = join(PEERS, 'samlify', 'node_modules');
const SAMLIFY_SCRIPT = join(REPO, 'crates', 'saml', 'tests', 'peers', 'samlify_idp.js');
const HAVE_SAMLIFY = existsSync(join(SAMLIFY_MODULES, 'samlify')) && existsSync(SAMLIFY_SCRIPT);
const IDP_ENTITY = 'https://samlify-idp.example.test/metadata';
const IDP_SSO = 'https://samlify-idp.example.test/sso';

const workos = new WorkOS(API_KEY, {
  apiHostname: '127.0.0.1',
  https: false,
  port: PORT,
  maxRetries: 0,
  clientId: CLIENT_ID,
});
const TAG = randomBytes(4).toString('hex');

// --- OpenAPI validation (the same approach as organizations.test.mjs) -------------------
const require = createRequire(import.meta.url);
const spec = YAML.parse(readFileSync(require.resolve('@workos/openapi-spec/spec'), 'utf8'), {
  maxAliasCount: -1,
});
const SPEC_ID = 'https://idbridge.invalid/workos-openapi.json';
const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
addFormats(ajv);
ajv.addSchema({ $id: SPEC_ID, components: spec.components });

function validate(path, method, status, body) {
  const op = spec.paths[path]?.[method];
  assert.ok(op, `the spec has no ${method.toUpperCase()} ${path}`);
  const schema = op.responses[String(status)]?.content?.['application/json']?.schema;
  assert.ok(schema, `${method} ${path} ${status} has no JSON schema in the spec`);
  const rooted = JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', `"${SPEC_ID}#/components/`));
  const v = ajv.compile(rooted);
  assert.ok(v(body), `${method} ${path} ${status} does not match the spec:\n${JSON.stringify(v.errors, null, 2)}\n${JSON.stringify(body)}`);
}

// --- IdP material: a throwaway key pair made with openssl for this run -------------------
function idpKeys() {
  const dir = mkdtempSync(join(tmpdir(), 'idbridge-sso-js-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
      '-subj', '/CN=samlify-idp', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    return {
      key: readFileSync(join(dir, 'key.pem'), 'utf8'),
      cert: readFileSync(join(dir, 'cert.pem'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function api(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: {
      Authorization: `Bearer ${API_KEY}`,
      Accept: 'application/json',
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null, text };
}

/** Follows our authorize redirect to the (simulated) IdP and returns what the browser holds. */
async function startLogin(url) {
  const res = await fetch(url, { redirect: 'manual' });
  assert.equal(res.status, 302, `authorize answered ${res.status}: ${await res.text()}`);
  const loc = new URL(res.headers.get('location'));
  assert.equal(`${loc.origin}${loc.pathname}`, IDP_SSO);
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  assert.ok(cookie.startsWith('idbridge_sso_'), 'a login cookie');
  const xml = inflate(Buffer.from(loc.searchParams.get('SAMLRequest'), 'base64')).toString('utf8');
  const reqId = /\sID="([^"]+)"/.exec(xml)[1];
  return { reqId, relayState: loc.searchParams.get('RelayState'), cookie };
}

function samlifyResponse(keys, connId, reqId, user, attributes) {
  const cfg = {
    idp: IDP_ENTITY,
    idpKey: keys.key,
    idpCert: keys.cert,
    encrypt: false,
    sp: `${BASE}/sso/saml/${connId}`,
    acs: `${BASE}/sso/saml/acs/${connId}`,
    signAssertion: true,
    signMessage: false,
    spCert: keys.cert, // unused (no encryption), but samlify requires one
    reqId,
    user,
    attributes,
  };
  return execFileSync('node', [SAMLIFY_SCRIPT], {
    input: JSON.stringify(cfg),
    env: { ...process.env, NODE_PATH: SAMLIFY_MODULES },
    encoding: 'utf8',
  }).trim();
}

async function postAcs(connId, samlResponse, relayState, cookie) {
  const res = await fetch(`${BASE}/sso/saml/acs/${connId}`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cookie },
    body: new URLSearchParams({ SAMLResponse: samlResponse, RelayState: relayState }).toString(),
  });
  assert.equal(res.status, 302, `ACS answered ${res.status}: ${await res.text()}`);
  return new URL(res.headers.get('location'));
}

let fixture = null;
async function setup() {
  if (fixture) return fixture;
  const org = await workos.organizations.createOrganization({
    name: `SSO ${TAG}`,
    domainData: [{ domain: `sso-${TAG}.example.com`, state: 'verified' }],
  });
  const keys = idpKeys();
  const created = await api('POST', '/connections', {
    organization_id: org.id,
    name: `samlify ${TAG}`,
    connection_type: 'GenericSAML',
    saml_options: { idp_entity_id: IDP_ENTITY, idp_sso_url: IDP_SSO, idp_signing_certs: [keys.cert] },
  });
  assert.equal(created.status, 201, created.text);
  assert.ok(!created.text.includes('PRIVATE KEY'));
  fixture = { org, keys, conn: created.json };
  return fixture;
}

const ATTRS = (email) => ({
  id: [`samlify-${email}`],
  email: [email],
  firstName: ['Grace'],
  lastName: ['Hopper'],
  groups: ['Engineering', 'Admins'],
});

test('connections: created, listed and read through the SDK, shaped like the spec', async () => {
  const { org, conn } = await setup();
  const got = await api('GET', `/connections/${conn.id}`);
  assert.equal(got.status, 200);
  validate('/connections/{id}', 'get', 200, got.json);
  const list = await api('GET', `/connections?organization_id=${org.id}`);
  validate('/connections', 'get', 200, list.json);
  assert.equal(list.json.data.length, 1);
  const viaSdk = await workos.sso.getConnection(conn.id);
  assert.equal(viaSdk.id, conn.id);
  assert.equal(viaSdk.organizationId, org.id);
  const listed = await workos.sso.listConnections({ organizationId: org.id });
  assert.deepEqual(listed.data.map((c) => c.id), [conn.id]);
  assert.equal(listed.data[0].domains[0].domain, `sso-${TAG}.example.com`);
});

test('SAML login with samlify: getAuthorizationUrl → ACS → getProfileAndToken → getProfile', { skip: !HAVE_SAMLIFY && 'samlify not installed' }, async () => {
  const { org, keys, conn } = await setup();
  const url = workos.sso.getAuthorizationUrl({
    connection: conn.id,
    redirectUri: CALLBACK,
    state: 'node-state',
    clientId: CLIENT_ID,
  });
  assert.ok(url.startsWith(`${BASE}/sso/authorize?`));
  const { reqId, relayState, cookie } = await startLogin(url);
  const email = `grace-${TAG}@sso-${TAG}.example.com`;
  const saml = samlifyResponse(keys, conn.id, reqId, email, ATTRS(email));
  const back = await postAcs(conn.id, saml, relayState, cookie);
  assert.equal(`${back.origin}${back.pathname}`, CALLBACK);
  assert.equal(back.searchParams.get('error'), null, back.toString());
  assert.equal(back.searchParams.get('state'), 'node-state');
  const code = back.searchParams.get('code');
  const { profile, accessToken } = await workos.sso.getProfileAndToken({ code, clientId: CLIENT_ID });
  assert.match(profile.id, /^prof_/);
  assert.equal(profile.email, email);
  assert.equal(profile.firstName, 'Grace');
  assert.equal(profile.lastName, 'Hopper');
  assert.equal(profile.idpId, `samlify-${email}`);
  assert.equal(profile.connectionId, conn.id);
  assert.equal(profile.connectionType, 'GenericSAML');
  assert.equal(profile.organizationId, org.id);
  assert.deepEqual(profile.groups, ['Engineering', 'Admins']);
  const again = await workos.sso.getProfile({ accessToken });
  assert.equal(again.id, profile.id);
  // The code was single-use.
  await assert.rejects(workos.sso.getProfileAndToken({ code, clientId: CLIENT_ID }));
});

test('SAML login with PKCE, and /sso/token validated against the spec', { skip: !HAVE_SAMLIFY && 'samlify not installed' }, async () => {
  const { keys, conn } = await setup();
  const { url, state, codeVerifier } = await workos.sso.getAuthorizationUrlWithPKCE({
    connection: conn.id,
    redirectUri: CALLBACK,
    clientId: CLIENT_ID,
  });
  let { reqId, relayState, cookie } = await startLogin(url);
  const email = `pkce-${TAG}@sso-${TAG}.example.com`;
  let back = await postAcs(conn.id, samlifyResponse(keys, conn.id, reqId, email, ATTRS(email)), relayState, cookie);
  assert.equal(back.searchParams.get('state'), state);
  const { profile } = await workos.sso.getProfileAndToken({
    code: back.searchParams.get('code'),
    clientId: CLIENT_ID,
    codeVerifier,
  });
  assert.equal(profile.email, email);

  // A raw form-encoded exchange (what the Node SDK sends), checked against the spec.
  ({ reqId, relayState, cookie } = await startLogin(
    workos.sso.getAuthorizationUrl({ connection: conn.id, redirectUri: CALLBACK, state: 's2', clientId: CLIENT_ID }),
  ));
  back = await postAcs(conn.id, samlifyResponse(keys, conn.id, reqId, email, ATTRS(email)), relayState, cookie);
  const res = await fetch(`${BASE}/sso/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded;charset=utf-8' },
    body: new URLSearchParams({
      client_id: CLIENT_ID,
      client_secret: API_KEY,
      grant_type: 'authorization_code',
      code: back.searchParams.get('code'),
    }).toString(),
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  validate('/sso/token', 'post', 200, body);
  assert.equal(body.profile.id, profile.id, 'stable profile id per user and connection');
});

test('authorize errors come back as WorkOS error redirects; unvetted URIs get no redirect', async () => {
  const { org } = await setup();
  const url = workos.sso.getAuthorizationUrl({
    organization: 'org_01ARZ3NDEKTSV4RRFFQ69G5FAV',
    redirectUri: CALLBACK,
    state: 'err-state',
    clientId: CLIENT_ID,
  });
  const res = await fetch(url, { redirect: 'manual' });
  assert.equal(res.status, 302);
  const loc = new URL(res.headers.get('location'));
  assert.equal(loc.searchParams.get('error'), 'organization_invalid');
  assert.equal(loc.searchParams.get('state'), 'err-state');
  const evil = workos.sso.getAuthorizationUrl({
    organization: org.id,
    redirectUri: 'https://evil.example.com/cb',
    clientId: CLIENT_ID,
  });
  const bad = await fetch(evil, { redirect: 'manual' });
  assert.equal(bad.status, 400);
  assert.equal(bad.headers.get('location'), null);
});
