// Logout end to end: POST /sso/logout/authorize through the official Node SDK (11 has no
// sso.* method for it, so the SDK's own HTTP client, `workos.post`, calls it) and GET
// /sso/logout, with samlify as the SAML IdP in both directions: samlify verifies our signed
// LogoutRequest against our SP metadata and answers with a signed LogoutResponse that we
// accept once; samlify's IdP-initiated LogoutRequest gets our signed LogoutResponse, which
// samlify verifies. The same both ways over HTTP-POST (samlify posts to the POST
// SingleLogoutService our SP metadata publishes). Forged, unsigned, altered and replayed messages
// are refused. Raw responses are
// validated against @workos/openapi-spec. Run by tests/tests/sso_logout_sdk.rs; samlify comes
// from $IDBRIDGE_PEERS_DIR/samlify (scripts/test-deps.d/saml.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { inflateRawSync as inflate } from 'node:zlib';

import { WorkOS } from '@workos-inc/node';
import { validate } from './openapi_check.mjs';

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
const LOGIN_SCRIPT = join(REPO, 'crates', 'saml', 'tests', 'peers', 'samlify_idp.js');
const SLO_SCRIPT = join(REPO, 'crates', 'saml', 'tests', 'peers', 'samlify_slo.js');
const HAVE_SAMLIFY = existsSync(join(SAMLIFY_MODULES, 'samlify')) && existsSync(SLO_SCRIPT);
const TAG = randomBytes(4).toString('hex');
const IDP_ENTITY = `https://samlify-idp-${TAG}.example.test/metadata`;
const IDP_SSO = 'https://samlify-idp.example.test/sso';
const IDP_SLO = 'https://samlify-idp.example.test/slo';

const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0, clientId: CLIENT_ID });

function opensslKeys(cn) {
  const dir = mkdtempSync(join(tmpdir(), 'idbridge-slo-js-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
      '-subj', `/CN=${cn}`, '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function api(method, path, body, key = API_KEY) {
  const res = await fetch(BASE + path, {
    method,
    redirect: 'manual',
    headers: { Authorization: `Bearer ${key}`, Accept: 'application/json', ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: res.status, json, text, location: res.headers.get('location') };
}

function samlify(script, cfg) {
  return execFileSync('node', [script], { input: JSON.stringify(cfg), env: { ...process.env, NODE_PATH: SAMLIFY_MODULES }, encoding: 'utf8' }).trim();
}

/** The samlify IdP (key, metadata) as a config for samlify_slo.js. */
function idpConfig(keys) {
  return { idp: IDP_ENTITY, idpKey: keys.key, idpCert: keys.cert, idpSso: IDP_SSO, idpSlo: IDP_SLO };
}

/** `{query, octetString}` of a Redirect-binding URL, the way a web framework hands it to samlify. */
function redirectParts(url) {
  const raw = new URL(url).search.slice(1);
  const octetString = raw.split('&Signature=')[0];
  const query = Object.fromEntries(new URLSearchParams(raw));
  return { query, octetString };
}

let fixture = null;
async function setup() {
  if (fixture) return fixture;
  const org = await workos.organizations.createOrganization({ name: `SLO ${TAG}` });
  const keys = opensslKeys('samlify-slo-idp');
  const { metadata } = JSON.parse(samlify(SLO_SCRIPT, { mode: 'metadata', ...idpConfig(keys) }));
  assert.match(metadata, /SingleLogoutService/);
  // The IdP's own metadata carries its SingleLogoutService: single logout is on.
  const created = await api('POST', '/connections', {
    organization_id: org.id,
    name: `samlify SLO ${TAG}`,
    connection_type: 'GenericSAML',
    saml_options: { idp_metadata_xml: metadata },
  });
  assert.equal(created.status, 201, created.text);
  const conn = created.json;
  const md = await fetch(`${BASE}/sso/saml/metadata/${conn.id}`);
  const spMetadata = await md.text();
  assert.ok(spMetadata.includes(`<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="${BASE}/sso/saml/slo/${conn.id}"/>`), spMetadata);
  assert.ok(spMetadata.includes(`<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="${BASE}/sso/saml/slo/${conn.id}"/>`), spMetadata);
  assert.ok(spMetadata.includes('<md:KeyDescriptor use="signing">'));
  fixture = { org, keys, conn, spMetadata };
  return fixture;
}

async function login(keys, conn, email) {
  const url = workos.sso.getAuthorizationUrl({ connection: conn.id, redirectUri: CALLBACK, clientId: CLIENT_ID });
  const res = await fetch(url, { redirect: 'manual' });
  assert.equal(res.status, 302, await res.text());
  const loc = new URL(res.headers.get('location'));
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const xml = inflate(Buffer.from(loc.searchParams.get('SAMLRequest'), 'base64')).toString('utf8');
  const reqId = /\sID="([^"]+)"/.exec(xml)[1];
  const saml = samlify(LOGIN_SCRIPT, {
    idp: IDP_ENTITY, idpKey: keys.key, idpCert: keys.cert, encrypt: false,
    sp: `${BASE}/sso/saml/${conn.id}`, acs: `${BASE}/sso/saml/acs/${conn.id}`,
    signAssertion: true, signMessage: false, spCert: keys.cert, reqId, user: email,
    attributes: { id: [`samlify-${email}`], email: [email], firstName: ['Ada'], lastName: ['Byron'] },
  });
  const acs = await fetch(`${BASE}/sso/saml/acs/${conn.id}`, {
    method: 'POST', redirect: 'manual',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cookie },
    body: new URLSearchParams({ SAMLResponse: saml, RelayState: loc.searchParams.get('RelayState') }).toString(),
  });
  assert.equal(acs.status, 302, await acs.text());
  const back = new URL(acs.headers.get('location'));
  assert.equal(back.searchParams.get('error'), null, back.toString());
  const { profile } = await workos.sso.getProfileAndToken({ code: back.searchParams.get('code'), clientId: CLIENT_ID });
  return profile;
}

test('SP-initiated: logout/authorize → /sso/logout → samlify verifies our LogoutRequest → its LogoutResponse accepted once', { skip: !HAVE_SAMLIFY && 'samlify not installed' }, async () => {
  const { keys, conn, spMetadata } = await setup();
  const email = `ada-${TAG}@example.com`;
  const profile = await login(keys, conn, email);

  // Through the SDK's HTTP client, and raw for the spec.
  const { data } = await workos.post('/sso/logout/authorize', { profile_id: profile.id });
  validate('/sso/logout/authorize', 'post', 200, data);
  assert.equal(data.logout_url, `${BASE}/sso/logout?token=${data.logout_token}`);
  const raw = await api('POST', '/sso/logout/authorize', { profile_id: profile.id });
  assert.equal(raw.status, 200, raw.text);
  validate('/sso/logout/authorize', 'post', 200, raw.json);

  const out = await fetch(raw.json.logout_url, { redirect: 'manual' });
  assert.equal(out.status, 302, await out.text());
  const toIdp = out.headers.get('location');
  assert.ok(toIdp.startsWith(`${IDP_SLO}?SAMLRequest=`), toIdp);
  // The first token is still good (tokens are independent); used once, it is gone.
  const used = await fetch(raw.json.logout_url, { redirect: 'manual' });
  assert.equal(used.status, 404);
  const usedBody = await used.json();
  assert.equal(typeof usedBody.message, 'string');

  // samlify verifies our signature with the certificate in our SP metadata.
  const answer = JSON.parse(samlify(SLO_SCRIPT, { mode: 'answer-request', ...idpConfig(keys), spMetadata, ...redirectParts(toIdp) }));
  assert.equal(answer.nameId, email);
  assert.equal(answer.sessionIndex, '_samlify_session');
  assert.equal(answer.issuer, `${BASE}/sso/saml/${conn.id}`);
  assert.ok(answer.responseUrl.startsWith(`${BASE}/sso/saml/slo/${conn.id}?SAMLResponse=`), answer.responseUrl);

  // A tampered copy is refused; the genuine one ends the logout at the app; a replay is refused.
  const tampered = answer.responseUrl.replace('SAMLResponse=', 'SAMLResponse=A');
  assert.equal((await fetch(tampered, { redirect: 'manual' })).status, 400);
  const unsigned = answer.responseUrl.split('&SigAlg=')[0];
  assert.equal((await fetch(unsigned, { redirect: 'manual' })).status, 400);
  const done = await fetch(answer.responseUrl, { redirect: 'manual' });
  assert.equal(done.status, 302, await done.text());
  assert.equal(done.headers.get('location'), CALLBACK);
  const replay = await fetch(answer.responseUrl, { redirect: 'manual' });
  assert.equal(replay.status, 400);

  // samlify refuses a LogoutRequest we did not sign: the same one signed by another key.
  const other = opensslKeys('not-the-sp');
  const forgedSp = spMetadata.replace(/<md:KeyDescriptor use="signing">.*?<\/md:KeyDescriptor>/s,
    `<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>${other.cert.replace(/-----[^-]+-----|\s/g, '')}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>`);
  assert.throws(() => samlify(SLO_SCRIPT, { mode: 'answer-request', ...idpConfig(keys), spMetadata: forgedSp, ...redirectParts(toIdp) }));
});

test('IdP-initiated: samlify LogoutRequest → our signed LogoutResponse, verified by samlify; forged and replayed refused', { skip: !HAVE_SAMLIFY && 'samlify not installed' }, async () => {
  const { keys, conn, spMetadata } = await setup();
  const email = `idp-${TAG}@example.com`;
  await login(keys, conn, email);
  const { url } = JSON.parse(samlify(SLO_SCRIPT, { mode: 'create-request', ...idpConfig(keys), spMetadata, nameId: email, sessionIndex: '_samlify_session' }));
  assert.ok(url.startsWith(`${BASE}/sso/saml/slo/${conn.id}?SAMLRequest=`), url);
  const res = await fetch(url, { redirect: 'manual' });
  assert.equal(res.status, 302, await res.text());
  const back = res.headers.get('location');
  assert.ok(back.startsWith(`${IDP_SLO}?SAMLResponse=`), back);
  const verified = JSON.parse(samlify(SLO_SCRIPT, { mode: 'verify-response', ...idpConfig(keys), spMetadata, ...redirectParts(back) }));
  assert.equal(verified.issuer, `${BASE}/sso/saml/${conn.id}`);
  // Replayed: refused.
  assert.equal((await fetch(url, { redirect: 'manual' })).status, 400);
  // Signed by a key the connection does not trust: refused.
  const attacker = opensslKeys('attacker');
  const forged = JSON.parse(samlify(SLO_SCRIPT, { mode: 'create-request', ...idpConfig(attacker), spMetadata, nameId: email, sessionIndex: '_x' }));
  const r = await fetch(forged.url, { redirect: 'manual' });
  assert.equal(r.status, 400);
  const body = await r.json();
  assert.equal(body.error, 'invalid_logout_message');
});

/** POSTs a SAML message the way the IdP's auto-submitting form would. */
async function postSaml(endpoint, field, value) {
  return fetch(endpoint, {
    method: 'POST', redirect: 'manual',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ [field]: value }).toString(),
  });
}

/** The base64 XML of a POST-binding message, edited: the signature removed, or one text changed after signing. */
function editPosted(b64, edit) {
  return Buffer.from(edit(Buffer.from(b64, 'base64').toString('utf8')), 'utf8').toString('base64');
}
const stripSignature = (xml) => xml.replace(/<ds:Signature[\s\S]*?<\/ds:Signature>/, '');

test('HTTP-POST binding: samlify posts its signed LogoutRequest and LogoutResponse to the SP metadata\'s POST endpoint; unsigned, altered, foreign and replayed ones are refused', { skip: !HAVE_SAMLIFY && 'samlify not installed' }, async () => {
  const { keys, conn, spMetadata } = await setup();
  const endpoint = `${BASE}/sso/saml/slo/${conn.id}`;

  // IdP-initiated over POST: samlify finds our POST SingleLogoutService in the SP metadata.
  const email = `post-idp-${TAG}@example.com`;
  await login(keys, conn, email);
  const req = JSON.parse(samlify(SLO_SCRIPT, { mode: 'create-request', binding: 'post', ...idpConfig(keys), spMetadata, nameId: email, sessionIndex: '_samlify_session' }));
  assert.equal(req.endpoint, endpoint);
  assert.match(Buffer.from(req.samlRequest, 'base64').toString('utf8'), /<ds:Signature/);
  const unsigned = await postSaml(endpoint, 'SAMLRequest', editPosted(req.samlRequest, stripSignature));
  assert.equal(unsigned.status, 400, 'an unsigned POSTed LogoutRequest');
  assert.equal((await unsigned.json()).error, 'invalid_logout_message');
  const altered = await postSaml(endpoint, 'SAMLRequest', editPosted(req.samlRequest, (x) => x.replace(email, `other-${email}`)));
  assert.equal(altered.status, 400, 'a LogoutRequest changed after signing');
  const attacker = opensslKeys('post-attacker');
  const forged = JSON.parse(samlify(SLO_SCRIPT, { mode: 'create-request', binding: 'post', ...idpConfig(attacker), spMetadata, nameId: email, sessionIndex: '_x' }));
  assert.equal((await postSaml(endpoint, 'SAMLRequest', forged.samlRequest)).status, 400, 'signed by a key the connection does not trust');
  const res = await postSaml(endpoint, 'SAMLRequest', req.samlRequest);
  assert.equal(res.status, 302, await res.text());
  const back = res.headers.get('location');
  assert.ok(back.startsWith(`${IDP_SLO}?SAMLResponse=`), back);
  const verified = JSON.parse(samlify(SLO_SCRIPT, { mode: 'verify-response', ...idpConfig(keys), spMetadata, ...redirectParts(back) }));
  assert.equal(verified.issuer, `${BASE}/sso/saml/${conn.id}`);
  assert.equal((await postSaml(endpoint, 'SAMLRequest', req.samlRequest)).status, 400, 'replayed');

  // SP-initiated, answered over POST: our signed LogoutRequest out, samlify's POSTed LogoutResponse in.
  const email2 = `post-sp-${TAG}@example.com`;
  const profile = await login(keys, conn, email2);
  const { data } = await workos.post('/sso/logout/authorize', { profile_id: profile.id });
  const out = await fetch(data.logout_url, { redirect: 'manual' });
  assert.equal(out.status, 302, await out.text());
  const answer = JSON.parse(samlify(SLO_SCRIPT, { mode: 'answer-request', binding: 'post', ...idpConfig(keys), spMetadata, ...redirectParts(out.headers.get('location')) }));
  assert.equal(answer.nameId, email2);
  assert.equal(answer.endpoint, endpoint);
  assert.equal((await postSaml(endpoint, 'SAMLResponse', editPosted(answer.samlResponse, stripSignature))).status, 400, 'unsigned LogoutResponse');
  assert.equal((await postSaml(endpoint, 'SAMLResponse', editPosted(answer.samlResponse, (x) => x.replace(/IssueInstant="[^"]+"/, 'IssueInstant="2020-01-01T00:00:00.000Z"')))).status, 400, 'altered LogoutResponse');
  assert.equal((await postSaml(endpoint, 'SAMLRequest', answer.samlResponse)).status, 400, 'a response in the request field');
  const done = await postSaml(endpoint, 'SAMLResponse', answer.samlResponse);
  assert.equal(done.status, 302, await done.text());
  assert.equal(done.headers.get('location'), CALLBACK);
  assert.equal((await postSaml(endpoint, 'SAMLResponse', answer.samlResponse)).status, 400, 'replayed');

  // The logins above announced authentication.sso_succeeded, per the spec's EventSchema.
  const { org } = await setup();
  const page = await api('GET', `/events?events=authentication.sso_succeeded&organization_id=${org.id}&limit=100`);
  assert.equal(page.status, 200, page.text);
  validate('/events', 'get', 200, page.json);
  const emails = page.json.data.map((e) => e.data.email);
  assert.ok(emails.includes(email) && emails.includes(email2), JSON.stringify(emails));
  assert.ok(page.json.data.every((e) => e.data.sso.connection_id === conn.id));
});

test('logout errors: unknown profile 404, connection without SLO 400 connection_invalid, bad token 404 — raw bodies per the spec', async () => {
  const unknown = await api('POST', '/sso/logout/authorize', { profile_id: 'prof_01HZZZZZZZZZZZZZZZZZZZZZZZ' });
  assert.equal(unknown.status, 404, unknown.text);
  validate('/sso/logout/authorize', 'post', 404, unknown.json);
  await assert.rejects(workos.post('/sso/logout/authorize', { profile_id: 'prof_01HZZZZZZZZZZZZZZZZZZZZZZZ' }), (e) => e.status === 404);
  const extra = await api('POST', '/sso/logout/authorize', { profile_id: 'prof_x', return_to: 'https://x' });
  assert.equal(extra.status, 422, extra.text);
  assert.match(extra.text, /return_to/);
  const badKey = await api('POST', '/sso/logout/authorize', { profile_id: 'prof_x' }, 'sk_test_wrong');
  assert.equal(badKey.status, 401);
  const bad = await api('GET', '/sso/logout?token=nope');
  assert.equal(bad.status, 404, bad.text);
  validate('/sso/logout', 'get', 404, bad.json);

  if (!HAVE_SAMLIFY) return;
  // A connection whose IdP has no SingleLogoutService: 400 connection_invalid, per the spec.
  const keys = opensslKeys('no-slo');
  const org = await workos.organizations.createOrganization({ name: `no SLO ${TAG}` });
  const created = await api('POST', '/connections', {
    organization_id: org.id, connection_type: 'GenericSAML',
    saml_options: { idp_entity_id: IDP_ENTITY, idp_sso_url: IDP_SSO, idp_signing_certs: [keys.cert] },
  });
  assert.equal(created.status, 201, created.text);
  const md = await (await fetch(`${BASE}/sso/saml/metadata/${created.json.id}`)).text();
  assert.ok(!md.includes('SingleLogoutService'));
  const profile = await login(keys, created.json, `noslo-${TAG}@example.com`);
  const r = await api('POST', '/sso/logout/authorize', { profile_id: profile.id });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error, 'connection_invalid');
  validate('/sso/logout/authorize', 'post', 400, r.json);
});
